"""`captchalab eval`: score a trained run on a dataset split or a folder of labelled images,
and write the report (figures, confusions, error gallery)."""

from __future__ import annotations

import os
import sys

import numpy as np

from captchalab.core.errors import UsageError
from captchalab.core.runconfig import output_home
from captchalab.gen import shards as sh

BATCH = 256
# per-sample values a generated dataset records (shards.STYLE_FEATURES) that accuracy is broken
# down by when they vary; list-valued ones (font sizes, colours) are left out
STYLE_KEYS = ("font", "rotate", "warp_dx", "warp_dy", "offset_dx", "offset_dy", "space_prob",
              "word_offset", "noise_dots", "noise_dot_width", "noise_curves", "fg_alpha")
AUDIO_STYLE_KEYS = ("floor", "reverb", "bandpass", "snr", "pink")  # shards.AUDIO_STYLE_FEATURES


def check_compatible(config: dict, manifest: dict, data_dir: str, run_dir: str,
                     resize: bool = False) -> None:
    """The data must use the model's charset (or a subset) and image size (or `resize`)."""
    model_kind, data_kind = config.get("data_kind", "image"), manifest.get("kind", "image")
    if model_kind != data_kind:
        raise UsageError(f"{data_dir} holds {data_kind} captchas but the model in {run_dir} "
                         f"reads {model_kind}")
    model_chars = config["charset"]["chars"]
    extra = "".join(c for c in manifest["charset"]["chars"] if c not in model_chars)
    if extra:
        raise UsageError(f"{data_dir} uses characters {extra!r} that the model in {run_dir} "
                         f"cannot output (its charset is {model_chars!r})")
    if data_kind == "audio":
        return
    have = (manifest["image"]["width"], manifest["image"]["height"])
    want = (config["image"]["width"], config["image"]["height"])
    if have != want and not resize:
        raise UsageError(f"{data_dir} has {have[0]}x{have[1]} images but the model in {run_dir} "
                         f"was trained on {want[0]}x{want[1]} (--resize resizes them)")


def dataset_source(data_dir: str, split: str, config: dict, run_dir: str, resize: bool = False):
    """(count, description, iterator of (rgb, truth, name, meta)) over a split's records;
    `resize`: images of another size are resized to the model's."""
    from captchalab.eval.predictor import to_rgb

    m = sh.read_manifest(data_dir)
    if split not in m["splits"]:
        raise UsageError(f"split {split}: {data_dir} has only "
                         f"{', '.join(m['splits']) or 'no splits'}", param="split")
    check_compatible(config, m, data_dir, run_dir, resize)
    sh.check_shard_files(data_dir, m, split)  # before the model loads
    if m.get("kind") == "audio":
        from captchalab.gen.audio import parse_wav

        def clips():
            for r in sh.iter_split(data_dir, m, split):
                yield (parse_wav(r["audio/wav"], f"{split}:{r['sample/index']}"),
                       r["label/text"], f"{split}:{r['sample/index']}",
                       {k: r.get(f"style/{k}") for k in AUDIO_STYLE_KEYS})

        return m["splits"][split]["count"], f"{split} split", clips()
    size = (config["image"]["width"], config["image"]["height"]) if resize else None

    def samples():
        for r in sh.iter_split(data_dir, m, split):
            yield (to_rgb(r["image/png"], size), r["label/text"], f"{split}:{r['sample/index']}",
                   {k: r.get(f"style/{k}") for k in STYLE_KEYS})

    return m["splits"][split]["count"], f"{split} split", samples()


def folder_source(folder: str, config: dict, run_dir: str, resize: bool, skip_bad: bool, warn):
    """Like dataset_source for a labelled folder (labels.csv, LABEL.png or NAME_LABEL.png).

    Labels outside the model's charset are refused up front; unreadable files are refused, or
    skipped with a warning when `skip_bad`; images of another size need `resize`.
    """
    from captchalab.core.charset import Charset
    from captchalab.eval.predictor import read_clip, read_file
    from captchalab.gen.folders import AUDIO_EXTS, list_labelled

    charset = Charset.from_json(config["charset"])
    audio = config.get("data_kind") == "audio"
    size = None if audio else (config["image"]["width"], config["image"]["height"])
    items = list_labelled(folder, exts=AUDIO_EXTS) if audio else list_labelled(folder)
    for path, label, _ in items:
        bad = charset.missing(label)
        if bad:
            raise UsageError(f"{path}: label {label!r} has {bad!r}, which the model cannot "
                             f"output (its charset is {charset.chars!r})")

    def samples():
        for path, label, _ in items:
            x = (read_clip(path, skip_bad, warn) if audio
                 else read_file(path, size, run_dir, resize, skip_bad, warn))
            if x is not None:
                yield x, label, os.path.relpath(path, folder), {}

    return len(items), "labelled WAV files" if audio else "labelled images", samples()


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr)


