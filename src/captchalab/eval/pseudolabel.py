"""`captchalab import FOLDER --label-with RUN`: unlabelled captchas labelled by a model's
confident readings (pseudo-labels), written as a dataset like any import.

Self-training: a model fine-tuned on a few real labels reads a folder of unlabelled captchas
of the same site (free to collect); the readings at or above a confidence become labels, and
the next run trains on the real labels with these mixed in (`train --mix-data`). With a
calibrated run the confidence is the chance that a reading is right, so `min_confidence` sets
how many wrong labels get in (docs/adapt.md measures it). Without a calibration that fits the
site (a model that never saw it, or one calibrated on its own pseudo-labels), the ranking by
confidence still holds where its values do not: `most_confident` keeps a share of the folder,
the readings most confident first."""

from __future__ import annotations

import os

from captchalab.core.errors import UsageError


def pseudo_labels(folder: str, run: str, min_confidence: float, split: str = "train",
                  length: tuple[int, int] | None = None, skip_bad: bool = False, warn=print,
                  scales=None, blurs=None, charset=None, most_confident: float = 1.0):
    """(items, origin): (path, reading, split) for each file in `folder` that model `run`
    reads with at least `min_confidence`, and what the manifest records of it (the run's
    charset among it). Images of another size are read resized to the model's (the dataset
    keeps their own size, as the site's labelled captchas do: `train --init-from RUN
    --resize`). scales, blurs: the views each file is read at (predictor.Recognizer.read);
    None: once, as it is, whatever views the run is read at elsewhere. The confidence is
    calibrated on one view; the most confident of several runs higher and is right less often,
    and self-training on such labels measured 6-8 points lower at 100 labels
    (docs/adapt.md#reading-fine-tuned-runs-at-several-widths).
    length (min, max): the site's captchas have that many characters; each file is read as the
    most probable reading of that length (Recognizer's `length`; the readings that already had
    it are the same), and kept at `min_confidence` like any. charset: a spec of the only
    characters the site's captchas use; the run reads those only (Recognizer's `charset`).
    most_confident: keep at most this share of the folder's files, the most confident readings
    (of those at `min_confidence` and of the length) first."""
    from captchalab.eval.predictor import expand_paths, load, read_config
    from captchalab.gen.folders import AUDIO_EXTS
    from captchalab.gen.fonts import file_sha256

    if not os.path.isdir(folder):
        raise UsageError(f"{folder} is not a folder; give a folder of unlabelled captchas")
    try:
        config = read_config(run)
    except UsageError as e:  # "model RUN is not a trained run": named by this command's flag
        if e.param != "model":
            raise
        raise UsageError("label_with" + str(e)[len("model"):], param="label_with") from None
    audio = config.get("data_kind") == "audio"
    paths = expand_paths([folder], AUDIO_EXTS if audio else None)
    rec = load(run, scales or (1.0,), blurs or (0.0,), length, charset)
    preds, kept = rec.predict_files(paths, resize=True, skip_bad=skip_bad, warn=warn)
    lo, hi = length or (1, float("inf"))
    fits = [(p, r) for p, r in zip(kept, preds, strict=True) if lo <= len(r.text) <= hi]
    items = [(p, r.text, split) for p, r in fits if r.confidence >= min_confidence]
    if most_confident < 1.0:
        top = max(1, round(most_confident * len(preds)))
        conf = {p: r.confidence for p, r in fits}
        keep = set(sorted((p for p, _, _ in items), key=lambda p: -conf[p])[:top])
        items = [it for it in items if it[0] in keep]
    within = f" with {lo if lo == hi else f'{lo}-{hi}'} characters" if length else ""
    if not fits:  # no confidence helps: the run reads nothing (or not that many characters)
        raise UsageError(f"label_with: {run} read none of the {len(preds)} files of {folder} "
                         + (f"as text{within}" if length else "as any text (every reading "
                            "was empty)")
                         + "; it cannot label them: fine-tune it on a few labelled ones first "
                         "(docs/adapt.md)", param="label_with")
    if not items:
        top = max(r.confidence for _, r in fits)
        raise UsageError(f"min_confidence: {min_confidence}; no file of {folder} was read that "
                         f"confidently{within} (the highest confidence is {top:.3f} of "
                         f"{len(preds)}); give a lower --min-confidence"
                         + (" or another --length" if length else ""), param="min_confidence")
    kept_paths = {p for p, _, _ in items}
    origin = {"labelled_by": {"run": os.path.abspath(run),
                              "config_sha256": file_sha256(os.path.join(run, "config.json")),
                              "charset": config["charset"]["chars"],
                              "min_confidence": min_confidence,
                              "most_confident": most_confident,
                              "length": list(length) if length else None,
                              "read_charset": rec.read_chars,
                              "scales": list(rec.scales), "blurs": list(rec.blurs),
                              "read": len(preds),
                              "kept": len(items),
                              "lowest_kept_confidence": round(min(
                                  r.confidence for p, r in fits if p in kept_paths), 4)}}
    return items, origin
