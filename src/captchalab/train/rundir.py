"""The run directory: created empty, config.json, checkpoints/state.json, history.csv and
history.png. Every file is written under a temporary name and renamed into place. No TensorFlow
import."""

from __future__ import annotations

import csv
import json
import os

from captchalab.core.errors import UsageError
from captchalab.core.plot import pyplot
from captchalab.core.runconfig import read_run_config
from captchalab.core.storage import atomic_write
from captchalab.gen import shards as sh
from captchalab.train.config import TrainConfig

CKPT_DIR = "checkpoints"  # epoch-NNNN.weights.h5 (model + optimizer state) and state.json


def prepare_run_dir(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"out {out} is a file; give a folder for the run", param="out")
    if os.path.isdir(out) and os.listdir(out):
        raise UsageError(f"out {out} is not empty; give a new run folder (or --resume it)",
                         param="out")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write-test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"out {out} is not writable: {e.strerror}", param="out") from None


def read_state(run: str) -> dict:
    path = os.path.join(run, CKPT_DIR, "state.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {"epoch": 0, "checkpoint": None, "best": None, "history": [], "elapsed": 0.0,
            "done": False}


def resume_config(out: str, data: str | None) -> TrainConfig:
    """The stored settings of run `out`; `data` may point elsewhere if it matches the run."""
    stored = read_run_config(out)
    cfg = TrainConfig.from_json(stored["train"])
    cfg.out = out
    state = read_state(out)
    if state["done"]:
        raise UsageError(f"resume: {out} already finished ({state['epoch']} epochs); "
                         "start a new run to train further", param="resume")
    if data:
        m = sh.read_manifest(data)
        # the data it was trained on (data_format: runs started from another may differ from
        # the model's own charset and size)
        trained_on = {**stored, **stored.get("data_format", {})}
        for what, get in (("charset", lambda d: d["charset"]["chars"]),
                          ("label length", lambda d: d["length"]),
                          ("kind", lambda d: d.get("kind", d.get("data_kind", "image"))),
                          ("image size", lambda d: (d["image"]["width"], d["image"]["height"])
                           if "image" in d else None)):
            have, want = get(m), get(trained_on)
            if have != want:
                raise UsageError(f"resume: {data} has {what} {have!r} but {out} was trained on "
                                 f"{want!r}", param="resume")
        cfg.data = data
    return cfg


def write_history_csv(run: str, history: list[dict]) -> None:
    first = ["epoch", "steps", "time", "wall"]
    keys = first + sorted({k for r in history for k in r} - set(first))

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, keys)
            w.writeheader()
            w.writerows(history)

    atomic_write(os.path.join(run, "history.csv"), write)


def plot_history(run_dir: str, history: list[dict]) -> None:
    import matplotlib.ticker

    plt = pyplot()

    if not history:
        return
    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(ep, [r["loss"] for r in history], label="train")
    a.plot(ep, [r["val_loss"] for r in history], label="val")
    a.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    a.legend()
    for key, style in (("seq_acc", "-"), ("char_acc", "--")):
        b.plot(ep, [r[f"train_{key}"] for r in history], style, color="C0", label=f"train {key}")
        b.plot(ep, [r[f"val_{key}"] for r in history], style, color="C1", label=f"val {key}")
    b.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.01), title="accuracy (greedy decode)")
    b.grid(alpha=0.3)
    b.legend()
    for ax in (a, b):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "history.png"), dpi=100)
    plt.close(fig)
