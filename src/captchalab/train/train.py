"""`captchalab train`: shards -> tf.data -> CTC model, val metrics every epoch, run directory."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass

from captchalab.charset import Charset
from captchalab.errors import UsageError
from captchalab.gen import shards as sh

EVAL_BATCH = 256  # images per prediction batch when measuring accuracy


@dataclass
class TrainConfig:
    data: str = ""  # dataset folder made by `captchalab gen` / `import`
    out: str = ""  # run directory
    arch: str = "crnn"  # see train.models.ARCHS
    epochs: int = 20  # passes over the train split
    steps: int = 0  # optimizer steps in all; overrides epochs when > 0
    batch_size: int = 64  # images per step
    lr: float = 1e-3  # peak learning rate (Adam)
    schedule: str = "cosine"  # cosine decay to 0 over the run, or constant
    downscale: int = 2  # input at 1/downscale resolution: half size trains ~3x faster, same accuracy
    seed: int = 0
    patience: int = 0  # early stopping on val sequence accuracy; 0 = off
    train_eval_samples: int = 512  # train samples decoded each epoch for train accuracy


def _plot_history(run_dir: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    ep = [int(r["epoch"]) + 1 for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(ep, [float(r["loss"]) for r in rows], label="train")
    a.plot(ep, [float(r["val_loss"]) for r in rows], label="val")
    a.set(xlabel="epoch", ylabel="CTC loss", yscale="log", title="loss")
    a.legend()
    for key, style in (("seq_acc", "-"), ("char_acc", "--")):
        b.plot(ep, [float(r[f"train_{key}"]) for r in rows], style, color="C0", label=f"train {key}")
        b.plot(ep, [float(r[f"val_{key}"]) for r in rows], style, color="C1", label=f"val {key}")
    b.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.01), title="accuracy (greedy decode)")
    b.grid(alpha=0.3)
    b.legend()
    for ax in (a, b):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "history.png"), dpi=100)
    plt.close(fig)


def prepare_run_dir(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file; give a folder for the run")
    if os.path.isdir(out) and os.listdir(out):
        raise UsageError(f"--out {out} is not empty; give a new run folder")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write-test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"--out {out} is not writable: {e.strerror}") from None


def train(cfg: TrainConfig, command: str = "", verbose: int = 1) -> dict:
    """Train and write the run directory; returns the best val metrics."""
    m = sh.read_manifest(cfg.data)
    for split in ("train", "val"):
        if split not in m["splits"]:
            raise UsageError(f"--data {cfg.data} has no {split} split; generate one with "
                             f"'captchalab gen --{split} N'")
    if cfg.downscale < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise UsageError("--downscale and --batch-size must be >= 1 and --lr > 0")
    charset = Charset.from_json(m["charset"])
    max_len = m["length"][1]

    from captchalab.tfimport import import_tensorflow

    tf = import_tensorflow()
    import keras
    import numpy as np

    from captchalab.eval.metrics import summary
    from captchalab.train import ctc
    from captchalab.train import input as inp
    from captchalab.train.models import build_model

    shape = inp.input_shape(m, cfg.downscale)
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg.arch, shape, charset.num_classes, max_len)  # T-check before writing
    prepare_run_dir(cfg.out)

    n_train = m["splits"]["train"]["count"]
    steps_per_epoch = max(1, n_train // cfg.batch_size)
    epochs = math.ceil(cfg.steps / steps_per_epoch) if cfg.steps > 0 else cfg.epochs
    total_steps = cfg.steps if cfg.steps > 0 else epochs * steps_per_epoch
    lr = (keras.optimizers.schedules.CosineDecay(cfg.lr, total_steps) if cfg.schedule == "cosine"
          else cfg.lr)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.CTC())

    train_ds = inp.shard_dataset(cfg.data, m, "train", batch_size=cfg.batch_size,
                                 downscale=cfg.downscale, training=True, seed=cfg.seed)
    val_ds = inp.shard_dataset(cfg.data, m, "val", batch_size=EVAL_BATCH,
                               downscale=cfg.downscale, training=False)
    probe_ds = inp.shard_dataset(cfg.data, m, "train", batch_size=EVAL_BATCH,
                                 downscale=cfg.downscale, training=False
                                 ).unbatch().take(cfg.train_eval_samples).batch(EVAL_BATCH)

    config = {"charset": charset.to_json(), "image": m["image"], "input_shape": list(shape),
              "max_length": max_len, "length": m["length"], "arch": cfg.arch,
              "train": asdict(cfg), "dataset": os.path.abspath(cfg.data),
              "command": command, "versions": {"tensorflow": tf.__version__,
                                               "keras": keras.__version__}}
    with open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    class Accuracy(keras.callbacks.Callback):
        """Greedy-decode val (and a fixed train subset) each epoch; adds metrics to logs."""

        def on_epoch_end(self, epoch, logs=None):
            for prefix, ds in (("val", val_ds), ("train", probe_ds)):
                truths, preds = [], []
                for images, ids in ds:  # truths travel with the images: no order assumptions
                    texts, _ = ctc.decode(self.model.predict_on_batch(images), charset)
                    preds.extend(texts)
                    truths.extend(charset.decode(row) for row in ids.numpy())
                for k, v in summary(truths, preds).items():
                    logs[f"{prefix}_{k}"] = v

    callbacks = [
        Accuracy(),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(os.path.join(cfg.out, "history.csv")),
        keras.callbacks.ModelCheckpoint(os.path.join(cfg.out, "model.keras"),
                                        monitor="val_seq_acc", mode="max", save_best_only=True),
        keras.callbacks.TensorBoard(os.path.join(cfg.out, "tensorboard"), write_graph=False),
    ]
    if cfg.patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_seq_acc", mode="max", patience=cfg.patience))
    hist = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                     validation_data=val_ds,
                     validation_steps=math.ceil(m["splits"]["val"]["count"] / EVAL_BATCH),
                     callbacks=callbacks, verbose=verbose, shuffle=False)
    if any(not np.isfinite(v) for v in hist.history.get("loss", [])):
        raise UsageError("training stopped: the loss became NaN/inf; try a lower --lr. "
                         f"The best model so far is in {cfg.out}/model.keras")
    _plot_history(cfg.out)
    best = int(np.argmax(hist.history["val_seq_acc"]))
    return {k: float(v[best]) for k, v in hist.history.items() if k.startswith("val_")} | {
        "epoch": best + 1}
