"""Keras callbacks of the training loop: the time budget, val metrics each epoch, and the run
state (checkpoints, history, best model, early stopping)."""

from __future__ import annotations

import glob
import math
import os
import time

import keras

from captchalab.core.storage import atomic_write
from captchalab.gen import shards as sh
from captchalab.train.config import note_epoch, patience_ran_out
from captchalab.train.rundir import CKPT_DIR, write_history_csv


class TimeBudget(keras.callbacks.Callback):
    """Stop so that the run ends `budget` seconds after `t_start` (the call to train(), plus the
    training time before an interruption when resumed): the last batch is chosen so that the end-of-epoch
    evaluation and checkpoint, timed at the previous epoch end, still fit. With the cosine
    schedule the learning rate follows cos over that time, reaching 0 at the end."""

    def __init__(self, budget: float, elapsed: float, t_start: float, peak: float, schedule: str):
        super().__init__()
        self.budget, self.elapsed0, self.t_start = budget, elapsed, t_start
        self.peak, self.schedule = peak, schedule
        self.end_cost = 0.0  # seconds the last epoch end took (evaluation, checkpoint)
        self.t_last_batch = None

    def _used(self):
        return self.elapsed0 + time.perf_counter() - self.t_start

    def on_epoch_begin(self, epoch, logs=None):
        if self.t_last_batch is not None:
            self.end_cost = time.perf_counter() - self.t_last_batch

    def on_train_batch_begin(self, batch, logs=None):
        if self.schedule == "cosine":
            frac = min(1.0, self._used() / max(self.budget - self.end_cost, 1e-9))
            self.model.optimizer.learning_rate = self.peak * 0.5 * (1 + math.cos(math.pi * frac))

    def on_train_batch_end(self, batch, logs=None):
        self.t_last_batch = time.perf_counter()
        if self._used() + self.end_cost >= self.budget:
            self.model.stop_training = True


class StepLimit(keras.callbacks.Callback):
    """Stop after `steps` optimizer steps in all (a resumed run counts the steps before its
    interruption): the last epoch is cut short there, and still evaluated and checkpointed."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.steps:
            self.model.stop_training = True


class ValMetrics(keras.callbacks.Callback):
    """Each epoch: loss and greedy-decoded accuracy on val and on a fixed train subset, added to
    the logs as val_* and train_*. `measure(ds)` returns the metrics of one dataset."""

    def __init__(self, measure, val_ds, probe_ds):
        super().__init__()
        self.measure, self.sets = measure, (("val", val_ds), ("train", probe_ds))

    def on_epoch_end(self, epoch, logs=None):
        for prefix, ds in self.sets:
            for k, v in self.measure(ds).items():
                logs[f"{prefix}_{k}"] = v
        logs.pop("train_samples")  # a fixed count; val's is used to choose the best epoch


class RunState(keras.callbacks.Callback):
    """Per epoch: checkpoint + optimizer state, history, best model, early stopping.

    Files are written under a temporary name and renamed, and state.json (which names the
    checkpoint) last, so a kill -9 at any moment leaves a consistent run to resume. Every
    worker of a cluster sees the same metrics and takes the same decisions; only the `chief`
    writes files.
    """

    def __init__(self, out: str, state: dict, t_start: float, patience: int, chief: bool,
                 report_budget: float = 0.0):
        super().__init__()
        self.out, self.state, self.t0 = out, state, t_start  # time counts from train()
        self.elapsed0 = state["elapsed"]
        self.patience, self.chief = patience, chief
        self.report_budget = report_budget  # print a line per epoch (Keras would count to 10^9)
        self.diverged = None  # the epoch whose loss became NaN/inf

    def on_train_batch_end(self, batch, logs=None):
        if logs and not math.isfinite(float(logs.get("loss", 0.0))):
            self.diverged = True  # the epoch number is filled in at epoch end
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if self.diverged or not math.isfinite(logs.get("loss", math.nan)):
            self.diverged = epoch + 1
            self.model.stop_training = True
            return  # keep the last good checkpoint
        state = self.state
        row = {"epoch": epoch + 1, "steps": int(self.model.optimizer.iterations.numpy()),
               "time": round(self.elapsed0 + time.perf_counter() - self.t0, 2),
               "wall": round(time.time(), 2), **logs}
        state["history"].append(row)
        ck_dir = os.path.join(self.out, CKPT_DIR)
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        if self.chief:
            os.makedirs(ck_dir, exist_ok=True)
            atomic_write(os.path.join(ck_dir, name), self.model.save_weights)
        if note_epoch(state, row) and self.chief:
            atomic_write(os.path.join(self.out, "model.keras"), self.model.save)
        state.update(epoch=epoch + 1, checkpoint=name, elapsed=row["time"])
        if patience_ran_out(state, epoch + 1, self.patience):
            state["stopped_early"] = True
            self.model.stop_training = True
        if not self.chief:
            return
        sh.write_json_atomic(os.path.join(ck_dir, "state.json"), state)
        for old in glob.glob(os.path.join(ck_dir, "epoch-*.weights.h5")):
            if os.path.basename(old) != name:
                os.remove(old)
        write_history_csv(self.out, state["history"])
        if self.report_budget:
            used, budget = (divmod(round(x), 60) for x in (row["time"], self.report_budget))
            print(f"epoch {epoch + 1}  {used[0]}:{used[1]:02d} of {budget[0]}:{budget[1]:02d}  "
                  f"loss {row['loss']:.3f}  val loss {row['val_loss']:.3f}  "
                  f"seq acc {row['val_seq_acc']:.4f}  char acc {row['val_char_acc']:.4f}",
                  flush=True)
