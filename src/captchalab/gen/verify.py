"""`captchalab verify`: read every record and check it against the manifest."""

from __future__ import annotations

import hashlib

from captchalab.core import storage
from captchalab.core.charset import Charset
from captchalab.gen import shards as sh
from captchalab.gen.tfrecord import CorruptRecord, read_records


class _HashingReader:
    """File wrapper that hashes what is read, so one pass both parses and checksums."""

    def __init__(self, f):
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def read(self, k):
        b = self.f.read(k)
        self.sha.update(b)
        self.n += len(b)
        return b


def verify_dataset(data_dir: str, echo=None) -> list[str]:
    """Return a list of problems (empty when the dataset is intact)."""
    m = sh.read_manifest(data_dir)
    charset = Charset.from_json(m["charset"])
    problems: list[str] = []
    if not m.get("complete", True):
        problems.append(f"dataset is incomplete (an interrupted run); finish it with "
                        f"'captchalab gen --out {data_dir} --resume'")
    listed = set()
    for split, info in m["splits"].items():
        shards = info["shards"]
        total = 0
        n_ok = 0
        start = 0
        for entry in shards:
            listed.add(entry["file"])
            path = storage.join(data_dir, entry["file"])
            found = _check_shard(path, entry, split, start, charset, m, problems)
            total += found
            start += entry["count"]
            n_ok += found == entry["count"]
        if total != info["count"]:
            problems.append(f"{split}: {total} readable records, manifest says {info['count']}")
        if echo:
            echo(f"{split}: {len(shards)} shards, {total} records read")
    for name in sorted(storage.listdir(data_dir)):
        if sh.SHARD_RE.match(name) and name not in listed:
            problems.append(f"{storage.join(data_dir, name)}: shard file not in the manifest")
    return problems


def _check_shard(path, entry, split, start, charset, m, problems) -> int:
    if not storage.exists(path):
        problems.append(f"{path}: missing")
        return 0
    size = storage.size(path)
    count = 0
    with storage.open_file(path, "rb") as f:
        reader = _HashingReader(f)
        try:
            for data in read_records(reader):
                try:
                    rec = sh.decode_record(data)
                except Exception as e:  # noqa: BLE001 - any undecodable payload is corruption
                    problems.append(f"{path}: record {count}: not a captchalab record ({e})")
                    return count
                bad = _check_record(rec, split, start + count, charset, m)
                if bad:
                    problems.append(f"{path}: record {count}: {bad}")
                count += 1
        except CorruptRecord as e:
            problems.append(f"{path}: {e} (file is {size} bytes, manifest says {entry['bytes']})")
            return count
    if count != entry["count"]:
        problems.append(f"{path}: {count} records, manifest says {entry['count']}")
    if size != entry["bytes"]:
        problems.append(f"{path}: {size} bytes, manifest says {entry['bytes']}")
    elif reader.sha.hexdigest() != entry["sha256"]:
        problems.append(f"{path}: sha256 differs from the manifest")
    return count


def _check_record(rec, split, index, charset, m) -> str | None:
    if rec["sample/split"] != split or rec["sample/index"] != index:
        return (f"holds {rec['sample/split']}[{rec['sample/index']}], expected {split}[{index}] "
                "(shards swapped or renamed?)")
    text = rec["label/text"]
    if charset.missing(text) or charset.encode(text) != rec["label/ids"]:
        return f"label {text!r} does not match its ids {rec['label/ids']} under the charset"
    lo, hi = m["length"]
    if not lo <= len(text) <= hi:
        return f"label {text!r} has length {len(text)}, outside {lo}-{hi}"
    if m.get("kind") == "audio":
        return _check_audio(rec, m)
    if (rec["image/width"], rec["image/height"]) != (m["image"]["width"], m["image"]["height"]):
        return f"image is {rec['image/width']}x{rec['image/height']}, manifest says otherwise"
    if not rec["image/png"].startswith(b"\x89PNG\r\n\x1a\n"):
        return "image is not a PNG"
    return None


def _check_audio(rec, m) -> str | None:
    from captchalab.gen.audio import WAV_HEADER_BYTES, parse_wav

    if "audio/wav" not in rec:
        return "record holds no audio/wav, though the manifest says kind audio"
    try:
        pcm = parse_wav(rec["audio/wav"], "record")
    except Exception as e:  # noqa: BLE001 - any header problem is damage
        return f"audio is not a readable WAV ({e})"
    if rec["audio/rate"] != m["audio"]["rate"]:
        return f"audio at {rec['audio/rate']} Hz, manifest says {m['audio']['rate']}"
    if len(pcm) != rec["audio/samples"] or len(rec["audio/wav"]) < WAV_HEADER_BYTES + len(pcm):
        return f"audio holds {len(pcm)} samples, the record says {rec['audio/samples']}"
    return None