def read_all(recognizer, samples, count: int, beam_width: int, tta: bool, with_style: bool,
             progress: bool):
    """Read every (rgb, truth, name, style) sample in batches of BATCH. Returns truths,
    predictions, confidences, names, style values by key, and the GALLERY most confident errors
    as (confidence, sample number, image)."""
    from tqdm import tqdm

    from captchalab.eval.predictor import AUDIO_BATCH
    from captchalab.eval.report import GALLERY
    from captchalab.gen.audio import spectrogram_image

    truths, preds, confs, names = [], [], [], []
    audio = recognizer.data_kind == "audio"
    meta = {k: [] for k in (AUDIO_STYLE_KEYS if audio else STYLE_KEYS)} if with_style else {}
    size = AUDIO_BATCH if audio else BATCH
    worst = []  # (confidence, sample number, image) of errors, pruned to the GALLERY most confident
    batch = []

    def flush():
        texts, conf = recognizer.read(recognizer.batch([b[0] for b in batch]), beam_width, tta)
        for (x, truth, nm, mt), text, c in zip(batch, texts, conf, strict=True):
            if text != truth:  # audio: its spectrogram goes into the gallery
                worst.append((float(c), len(truths), spectrogram_image(x) if audio else x))
            truths.append(truth)
            preds.append(text)
            confs.append(float(c))
            names.append(nm)
            for k, v in mt.items():
                meta[k].append(v)
        worst.sort(key=lambda w: (-w[0], w[1]))
        del worst[GALLERY:]
        batch.clear()

    with tqdm(total=count, unit="clip" if audio else "img", desc="eval",
              disable=None if progress else True, file=sys.stderr) as bar:
        for s in samples:
            batch.append(s)
            if len(batch) == size:
                bar.update(len(batch))
                flush()
        if batch:
            bar.update(len(batch))
            flush()
    return truths, preds, confs, names, meta, worst


def _readable(samples, chars: str):
    """`samples`, refusing at the first label with a character outside `chars` (the charset
    the images are read in: such a label could never be read right)."""
    from captchalab.core.charset import Charset

    read = Charset(chars)
    for s in samples:
        other = read.missing(s[1])
        if other:
            raise UsageError(f"charset: label {s[1]!r} has {other!r}, outside the "
                             f"charset read ({chars!r}); give a charset with every character "
                             "of the labels", param="charset")
        yield s


def _length_text(length: tuple[int, int]) -> str:
    lo, hi = length
    return str(lo) if lo == hi else f"{lo}-{hi}"


