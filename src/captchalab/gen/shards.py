"""Shard files and the dataset manifest: names, atomic writes, record schema, reading back."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
from typing import TypedDict

from captchalab.core import storage
from captchalab.core.errors import DataError, UsageError
from captchalab.gen.tfrecord import (
    CorruptRecord,
    decode_example,
    encode_example,
    frame,
    read_records,
)

MANIFEST = "dataset_info.json"
TFDS_DIR = "tfds"  # TFDS's own metadata for the same shards (see tfds_metadata)
FORMAT = "captchalab-dataset"
FORMAT_VERSION = 1
SHARD_RE = re.compile(r"^captcha-(?P<split>[a-z]+)\.tfrecord-(?P<i>\d{5})-of-(?P<n>\d{5})$")
TMP_PREFIX = ".tmp-"
_umask = os.umask(0)
os.umask(_umask)
_FILE_MODE = 0o666 & ~_umask  # mkstemp creates 0600; finished files get the usual mode

# Every record has these; generated records add style/* (see docs/dataset-format.md).
CORE_FEATURES = {
    "image/png": "bytes: PNG, RGB",
    "image/height": "int64",
    "image/width": "int64",
    "label/text": "bytes: UTF-8 label",
    "label/ids": "int64 list: charset ids 1..K, one per character (0 is never stored)",
    "label/length": "int64",
    "sample/split": "bytes: train, val or test",
    "sample/index": "int64: index within the split",
    "sample/seed": "int64: dataset seed (-1 for imported images)",
}
STYLE_FEATURES = {
    "style/font": "bytes: font name (see manifest fonts)",
    "style/font_sizes": "int64 list: sizes the library picked from, px",
    "style/rotate": "float: max rotation drawn, degrees",
    "style/warp_dx": "float", "style/warp_dy": "float",
    "style/offset_dx": "int64: px", "style/offset_dy": "int64: px",
    "style/space_prob": "float", "style/word_offset": "float",
    "style/noise_dots": "int64", "style/noise_dot_width": "int64: px",
    "style/noise_curves": "int64",
    "style/bg": "int64 list: RGB", "style/fg": "int64 list: RGB", "style/fg_alpha": "int64",
}
SCENE_FEATURES = {  # styles with a scene (style.SCENE_KNOBS) add these
    **{f"style/{k}": "float" for k in ("text_scale", "text_x", "text_y", "tilt", "shear", "wave",
                                        "wave_period", "gradient", "bg_gradient", "texture",
                                        "speckle", "blur", "downscale", "noise",
                                        "glyph_colour", "spacing", "clutter_colour", "aspect",
                                        "effects", "overflow", "hollow", "line_bend")},
    **{f"style/{k}": "int64" for k in ("min_contrast", "lines", "line_width", "grid", "jpeg",
                                        "stroke", "shapes", "scribble", "rings",
                                        "typeset")},
    "style/fg2": "int64 list: RGB", "style/bg2": "int64 list: RGB",
}
IMPORT_FEATURES = {"source/file": "bytes: original file name"}


class ShardEntry(TypedDict):
    file: str
    count: int
    bytes: int
    sha256: str


class SplitEntry(TypedDict, total=False):
    count: int
    label_pool: int  # generated: distinct labels this split may draw
    label_pool_exact: bool
    shards: list[ShardEntry]


class Manifest(TypedDict, total=False):
    """dataset_info.json as written and read (docs/dataset-format.md). A JSON document typed
    rather than a class, so it reads and writes byte for byte as stored; generated datasets add
    the Recipe's keys, imported ones `origin`."""

    format: str
    format_version: int
    complete: bool
    source: str  # "generated" | "imported"
    charset: dict  # Charset.to_json()
    length: list[int]  # [min, max]
    size: list[int]  # [width, height]
    style_name: str | None
    style: dict | None
    fonts: list[dict]
    seed: int | None
    shard_size: int
    counts: dict[str, int]
    image: dict  # width, height, channels, encoding
    seed_rule: str
    split_rule: str
    splits: dict[str, SplitEntry]
    features: dict[str, str]
    versions: dict[str, str]
    command: str
    created: str
    origin: dict


def shard_name(split: str, i: int, n: int) -> str:
    return f"captcha-{split}.tfrecord-{i:05d}-of-{n:05d}"


