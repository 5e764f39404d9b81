"""Score a trained run on a dataset split: load the run, check it fits the data, decode, measure."""

from __future__ import annotations

import json
import math
import os

from captchalab.charset import Charset
from captchalab.errors import UsageError
from captchalab.gen import shards as sh

BATCH = 256


def load_run(run_dir: str):
    """(keras model, config dict) of a run directory written by `captchalab train`."""
    cfg_path, model_path = (os.path.join(run_dir, n) for n in ("config.json", "model.keras"))
    if not os.path.isfile(cfg_path) or not os.path.isfile(model_path):
        raise UsageError(f"--model {run_dir} is not a trained captchalab run "
                         "(needs config.json and model.keras)")
    with open(cfg_path) as f:
        config = json.load(f)
    from captchalab.tfimport import import_tensorflow

    import_tensorflow()
    import keras

    return keras.models.load_model(model_path, compile=False), config


def check_compatible(config: dict, manifest: dict, data_dir: str, run_dir: str) -> None:
    """The data must use the model's charset (or a subset) and image size."""
    model_chars = config["charset"]["chars"]
    extra = "".join(c for c in manifest["charset"]["chars"] if c not in model_chars)
    if extra:
        raise UsageError(f"{data_dir} uses characters {extra!r} that the model in {run_dir} "
                         f"cannot output (its charset is {model_chars!r})")
    have = (manifest["image"]["width"], manifest["image"]["height"])
    want = (config["image"]["width"], config["image"]["height"])
    if have != want:
        raise UsageError(f"{data_dir} has {have[0]}x{have[1]} images but the model in {run_dir} "
                         f"was trained on {want[0]}x{want[1]}")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def predict_split(model, config: dict, data_dir: str, manifest: dict, split: str,
                  beam_width: int = 0):
    """(truths, predictions, confidences) for every record of `split`."""
    import tensorflow as tf

    from captchalab.train import ctc
    from captchalab.train.input import shard_dataset

    ds = shard_dataset(data_dir, manifest, split, batch_size=BATCH,
                       downscale=config["train"]["downscale"], training=False)
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    truths, preds, confs = [], [], []
    for _, _, batch_truths, texts, conf in ctc.decode_batches(
            forward, ds, config.get("kind", "ctc"), Charset.from_json(config["charset"]),
            Charset.from_json(manifest["charset"]), beam_width):
        truths.extend(batch_truths)
        preds.extend(texts)
        confs.extend(float(c) for c in conf)
    return truths, preds, confs


def evaluate(run_dir: str, data_dir: str, split: str = "test", beam_width: int = 0) -> dict:
    """Sequence/character accuracy (with 95 % Wilson intervals) and CER of a run on a split."""
    from captchalab.eval.metrics import character_error_rate, kept_characters

    m = sh.read_manifest(data_dir)
    if split not in m["splits"]:
        raise UsageError(f"--split {split}: {data_dir} has only "
                         f"{', '.join(m['splits']) or 'no splits'}")
    model, config = load_run(run_dir)
    check_compatible(config, m, data_dir, run_dir)
    truths, preds, _ = predict_split(model, config, data_dir, m, split, beam_width)
    pairs = list(zip(truths, preds, strict=True))
    n, chars = len(pairs), sum(len(t) for t in truths)
    exact = sum(t == p for t, p in pairs)
    kept = sum(kept_characters(t, p) for t, p in pairs)
    return {"samples": n, "seq_acc": exact / n if n else 0.0,
            "char_acc": kept / chars if chars else 0.0,
            "cer": character_error_rate(truths, preds),
            "seq_acc_ci95": list(wilson(exact, n)), "char_acc_ci95": list(wilson(kept, chars)),
            "split": split, "beam_width": beam_width}