def evaluate(run_dir: str, *, data: str | None = None, images: str | None = None,
             split: str = "test", beam_width: int = 0, tta: bool = False,
             scales=None, blurs=None, length=None, charset=None, out: str | None = None,
             resize: bool = False, skip_bad: bool = False, progress: bool = True,
             warn=_warn) -> tuple[dict, dict]:
    """Score `run_dir` on `data` (a split) or `images` (a labelled folder); write the report.

    out: report folder (default RUN/eval/NAME-SPLIT, replaced files only).
    Returns (report dict as in report.json, {kind: path} of the files written).
    """
    from captchalab.eval.predictor import load, read_config
    from captchalab.eval.report import build_report, write_report

    if (data is None) == (images is None):
        raise UsageError("give one of --data DIR (a dataset split) or --images FOLDER")
    path = data if data is not None else images
    if not os.path.isdir(path):
        raise UsageError(f"{path} is not a folder; give a dataset (--data) or a folder of "
                         "labelled images (--images)")
    config = read_config(run_dir)
    if data is not None:  # data checked before TensorFlow loads
        count, what, samples = dataset_source(data, split, config, run_dir, resize)
    else:
        count, what, samples = folder_source(images, config, run_dir, resize, skip_bad, warn)
    name = os.path.basename(os.path.normpath(path)) + (f"-{split}" if data is not None else "")
    out = out or os.path.join(output_home(run_dir), "eval", name)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"out {out} is a file; give a folder for the report", param="out")
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out,
                                                                                  "report.json")):
        raise UsageError(f"out {out} holds other files and no earlier report.json; give a new "
                         "or empty folder (an earlier eval report there is replaced)", param="out")
    recognizer = load(run_dir, scales, blurs, length, charset)
    if recognizer.read_chars:
        samples = _readable(samples, recognizer.read_chars)

    truths, preds, confs, names, meta, worst = read_all(recognizer, samples, count, beam_width,
                                                        tta, data is not None, progress)
    if not truths:
        raise UsageError(f"{path}: no readable images to score")
    context = {"model": {"run": os.path.abspath(run_dir), "arch": config["arch"],
                         "charset": config["charset"]["chars"]},
               "data": {"path": os.path.abspath(path), "what": what,
                        "split": split if data is not None else None},
               "decoding": {"method": (f"beam search (width {beam_width})" if beam_width > 1
                                       else f"the best path of {_length_text(recognizer.length)} "
                                       "characters" if recognizer.length
                                       else "greedy") + (", test-time augmentation" if tta else "")
                                      + (", widths " + ",".join(f"{v:g}" for v in recognizer.scales)
                                         if len(recognizer.scales) > 1 else "")
                                      + (", blurs " + ",".join(f"{v:g}" for v in recognizer.blurs)
                                         if recognizer.blurs != (0.0,) else "")
                                      + (f", characters {recognizer.read_chars!r} only"
                                         if recognizer.read_chars else ""),
                            "beam_width": beam_width, "tta": tta,
                            "length": list(recognizer.length) if recognizer.length else None,
                            "charset": recognizer.read_chars,
                            "scales": list(recognizer.scales), "blurs": list(recognizer.blurs),
                            "temperature": recognizer.temperature}}
    report = build_report(truths, preds, confs, names, meta, config["charset"]["chars"], context)
    by_number = {i: rgb for _, i, rgb in worst}
    gallery = [(by_number[i], {"sample": names[i], "truth": truths[i], "pred": preds[i],
                               "confidence": confs[i]}) for _, i, _ in worst]
    return report, write_report(report, out, gallery)


def calibrate_run(run_dir: str, data_dir: str, split: str = "val", resize: bool = False) -> dict:
    """Fit the temperature of `run_dir` on `split` of `data_dir` and write RUN/calibration.json;
    returns what was written (temperature, samples, ECE before and after)."""
    import json

    from captchalab.core.ctc import pad_blanks
    from captchalab.core.metrics import calibration_error
    from captchalab.core.storage import write_atomic
    from captchalab.eval.calibration import FILE, fit_temperature, sequence_confidence
    from captchalab.eval.predictor import AUDIO_BATCH, load, read_config

    count, _, samples = dataset_source(data_dir, split, read_config(run_dir), run_dir, resize)
    rec = load(run_dir)
    logits, truths = [], []
    batch = []
    size = AUDIO_BATCH if rec.data_kind == "audio" else BATCH
    for x, truth, _, _ in samples:
        batch.append(x)
        truths.append(truth)
        if len(batch) == size:
            logits.append(rec.logits(rec.batch(batch)))
            batch = []
    if batch:
        logits.append(rec.logits(rec.batch(batch)))
    t = max(lg.shape[1] for lg in logits)  # audio batches differ in steps
    logits = np.concatenate([pad_blanks(lg, t) for lg in logits])
    texts, _ = rec.decode(logits)
    correct = np.array([t == p for t, p in zip(truths, texts, strict=True)])
    t = fit_temperature(rec.kind, logits, texts, rec.charset, correct)

    def ece(temp):
        conf = sequence_confidence(rec.kind, logits, texts, rec.charset, temp)
        return calibration_error(conf, correct)[0]

    info = {"temperature": t, "data": os.path.abspath(data_dir), "split": split,
            "samples": int(count), "seq_acc": float(correct.mean()),
            "ece_before": ece(1.0), "ece_after": ece(t)}
    write_atomic(os.path.join(run_dir, FILE), json.dumps(info, indent=2) + "\n")
    return info