def encode_record(*, png: bytes, width: int, height: int, text: str, ids, split: str,
                  index: int, seed: int, extra: dict | None = None) -> bytes:
    feats = {
        "image/png": png, "image/height": height, "image/width": width,
        "label/text": text, "label/ids": list(ids), "label/length": len(text),
        "sample/split": split, "sample/index": index, "sample/seed": seed,
    }
    if extra:
        feats.update(extra)
    return encode_example(feats)


AUDIO_CORE_FEATURES = {
    "audio/wav": "bytes: WAV, 8-bit unsigned PCM, mono, 8 kHz, 44-byte header (as the captcha "
                 "library writes it)",
    "audio/samples": "int64: audio samples (frames) in the WAV",
    "audio/rate": "int64: sample rate, Hz",
    **{k: v for k, v in CORE_FEATURES.items() if not k.startswith("image/")},
}
AUDIO_STYLE_FEATURES = {
    "style/speed": "float list: speed factor of each character",
    "style/level": "float list: loudness factor of each character",
    "style/gap": "float list: babble before each character, s",
    "style/floor": "int64: noise floor, 8-bit steps",
    "style/reverb": "float: RT60 of the room, s (0: dry)",
    "style/bandpass": "int64: 1 if through the telephone band-pass",
    "style/snr": "float: SNR of the added noise, dB (100: none)",
    "style/pink": "int64: 1 if the added noise is pink",
    "style/pitch": "float: the speaker's pitch shift, semitones (0: as recorded)",
    "style/formant": "float: the speaker's formant scale (1: as recorded)",
    "style/tempo": "float: the speaker's speaking-time factor (1: as recorded)",
    "style/timbre": "float: the speaker's equaliser, peak-to-peak dB (0: none)",
    "style/brightness": "float: the speaker's spectral slope, dB from 0 Hz to 4 kHz (0: none)",
}


def encode_audio_record(*, text: str, ids, split: str, index: int, seed: int,
                        extra: dict) -> bytes:
    """An audio record: extra holds audio/wav, audio/samples, audio/rate and style/*."""
    return encode_example({"label/text": text, "label/ids": list(ids), "label/length": len(text),
                           "sample/split": split, "sample/index": index, "sample/seed": seed,
                           **extra})


LIST_FEATURES = ("label/ids", "style/font_sizes", "style/bg", "style/fg", "style/speed",
                 "style/level", "style/gap")
BYTES_FEATURES = ("image/png", "audio/wav")


def decode_record(data: bytes) -> dict:
    """Serialized record -> plain dict (scalars unwrapped, bytes labels decoded to str)."""
    raw = decode_example(data)
    out = {}
    for k, v in raw.items():
        if k in LIST_FEATURES:
            out[k] = list(v)
        elif len(v) == 1:
            out[k] = v[0].decode() if isinstance(v[0], bytes) and k not in BYTES_FEATURES else v[0]
        else:
            out[k] = v
    core = AUDIO_CORE_FEATURES if "audio/wav" in out else CORE_FEATURES
    missing = [k for k in core if k not in out]
    if missing:
        raise ValueError(f"missing features {missing}")
    return out


