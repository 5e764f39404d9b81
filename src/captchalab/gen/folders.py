"""PNG folders in and out: `captchalab export --png` and `captchalab import`."""

from __future__ import annotations

import csv
import os
import random
import time

from captchalab.core.charset import Charset
from captchalab.core.errors import UsageError
from captchalab.core.images import open_rgb
from captchalab.gen import shards as sh
from captchalab.gen.recipe import DEFAULT_SHARD_SIZE

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
SPLIT_NAMES = ("train", "val", "test")
UNSAFE_IN_NAMES = set('/\\_:*?"<>|')


def _empty_or_new(path: str, option: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{option} {path} is a file; give a folder (new or empty)")
    if os.path.isdir(path) and os.listdir(path):
        raise UsageError(f"{option} {path} is not empty; give a new or empty folder")


def export_png(data_dir: str, png_dir: str, splits=None) -> int:
    """Write SPLIT/INDEX_LABEL.png (INDEX.png when the label has characters unsafe in file names;
    .wav files for an audio dataset),
    labels.csv (file,label,split) and SPLIT/metadata.csv (file_name,label: the Hugging Face
    imagefolder layout). Everything is written to a temporary folder beside `png_dir` and
    renamed into place, so a damaged shard leaves nothing half-exported. Returns the number of
    images written."""
    import shutil

    m = sh.read_manifest(data_dir)
    splits = list(splits or m["splits"])
    for s in splits:
        sh.shard_paths(data_dir, m, s)  # refuses unknown splits before anything is written
    _empty_or_new(png_dir, "--png")
    tmp = os.path.join(os.path.dirname(os.path.abspath(png_dir)),
                       f".tmp-export-{os.path.basename(os.path.abspath(png_dir))}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        rows = _write_pngs(data_dir, m, splits, tmp)
        if os.path.isdir(png_dir):
            os.rmdir(png_dir)  # empty (checked above)
        os.replace(tmp, png_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(rows)


def _write_pngs(data_dir: str, m: dict, splits: list[str], out: str) -> list[tuple[str, str, str]]:
    rows = []
    for split in splits:
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for rec in sh.iter_split(data_dir, m, split):
            text = rec["label/text"]
            stem = f"{rec['sample/index']:07d}"
            if not (set(text) & UNSAFE_IN_NAMES):
                stem += f"_{text}"
            audio = "audio/wav" in rec  # audio datasets: the WAV files as stored
            rel = f"{split}/{stem}.{'wav' if audio else 'png'}"
            with open(os.path.join(out, rel), "wb") as f:
                f.write(rec["audio/wav"] if audio else rec["image/png"])
            rows.append((rel, text, split))
    with open(os.path.join(out, "labels.csv"), "w", newline="") as f:
        csv.writer(f).writerows([["file", "label", "split"], *rows])
    for split in splits:  # beside the images, file names relative to it (imagefolder's rule)
        with open(os.path.join(out, split, "metadata.csv"), "w", newline="") as f:
            csv.writer(f).writerows([["file_name", "label"],
                                     *((os.path.basename(r), t) for r, t, sp in rows
                                       if sp == split)])
    return rows


def label_from_name(path: str) -> str:
    """`abc12.png` -> 'abc12'; `0001_abc12.png` -> 'abc12' (the part after the last '_')."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem.rsplit("_", 1)[-1]


# accepted header names: captchalab's own first, then Hugging Face imagefolder's and others
FILE_COLUMNS = ("file", "file_name", "filename", "path", "image")
LABEL_COLUMNS = ("label", "text")


def _read_labels_csv(csv_path: str, folder: str, default_split: str) -> list[tuple[str, str, str]]:
    """Rows of labels.csv (a UTF-8 byte-order mark allowed); refuses a file listed twice."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        names = reader.fieldnames or []
        file_col = next((c for c in FILE_COLUMNS if c in names), None)
        label_col = next((c for c in LABEL_COLUMNS if c in names), None)
        if file_col is None or label_col is None:
            raise UsageError(f"{csv_path} needs a header with a file column "
                             f"({', '.join(FILE_COLUMNS)}) and a label column "
                             f"({', '.join(LABEL_COLUMNS)}), optionally split; found {names}")
        items, seen = [], {}
        for line, row in enumerate(reader, start=2):
            split = (row.get("split") or default_split).strip()
            if split not in SPLIT_NAMES:
                raise UsageError(f"{csv_path}:{line}: split {split!r}; allowed: train, val, test")
            path = os.path.normpath(os.path.join(folder, row[file_col]))
            if path in seen:
                raise UsageError(f"{csv_path}:{line}: {row[file_col]} is listed again (first on "
                                 f"line {seen[path]}); give each image one row")
            seen[path] = line
            items.append((path, row[label_col], split))
    return items


AUDIO_EXTS = (".wav",)


def split_off_val(items, share: float, seed: int = 0):
    """`items` with `share` of their train split (at least one, leaving at least one), drawn at
    random from `seed`, moved to val: a val split for a folder that has none."""
    train = [i for i, (_, _, s) in enumerate(items) if s == "train"]
    if len(train) < 2:
        raise UsageError(f"val_share: {share}; the train split has {len(train)} captcha(s), and "
                         "holding some out as val needs at least 2", param="val_share")
    n = min(len(train) - 1, max(1, round(share * len(train))))
    val = set(random.Random(seed).sample(train, n))
    return [(p, lab, "val" if i in val else s) for i, (p, lab, s) in enumerate(items)]


def list_labelled(folder: str, default_split: str = "test",
                  exts: tuple[str, ...] = IMAGE_EXTS) -> list[tuple[str, str, str]]:
    """(path, label, split) for every labelled image (or file of `exts`, e.g. AUDIO_EXTS): from
    labels.csv when present, else from file names (a train/val/test subfolder sets the split)."""
    if not os.path.isdir(folder):
        what = "does not exist" if not os.path.exists(folder) else "is not a folder"
        raise UsageError(f"{folder} {what}; give a folder of labelled images")
    csv_path = os.path.join(folder, "labels.csv")
    items = []
    if os.path.exists(csv_path):
        items = _read_labels_csv(csv_path, folder, default_split)
    else:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            sub = os.path.relpath(root, folder).split(os.sep)[0]
            split = sub if sub in SPLIT_NAMES else default_split
            for name in sorted(files):
                if name.lower().endswith(exts):
                    p = os.path.join(root, name)
                    items.append((p, label_from_name(p), split))
    if not items:
        what = "WAV files (*.wav" if exts == AUDIO_EXTS else "images (*.png, *.jpg …"
        raise UsageError(f"{folder} holds no labelled {what}, or labels.csv)")
    for p, label, _ in items:
        if not label:
            raise UsageError(f"{p}: empty label; name files LABEL.png or NAME_LABEL.png")
    return items


def load_rgb(path: str, size=None):
    """Open an image file as RGB, resized to `size` (w, h) when given; names the file on failure."""
    from PIL import Image

    im = open_rgb(path)
    if size and im.size != tuple(size):
        im = im.resize(tuple(size), Image.BILINEAR)
    return im


def _load_all(items, target):
    """The images of `items` as RGB, resized to `target` (w, h) when given; else all one size."""
    images = []
    for p, _, _ in items:
        im = load_rgb(p, target)
        if target is None and images and im.size != images[0].size:
            raise UsageError(
                f"images differ in size ({items[0][0]} is {images[0].size[0]}x{images[0].size[1]}, "
                f"{p} is {im.size[0]}x{im.size[1]}); give --size WxH to resize them")
        images.append(im)
    return images


def _write_splits(out, items, payloads, shard_size, encode) -> dict:
    """Shards of each split; returns the manifest's "splits" (count and shard entries).
    `encode(path, label, payload, split, index)` makes one record."""
    import math

    splits = {}
    for s in SPLIT_NAMES:
        members = [(p, lab, x) for (p, lab, sp), x in zip(items, payloads, strict=True) if sp == s]
        if not members:
            continue
        n = math.ceil(len(members) / shard_size)
        entries = []
        for i in range(n):
            with sh.ShardWriter(out, sh.shard_name(s, i, n)) as wr:
                for index in range(i * shard_size, min(len(members), (i + 1) * shard_size)):
                    wr.write(encode(*members[index], s, index))
                entries.append(wr.commit())
        splits[s] = {"count": len(members), "shards": entries}
    return splits


def import_folder(folder: str, out: str, *, charset: str | None = None, size: str | None = None,
                  split: str = "test", shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False,
                  command: str = "", items=None, origin: dict | None = None,
                  val_share: float = 0.0) -> dict:
    """Labelled images -> shards + manifest in the same format `gen` writes.

    items: (path, label, split) to import instead of the folder's own labels (e.g. a model's
    readings, eval.pseudolabel); origin: what the manifest's "origin" records of them.
    val_share: hold out this share of the train split as val (split_off_val)."""
    from captchalab.gen.generate import clear_dataset, prepare_out_dir
    from captchalab.gen.recipe import parse_size, versions

    if shard_size <= 0:
        raise UsageError(f"shard_size: {shard_size}; must be a positive number of records",
                         param="shard_size")
    if items is None:
        audio = _is_audio_folder(folder)
        items = list_labelled(folder, split, exts=AUDIO_EXTS if audio else IMAGE_EXTS)
    else:
        audio = items[0][0].lower().endswith(AUDIO_EXTS)
    split_rule = "as given by labels.csv or subfolders"
    if val_share:
        items = split_off_val(items, val_share)
        split_rule += f"; {val_share:g} of train held out as val (seed 0)"
    split_rule += "; imported labels may repeat across splits"
    labels = [lab for _, lab, _ in items]
    for p, lab, _ in items:
        if any(c.isspace() for c in lab):
            raise UsageError(f"{p}: label {lab!r} holds whitespace, which no charset can (as in "
                             "`gen --charset`); fix the label")
    cs = Charset.parse(charset) if charset else Charset("".join(sorted(set("".join(labels)))))
    for p, lab, _ in items:
        bad = cs.missing(lab)
        if bad:
            raise UsageError(f"{p}: label {lab!r} has {bad!r}, not in --charset {cs.chars!r}")
    if audio:
        if size:
            raise UsageError("--size resizes images; these are WAV files", param="size")
        return _import_audio(folder, out, items, labels, cs, shard_size, overwrite, command,
                             origin or {}, split_rule)
    target = parse_size(size) if size else None
    images = _load_all(items, target)
    w, h = images[0].size
    prepare_out_dir(out, resume=False, overwrite=overwrite, resumable=False)
    os.makedirs(out, exist_ok=True)
    clear_dataset(out)
    from captchalab.gen.render import png_bytes

    def encode(p, lab, im, split, index):
        return sh.encode_record(png=png_bytes(im), width=w, height=h, text=lab,
                                ids=cs.encode(lab), split=split, index=index, seed=-1,
                                extra={"source/file": os.path.relpath(p, folder)})

    splits = _write_splits(out, items, images, shard_size, encode)
    lengths = [len(lab) for lab in labels]
    manifest = {
        "format": sh.FORMAT,
        "format_version": sh.FORMAT_VERSION,
        "complete": True,
        "source": "imported",
        "origin": {"folder": os.path.abspath(folder), "images": len(items),
                   "resized_to": list(target) if target else None, **(origin or {})},
        "charset": cs.to_json(),
        "length": [min(lengths), max(lengths)],
        "size": [w, h],
        "style_name": None,
        "style": None,
        "fonts": [],
        "seed": None,
        "shard_size": shard_size,
        "counts": {s: v["count"] for s, v in splits.items()},
        "image": {"width": w, "height": h, "channels": 3, "encoding": "png"},
        "split_rule": split_rule,
        "splits": splits,
        "features": {**sh.CORE_FEATURES, **sh.IMPORT_FEATURES},
        "versions": versions(),
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    sh.write_manifest(out, manifest)
    return manifest


def _is_audio_folder(folder: str) -> bool:
    """Whether a labelled folder holds WAV files (and no images)."""
    if not os.path.isdir(folder):
        return False
    names = [n.lower() for _, _, files in os.walk(folder) for n in files]
    csv_path = os.path.join(folder, "labels.csv")
    if os.path.exists(csv_path):
        with open(csv_path, newline="", encoding="utf-8") as f:
            names = [(r[0] if r else "").lower() for r in csv.reader(f)][1:]
    return any(n.endswith(AUDIO_EXTS) for n in names) and not any(n.endswith(IMAGE_EXTS)
                                                                   for n in names)


def _import_audio(folder, out, items, labels, cs, shard_size, overwrite, command,
                  origin, split_rule) -> dict:
    """Labelled WAV files (mono, 8 kHz, 8 or 16 bit) -> an audio dataset; each clip is stored as
    the library writes WAV files (8-bit unsigned), so imported and generated records match."""
    from captchalab.gen.audio import RATE, read_pcm8, wav_bytes
    from captchalab.gen.generate import clear_dataset, prepare_out_dir
    from captchalab.gen.recipe import versions

    clips = [read_pcm8(p) for p, _, _ in items]  # every file checked before anything is written
    prepare_out_dir(out, resume=False, overwrite=overwrite, resumable=False)
    os.makedirs(out, exist_ok=True)
    clear_dataset(out)
    def encode(p, lab, pcm, split, index):
        return sh.encode_audio_record(
            text=lab, ids=cs.encode(lab), split=split, index=index, seed=-1,
            extra={"audio/wav": wav_bytes(pcm), "audio/samples": len(pcm), "audio/rate": RATE,
                   "source/file": os.path.relpath(p, folder)})

    splits = _write_splits(out, items, clips, shard_size, encode)
    lengths = [len(lab) for lab in labels]
    manifest = {
        "format": sh.FORMAT, "format_version": sh.FORMAT_VERSION, "complete": True,
        "source": "imported", "kind": "audio",
        "origin": {"folder": os.path.abspath(folder), "files": len(items), **origin},
        "charset": cs.to_json(), "length": [min(lengths), max(lengths)],
        "style_name": None, "style": None, "voices": [], "seed": None,
        "shard_size": shard_size, "counts": {s: v["count"] for s, v in splits.items()},
        "audio": {"rate": RATE, "channels": 1, "sample_width": 1, "encoding": "wav"},
        "split_rule": split_rule,
        "splits": splits,
        "features": {**sh.AUDIO_CORE_FEATURES, **sh.IMPORT_FEATURES},
        "versions": versions(), "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    sh.write_manifest(out, manifest)
    return manifest
