"""Training settings (one commented field each; the CLI reads its defaults from here) and the
rule that picks which epoch becomes model.keras. No TensorFlow import."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from captchalab.core.errors import UsageError
from captchalab.train.models import RESAMPLE

AUTO_CURRICULUM = 100_000  # samples: ~8 minutes of universal on the fly on 2 cores (~205/s)
# Under a time budget an epoch from shards is at least this many steps: epochs then only mark
# evaluations and checkpoints (~0.45 s on 2 cores), and one step per epoch on a split of 80
# labels spent three quarters of a 60 s budget on them (docs/adapt.md).
MIN_BUDGET_EPOCH_STEPS = 32


@dataclass
class TrainConfig:
    data: str = ""  # dataset folder made by `captchalab gen` / `import`
    out: str = ""  # run directory
    arch: str = "auto"  # see train.models.ARCHS, AUDIO_ARCHS; auto: crnn-conv or audio-conv
    epochs: int = 20  # passes over the train split (on the fly: of epoch_samples)
    steps: int = 0  # optimizer steps in all; overrides epochs when > 0
    time_budget: float = 0.0  # seconds of training; overrides epochs/steps when > 0
    batch_size: int = 0  # samples per step; 0: 64 images, or 32 audio clips
    lr: float = 3e-3  # peak learning rate (Adam)
    schedule: str = "cosine"  # cosine decay to 0 over the run, or constant
    downscale: int = 2  # input at 1/downscale resolution (160x60 -> 80x30)
    resample: str = "fold"  # fold: stack each d x d block as d*d channels; box: average it
    # each image scaled to mean 0, sd 1 in the model's first layer; None (auto): on when the
    # training style has a scene (universal and other composed styles), else off
    standardize: bool | None = None
    seed: int = 0
    patience: int = 0  # early stopping on val sequence accuracy; 0 = off
    train_eval_samples: int = 512  # train samples decoded each epoch for train accuracy
    augment: bool = False  # random shifts, zoom and (unless standardized) contrast on train batches
    dropout: float = 0.0  # CTC archs: dropout on the column features entering the RNN
    jitter: int = 1  # random shifts of up to N px (dataset resolution) on training batches
    cache: bool = False  # decode the train split into memory once, before training
    # DIR:SHARE: that share of every train batch from the train split of another dataset (e.g.
    # pseudo-labels from `import --label-with` beside a few real labels); val stays --data's
    mix_data: str = ""
    mixed_precision: bool = False  # float16 compute on GPU, bfloat16 on CPU; logits stay float32
    jit: bool = False  # XLA-compile the train step (helps on GPU; slower on CPU here)
    cpu_devices: int = 1  # split the CPU into N logical devices (tests distribution on CPU)
    on_the_fly: bool = False  # train on freshly rendered samples, never repeating one
    style: str = ""  # on the fly without --data: the preset to render
    style_file: str = ""  # on the fly without --data: a TOML/JSON style file (as in `gen`)
    mix: str = ""  # on the fly without --data: PRESET:SHARE of the samples from another preset
    epoch_samples: int = 20000  # on the fly: samples per epoch
    val_samples: int = 1000  # on the fly without --data: val samples rendered in memory
    gen_workers: int = 0  # on the fly: render processes (0 = all cores)
    # on the fly: train samples start from the `default` preset (or the mixed-in one) and
    # reach the style (or its mix share) at this train index; None (auto): AUTO_CURRICULUM
    # for a style with a scene, else 0 (off)
    curriculum: int | None = None
    init_from: str = ""  # start from this run's weights (same architecture; see train.init_source)
    new_head: bool = False  # with init_from: a new output layer for the data's own charset
    resize: bool = False  # with init_from: resize images of another size to the run's size
    freeze: int = 0  # with init_from: keep the first N conv blocks (from the input) as they are

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def check_options(cfg: TrainConfig) -> None:
    if cfg.downscale < 1 or cfg.batch_size < 0:
        raise UsageError("downscale must be >= 1 and --batch-size >= 0 (0: the default)",
                         param="downscale")
    if not (0 < cfg.lr <= 1):  # also refuses nan
        raise UsageError(f"lr: {cfg.lr}; a learning rate > 0 and at most 1 (default 0.003)",
                         param="lr")
    if cfg.resample not in RESAMPLE:
        raise UsageError(f"resample: unknown '{cfg.resample}' (allowed: {', '.join(RESAMPLE)})",
                         param="resample")
    if not 0 <= cfg.jitter <= 8:
        raise UsageError(f"jitter: {cfg.jitter}; a shift in pixels from 0 (off) to 8",
                         param="jitter")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UsageError(f"dropout: {cfg.dropout}; a rate from 0 (off) to below 1", param="dropout")
    if cfg.schedule not in ("cosine", "constant"):
        raise UsageError(f"schedule: unknown '{cfg.schedule}' (allowed: cosine, constant)",
                         param="schedule")
    for key in ("new_head", "resize", "freeze"):
        if getattr(cfg, key) and not cfg.init_from:
            raise UsageError(f"{key} applies to a run started from another (--init-from RUN)",
                             param=key)
    if cfg.mix_data:
        parse_mix_data(cfg.mix_data)
        if cfg.on_the_fly or not cfg.data:
            raise UsageError("mix_data mixes another dataset into the train batches of --data's "
                             "shards; give --data DIR without --on-the-fly", param="mix_data")
    if cfg.curriculum is not None and cfg.curriculum < 0:
        raise UsageError(f"curriculum: {cfg.curriculum}; a number of samples, 0 (off) or more",
                         param="curriculum")
    if cfg.curriculum and not cfg.on_the_fly:
        raise UsageError("curriculum applies to --on-the-fly training (a stream's first "
                         "samples); a dataset's train split is as it was generated",
                         param="curriculum")
    if cfg.freeze < 0:
        raise UsageError(f"freeze: {cfg.freeze}; a number of conv blocks, 0 (none) or more",
                         param="freeze")
    if cfg.cpu_devices < 1 or cfg.epoch_samples < cfg.batch_size or cfg.val_samples < 1:
        raise UsageError("cpu_devices and --val-samples must be >= 1, --epoch-samples >= "
                         "--batch-size", param="cpu_devices")


def parse_mix_data(text: str) -> tuple[str, float]:
    """'DIR:SHARE' -> (DIR, SHARE) with 0 < SHARE < 1 (DIR may hold colons: gs://...)."""
    folder, sep, share_text = str(text).rpartition(":")
    try:
        share = float(share_text) if sep and folder else -1.0
    except ValueError:
        share = -1.0
    if not 0 < share < 1:
        raise UsageError(f"mix_data: {text!r}; write DIR:SHARE with a dataset folder and the "
                         "share of each train batch drawn from it, above 0 and below 1, e.g. "
                         "site-like:0.5", param="mix_data")
    return folder, share


def parse_duration(text: str) -> float:
    """'300', '300s', '5m', '1.5h' -> seconds (> 0)."""
    t = str(text).strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(t[-1:], None)
    try:
        v = float(t[:-1] if scale else t) * (scale or 1)
    except ValueError:
        v = -1
    if not v > 0 or not math.isfinite(v):
        raise UsageError(f"time_budget: '{text}'; give a positive duration like 300, 90s, 5m "
                         "or 1.5h", param="time_budget")
    return v


def better(row: dict, best: dict | None, top: float | None = None) -> bool:
    """Should epoch `row` replace `best` as model.keras? `top`: the highest val sequence
    accuracy so far (default: best's). An epoch within one standard error of `top`,
    sqrt(p(1-p)/n) on the row's n val samples (`val_samples`), counts as just as good, and then
    the later epoch is kept: it has trained longer, at the low end of the learning-rate
    schedule. Near 99.5 % on 1000 val samples that error is 2 samples, and in four 15-minute
    bench runs the earlier epoch kept by a stricter rule scored 5-8 samples in 10 000 worse on
    test than the last one (docs/training.md). Measured against `top`, not `best`, so a slow
    decline cannot walk model.keras down one small step at a time."""
    if best is None:
        return True
    top = max(top if top is not None else 0.0, best["val_seq_acc"])
    n = row.get("val_samples") or 0
    margin = math.sqrt(top * (1 - top) / n) if n else 0.0
    return row["val_seq_acc"] >= top - margin


def note_epoch(state: dict, row: dict) -> bool:
    """Record epoch `row` in the run state: `best` (what model.keras holds), `top` (the highest
    val sequence accuracy) and `improved` (the epoch that reached it, from which --patience
    counts, so a plateau still stops). Returns whether `row` became the best."""
    best = state["best"]
    top = state.get("top", best["val_seq_acc"] if best else None)
    keep = better(row, best, top)
    if top is None or row["val_seq_acc"] > top:
        state["improved"], state["top"] = row["epoch"], row["val_seq_acc"]
    if keep:
        state["best"] = row
    return keep


def patience_ran_out(state: dict, epoch: int, patience: int) -> bool:
    """After `epoch`: no val gain for `patience` epochs (0 = never stop)."""
    last = state.get("improved", (state["best"] or {}).get("epoch", 0))  # runs from before commit 36344ea
    return bool(patience) and epoch - last >= patience