class ShardWriter:
    """Writes one shard under a temporary name; `commit()` renames it into place.

    A crash leaves only a `.tmp-*` file, which `--resume` deletes; a final-named shard is
    always complete. `out_dir` may be a local folder or an fsspec URL (see captchalab.core.storage).
    """

    def __init__(self, out_dir: str, name: str):
        self.name = name
        self.path = storage.join(out_dir, name)
        if storage.is_url(out_dir):
            self.tmp = storage.join(out_dir, f"{TMP_PREFIX}{name}.{uuid.uuid4().hex[:8]}")
            self._f = storage.open_file(self.tmp, "wb")
        else:
            fd, self.tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{name}.", dir=out_dir)
            self._f = os.fdopen(fd, "wb")
        self._sha = hashlib.sha256()
        self.count = 0
        self.bytes = 0

    def write(self, record: bytes) -> None:
        data = frame(record)
        self._f.write(data)
        self._sha.update(data)
        self.count += 1
        self.bytes += len(data)

    def commit(self) -> dict:
        self._f.flush()
        if not storage.is_url(self.path):
            os.fsync(self._f.fileno())
            os.chmod(self.tmp, _FILE_MODE)
        self._f.close()
        storage.move(self.tmp, self.path)
        return {"file": self.name, "count": self.count, "bytes": self.bytes,
                "sha256": self._sha.hexdigest()}

    def abort(self) -> None:
        self._f.close()
        if storage.exists(self.tmp):
            storage.remove(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is not None:
            self.abort()


def write_json_atomic(path: str, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    if storage.is_url(path):
        tmp = storage.join(os.path.dirname(path), f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}.json")
        with storage.open_file(tmp, "w") as f:
            f.write(text)
        storage.move(tmp, path)
        return
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_manifest(data_dir: str, manifest: Manifest) -> None:
    """Write the manifest; a complete dataset first gets its TFDS metadata in tfds/, so the
    manifest (the commit mark) is written last."""
    if manifest["complete"] and manifest.get("kind", "image") == "image":  # TFDS: images only
        tfds_dir = storage.join(data_dir, TFDS_DIR)
        storage.makedirs(tfds_dir)
        info, features = tfds_metadata(manifest)
        write_json_atomic(storage.join(tfds_dir, "features.json"), features)
        write_json_atomic(storage.join(tfds_dir, "dataset_info.json"), info)
    write_json_atomic(storage.join(data_dir, MANIFEST), manifest)


def tfds_metadata(manifest: Manifest) -> tuple[dict, dict]:
    """TFDS's dataset_info.json and features.json for the shards of a complete dataset, so that
    `tfds.builder_from_directory(DIR/tfds)` reads them in place: the shards already follow
    TFDS's file naming, and each split's file template points one folder up. TFDS reads its
    own dataset_info.json strictly, so it cannot be captchalab's manifest; hence the subfolder.
    Examples hold image/png (decoded to uint8 HxWx3), label/text, label/ids and label/length."""
    splits = [{"name": split,
               "filepathTemplate": "../{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
               "shardLengths": [str(e["count"]) for e in info["shards"]],
               "numBytes": str(sum(e["bytes"] for e in info["shards"]))}
              for split, info in manifest["splits"].items() if info["shards"]]
    info = {"name": "captcha", "version": f"{FORMAT_VERSION}.0.0", "fileFormat": "tfrecord",
            "description": f"captchalab dataset ({manifest['source']}): "
                           f"{manifest.get('command') or 'see ../' + MANIFEST}",
            "splits": splits}

    def feature(cls, **spec):
        module, name = cls
        return {"pythonClassName": f"tensorflow_datasets.core.features.{module}.{name}", **spec}

    def group(**features):
        return feature(("features_dict", "FeaturesDict"), featuresDict={"features": features})

    img = manifest["image"]
    int64 = {"dtype": "int64", "encoding": "none"}
    features = group(
        image=group(png=feature(("image_feature", "Image"), image={
            "shape": {"dimensions": [str(img["height"]), str(img["width"]), "3"]},
            "dtype": "uint8", "encodingFormat": "png"})),
        label=group(
            text=feature(("text_feature", "Text"), text={}),
            ids=feature(("tensor_feature", "Tensor"),
                        tensor={"shape": {"dimensions": ["-1"]}, **int64}),
            length=feature(("scalar", "Scalar"), tensor={"shape": {}, **int64})))
    return info, features


def read_manifest(data_dir: str) -> Manifest:
    """Load `dataset_info.json`; a folder without one is refused as not a captchalab dataset."""
    if not storage.exists(data_dir):
        raise UsageError(f"dataset folder {data_dir} does not exist")
    if not storage.isdir(data_dir):
        raise UsageError(f"{data_dir} is a file; give a dataset folder made by 'captchalab gen'")
    path = storage.join(data_dir, MANIFEST)
    if not storage.exists(path):
        raise UsageError(
            f"{data_dir} is not a captchalab dataset (no {MANIFEST}); make one with 'captchalab gen'"
            " or 'captchalab import'")
    try:
        with storage.open_file(path, "r") as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is unreadable or not JSON: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        got = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise UsageError(f"{path} is not a captchalab manifest (format is {got!r})")
    problem = _manifest_problem(m)
    if problem:
        raise DataError(f"{path} is damaged: {problem}; regenerate or re-import the dataset")
    return m


def _manifest_problem(m: dict) -> str | None:
    """What is missing or of the wrong type in a manifest that readers rely on; None if fine."""
    def bad(value, kind):
        return not isinstance(value, kind) or isinstance(value, bool)

    checks = [("charset.chars", lambda: m["charset"]["chars"], str),
              ("length", lambda: m["length"], list),
              ("splits", lambda: m["splits"], dict)]
    if m.get("kind", "image") == "audio":
        checks.append(("audio.rate", lambda: m["audio"]["rate"], int))
    elif m.get("kind", "image") == "image":
        checks += [("image.width", lambda: m["image"]["width"], int),
                   ("image.height", lambda: m["image"]["height"], int)]
    else:
        return f"kind is {m.get('kind')!r} (allowed: image, audio)"
    for name, get, kind in checks:
        try:
            if bad(get(), kind):
                return f"{name} is not {kind.__name__}"
        except (KeyError, TypeError):
            return f"it lacks {name}"
    if len(m["length"]) != 2 or any(bad(v, int) for v in m["length"]):
        return "length is not [min, max]"
    for split, info in m["splits"].items():
        try:
            ok = not bad(info["count"], int) and all(
                isinstance(e["file"], str) and not bad(e["count"], int) and not bad(e["bytes"], int)
                for e in info["shards"])
        except (KeyError, TypeError):
            ok = False
        if not ok:
            return f"splits.{split} lacks count or shard entries (file, count, bytes)"
    return None


def check_shard_files(data_dir: str, manifest: dict, split: str) -> None:
    """Refuse before reading when a shard of `split` is missing, not a file, or not the size the
    manifest records (truncated or replaced): DataError naming it."""
    for entry in manifest["splits"][split]["shards"]:
        path = storage.join(data_dir, entry["file"])
        if not storage.exists(path):
            raise DataError(f"{path}: shard listed in {MANIFEST} is missing; run "
                            f"'captchalab verify {data_dir}'")
        if storage.isdir(path) or storage.size(path) != entry["bytes"]:
            raise DataError(f"{path}: not the {entry['bytes']}-byte shard {MANIFEST} records "
                            f"(truncated or replaced); run 'captchalab verify {data_dir}'")


def shard_paths(data_dir: str, manifest: dict, split: str) -> list[str]:
    if split not in manifest["splits"]:
        have = ", ".join(manifest["splits"]) or "none"
        raise UsageError(f"split {split}: the dataset has no such split (it has: {have})",
                         param="split")
    return [storage.join(data_dir, s["file"]) for s in manifest["splits"][split]["shards"]]


def iter_shard(path: str):
    """Yield decoded records of one shard; errors name the file and the record."""
    with storage.open_file(path, "rb") as f:
        records = enumerate(read_records(f))
        while True:
            try:
                index, data = next(records)
            except StopIteration:
                return
            except CorruptRecord as e:
                raise CorruptShard(path, str(e)) from None
            try:
                rec = decode_record(data)
            except Exception as e:  # noqa: BLE001 - undecodable protobuf
                raise CorruptShard(path, f"record {index}: not a captchalab record ({e})") from None
            yield rec


def iter_split(data_dir: str, manifest: dict, split: str):
    paths = shard_paths(data_dir, manifest, split)
    check_shard_files(data_dir, manifest, split)
    for p in paths:
        yield from iter_shard(p)


class CorruptShard(DataError):
    """A damaged shard met while reading a dataset; the message names the file and record."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def scan_shard(path: str) -> dict:
    """Read a whole shard: record count, size and sha256; raises CorruptShard on a bad record."""
    sha = hashlib.sha256()
    with storage.open_file(path, "rb") as f:
        count = 0
        try:
            for data in read_records(f):
                decode_record(data)
                count += 1
        except CorruptRecord as e:
            raise CorruptShard(path, str(e)) from None
        except Exception as e:  # noqa: BLE001
            raise CorruptShard(path, f"record {count}: not a captchalab record ({e})") from None
        f.seek(0)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
        size = f.tell()
    return {"file": os.path.basename(path), "count": count, "bytes": size,
            "sha256": sha.hexdigest()}
