"""GPU benchmark of the default recipe: step speed, whether the input keeps the GPU fed, and
time to 99 % / 99.5 % full-sequence accuracy, in one script of a few minutes.

What it runs, in order:
1. `captchalab gen` of train/val/test sets of the default style (all cores; timed).
2. The input alone: PNG bytes in memory -> shuffled, decoded uint8 batches (a thread pool of
   OpenCV decoders, batches prefetched), img/s with no model behind it.
3. The model alone: the default model (`crnn-conv`, 80x30 fold input, jitter 1) trained on one
   fixed batch already on the host, img/s at several batch sizes, float32 and mixed precision:
   the GPU's ceiling for this model.
4. Time to accuracy: the default recipe (batch 64, Adam 3e-3, cosine decay over the run,
   jitter 1) under mixed precision, once per step budget, fed by the pipeline of 2. Val
   sequence accuracy (greedy) is measured every `--eval-every` seconds of training; the first
   time it reaches 99 % and 99.5 % is reported, and the final model is scored on the test split.
   While it trains, nvidia-smi is sampled for GPU utilisation.

Backend: whatever Keras runs on (KERAS_BACKEND). Under JAX every train step is XLA-compiled;
under TensorFlow the step is compiled with jit_compile=True. The model, loss, optimizer and
schedule are the trainer's own (`train.models.build_model`, `loss_for`); the input is this
script's numpy pipeline, not the trainer's tf.data one, so that the same script runs where
TensorFlow is not installed. Mixed precision is bfloat16 (no loss scaling needed).

Writes OUT/results.json and OUT/accuracy-vs-time.png.
Usage: KERAS_BACKEND=jax python bench/gpu.py [--budgets 60,150] [--train 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from captchalab.core.charset import Charset
from captchalab.gen import shards as sh

cv2.setNumThreads(1)  # each decoder thread decodes one batch; no nested pools


def log(*a):
    print(*a, flush=True)


def cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-m", "captchalab", *map(str, args)], check=True, env=env)


# ---------------------------------------------------------------- data

def load_split(data: str, m: dict, split: str, max_len: int):
    """PNG payloads (list of bytes), label ids [N, max_len] padded with 0, label texts."""
    pngs, ids, texts = [], [], []
    for rec in sh.iter_split(data, m, split):
        pngs.append(rec["image/png"])
        ids.append(rec["label/ids"] + [0] * (max_len - len(rec["label/ids"])))
        texts.append(rec["label/text"])
    return pngs, np.asarray(ids, np.int32), texts


def decode_into(out: np.ndarray, pngs) -> np.ndarray:
    for i, p in enumerate(pngs):
        bgr = cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR)
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out[i])
    return out


def decode_all(pngs, hw, threads: int) -> np.ndarray:
    out = np.empty((len(pngs), hw[0], hw[1], 3), np.uint8)
    step = 512
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(lambda s: decode_into(out[s:s + step], pngs[s:s + step]),
                    range(0, len(pngs), step)))
    return out


class Batches:
    """Endless shuffled (images uint8 [B,H,W,3], ids [B,L]) batches: each batch is decoded by one
    thread of a pool (OpenCV releases the GIL), `depth` batches kept in flight ahead."""

    def __init__(self, pngs, ids, hw, batch: int, threads: int, seed: int = 0, depth: int = 0):
        self.pngs, self.ids, self.hw, self.batch = pngs, ids, hw, batch
        self.threads, self.depth = threads, depth or 2 * threads
        self.rng = np.random.default_rng(seed)

    def _indices(self):
        while True:
            order = self.rng.permutation(len(self.pngs))
            for s in range(0, len(order) - self.batch + 1, self.batch):
                yield order[s:s + self.batch]

    def _job(self, idx):
        if isinstance(self.pngs, np.ndarray):  # decoded once already (--cache)
            return self.pngs[np.sort(idx)], self.ids[np.sort(idx)]
        out = np.empty((len(idx), self.hw[0], self.hw[1], 3), np.uint8)
        return decode_into(out, [self.pngs[i] for i in idx]), self.ids[idx]

    def __iter__(self):
        ex = ThreadPoolExecutor(self.threads)
        pending = queue.Queue()
        indices = self._indices()
        try:
            for _ in range(self.depth):
                pending.put(ex.submit(self._job, next(indices)))
            while True:
                batch = pending.get().result()
                pending.put(ex.submit(self._job, next(indices)))
                yield batch
        finally:
            ex.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------- measurements

class GpuSampler:
    """nvidia-smi utilisation (%) and memory (MiB) every 0.5 s while running; empty without it."""

    def __init__(self):
        self.util, self.mem, self.proc = [], [], None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits", "-lms", "500"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                u, m = (float(v) for v in line.split(","))
            except ValueError:
                continue
            self.util.append(u)
            self.mem.append(m)

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()

    def summary(self):
        if len(self.util) < 4:
            return None
        u = self.util[2:]  # the first second includes compilation
        return {"util_mean": round(float(np.mean(u)), 1), "util_median": float(np.median(u)),
                "mem_max_mib": max(self.mem), "samples": len(u)}


def input_speed(pngs, ids, hw, batch: int, threads: int, seconds: float) -> float:
    it = iter(Batches(pngs, ids, hw, batch, threads))
    for _ in range(threads):
        next(it)  # fill the pool
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(next(it)[0])
    rate = n / (time.perf_counter() - t0)
    it.close()
    return rate


def build(keras, m, charset, length, steps: int, lr: float, jit: bool):
    from captchalab.train.config import TrainConfig
    from captchalab.train.models import build_model, loss_for, resolve_arch

    d = TrainConfig()
    d.arch = resolve_arch(d.arch, "image")
    model = build_model(d.arch, (m["image"]["height"], m["image"]["width"]), d.downscale,
                        charset.num_classes, length, seed=d.seed, jitter=d.jitter,
                        resample=d.resample)
    sched = keras.optimizers.schedules.CosineDecay(lr, steps) if steps else lr
    model.compile(optimizer=keras.optimizers.Adam(sched), loss=loss_for(d.arch),
                  jit_compile=jit)
    return model


def step_speed(keras, m, charset, length, images, ids, batch: int, seconds: float, jit: bool):
    """Train steps on one fixed batch (the GPU's ceiling for this model): img/s, compile s."""
    model = build(keras, m, charset, length, 0, 1e-4, jit)
    x, y = images[:batch], ids[:batch]
    t0 = time.perf_counter()
    model.train_on_batch(x, y)
    compile_s = time.perf_counter() - t0
    for _ in range(5):
        model.train_on_batch(x, y)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            loss = model.train_on_batch(x, y)
        n += 20 * batch
    float(np.asarray(loss))  # wait for the device
    return n / (time.perf_counter() - t0), compile_s


def accuracy(model, images, texts, charset):
    from captchalab.core.ctc import decode
    from captchalab.core.metrics import summary

    logits = model.predict(images, batch_size=1000, verbose=0)
    preds, _ = decode(logits, charset)
    return summary(texts, preds)


def time_to_accuracy(keras, m, charset, length, train, val, test, budget_steps: int, lr: float,
                     batch: int, threads: int, eval_steps: int, jit: bool, max_s: float):
    """Train the default recipe for `budget_steps` steps; val accuracy every `eval_steps`."""
    keras.utils.set_random_seed(0)
    model = build(keras, m, charset, length, budget_steps, lr, jit)
    hw = (m["image"]["height"], m["image"]["width"])
    batches = Batches(*train, hw, batch, threads, seed=0)
    curve, eval_time = [], [0.0]
    t0 = time.perf_counter()

    class Eval(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            t = time.perf_counter()
            train_s = t - t0 - eval_time[0]  # compilation and input waits in, val checks out
            acc = accuracy(self.model, val[0], val[1], charset)
            eval_time[0] += time.perf_counter() - t
            n = (epoch + 1) * eval_steps
            curve.append({"steps": n, "images": n * batch, "train_s": round(train_s, 2),
                          "loss": float(logs["loss"]), "val_seq_acc": acc["seq_acc"],
                          "val_char_acc": acc["char_acc"]})
            c = curve[-1]
            log(f"  {c['train_s']:7.1f} s  {c['images']:>9,} img  loss {c['loss']:.4f}  "
                f"val seq {c['val_seq_acc']:.4f}  char {c['val_char_acc']:.4f}")

    class Guard(keras.callbacks.Callback):
        """Stop at twice the planned time should steps run slower than measured."""

        def on_epoch_end(self, epoch, logs=None):
            if curve and curve[-1]["train_s"] > 2 * max_s:
                self.model.stop_training = True

    with GpuSampler() as gpu:
        model.fit(iter(batches), steps_per_epoch=eval_steps, epochs=budget_steps // eval_steps,
                  callbacks=[Eval(), Guard()], verbose=0)
    total = time.perf_counter() - t0
    test_acc = accuracy(model, test[0], test[1], charset)
    first = {}
    for goal in (0.99, 0.995):
        hit = next((c for c in curve if c["val_seq_acc"] >= goal), None)
        first[str(goal)] = hit and {"train_s": hit["train_s"], "images": hit["images"]}
    train_s = curve[-1]["train_s"] if curve else total
    run = curve[-1]["steps"] if curve else 0
    return {"steps": budget_steps, "steps_run": run,
            "batch": batch, "lr": lr, "wall_s": round(total, 1),
            "train_s": train_s, "img_per_s": round(run * batch / train_s),
            "test": test_acc, "test_samples": len(test[1]), "first": first, "curve": curve,
            "gpu": gpu.summary()}


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, r in enumerate(runs):
        t = [c["train_s"] for c in r["curve"]]
        ax.plot(t, [c["val_seq_acc"] for c in r["curve"]], "o-", ms=3, color=f"C{i}",
                label=f"{r['steps']:,} steps: test {r['test']['seq_acc']:.4f}")
        ax.plot(t[-1], r["test"]["seq_acc"], "*", ms=12, color=f"C{i}")
    for goal in (0.99, 0.995):
        ax.axhline(goal, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="training seconds (compilation included, val measurement excluded)",
           ylabel="val full-sequence accuracy", ylim=(0.95, 1.0),
           title="default recipe on the GPU, mixed precision (* = test split at the end)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/out/gpu")
    ap.add_argument("--data", default="", help="dataset folder, regenerated (default: OUT/data)")
    ap.add_argument("--train", type=int, default=150000)
    ap.add_argument("--val", type=int, default=2000)
    ap.add_argument("--test", type=int, default=10000)
    ap.add_argument("--budgets", default="45,120",
                    help="training budgets in seconds, converted to step counts with the "
                         "speed measured in step 4's first seconds (comma list)")
    ap.add_argument("--eval-every", type=float, default=10.0, help="seconds between val checks")
    ap.add_argument("--batches", default="64,256,1024", help="batch sizes for the step speed "
                    "(float32: the first and last only)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per speed measurement")
    ap.add_argument("--batch", type=int, default=0,
                    help="batch size of the time-to-accuracy runs (default: the recipe's)")
    ap.add_argument("--lr", type=float, default=0.0,
                    help="peak learning rate of those runs (default: the recipe's)")
    ap.add_argument("--cache", action="store_true",
                    help="decode the train split into memory once (as train --cache does)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-jit", action="store_true", help="TensorFlow backend: no XLA")
    a = ap.parse_args()

    import keras

    from captchalab.train.config import TrainConfig

    d = TrainConfig()
    batch, lr = a.batch or d.batch_size or 64, a.lr or d.lr  # 0: the image default, 64
    sizes = sorted({batch, *(int(x) for x in a.batches.split(","))})
    jit = not a.no_jit
    os.makedirs(a.out, exist_ok=True)
    res = {"backend": keras.backend.backend(), "keras": keras.__version__,
           "cpus": os.cpu_count(), "args": vars(a)}
    if res["backend"] == "jax":
        import jax
        res["jax"] = jax.__version__
        res["devices"] = [str(x) for x in jax.devices()]
    elif res["backend"] == "tensorflow":
        import tensorflow as tf
        res["tensorflow"] = tf.__version__
        res["devices"] = [x.name for x in tf.config.list_logical_devices("GPU")]
    if shutil.which("nvidia-smi"):
        res["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                     "--format=csv,noheader"], capture_output=True,
                                    text=True).stdout.strip()
    log(f"backend {res['backend']} (keras {res['keras']}), devices {res.get('devices')}, "
        f"{res.get('gpu', 'no nvidia-smi')}, {res['cpus']} CPUs")

    # 1. data
    data = a.data or os.path.join(a.out, "data")
    shutil.rmtree(data, ignore_errors=True)
    t0 = time.perf_counter()
    cli("gen", "--out", data, "--train", a.train, "--val", a.val, "--test", a.test, "-q")
    gen_s = time.perf_counter() - t0
    n_all = a.train + a.val + a.test
    res["gen"] = {"samples": n_all, "seconds": round(gen_s, 1), "img_per_s": round(n_all / gen_s)}
    log(f"gen: {n_all:,} samples in {gen_s:.1f} s ({n_all / gen_s:,.0f} img/s, {res['cpus']} "
        "processes)")
    m = sh.read_manifest(data)
    charset = Charset.from_json(m["charset"])
    length = tuple(m["length"])
    hw = (m["image"]["height"], m["image"]["width"])
    t0 = time.perf_counter()
    tr_png, tr_ids, _ = load_split(data, m, "train", length[1])
    va_png, _, va_txt = load_split(data, m, "val", length[1])
    te_png, _, te_txt = load_split(data, m, "test", length[1])
    val_x, test_x = decode_all(va_png, hw, a.threads), decode_all(te_png, hw, a.threads)
    if a.cache:
        tr_png = decode_all(tr_png, hw, a.threads)
    log(f"read {len(tr_png) + len(va_png) + len(te_png):,} records, decoded val + test"
        f"{' + train' if a.cache else ''} in {time.perf_counter() - t0:.1f} s")

    # 2. input alone
    res["input"] = {}
    for b in sorted({batch, 256}):
        r = input_speed(tr_png, tr_ids, hw, b, a.threads, a.seconds)
        res["input"][str(b)] = round(r)
        log(f"input pipeline, batch {b}: {r:,.0f} img/s ({a.threads} decoder threads)")

    # 3. model alone, on one fixed batch
    sample = (tr_png[:sizes[-1]] if a.cache else decode_all(tr_png[:sizes[-1]], hw, a.threads))
    res["steps"] = []
    plan = [("float32", b, jit) for b in sorted({sizes[0], sizes[-1]})]
    plan += [("mixed_bfloat16", b, jit) for b in sizes]
    if res["backend"] == "tensorflow" and jit:  # JAX compiles every step whatever jit says
        plan += [(p, batch, False) for p in ("float32", "mixed_bfloat16")]
    for policy, b, xla in plan:
        keras.mixed_precision.set_global_policy(policy)
        rate, comp = step_speed(keras, m, charset, length, sample, tr_ids, b, a.seconds, xla)
        res["steps"].append({"policy": policy, "batch": b, "xla": xla or res["backend"] == "jax",
                             "img_per_s": round(rate), "compile_s": round(comp, 1)})
        log(f"train step, {policy:14s} batch {b:5d}{'' if xla else ' no XLA'}: {rate:9,.0f} "
            f"img/s (first step {comp:.1f} s)")

    # 4. time to accuracy, default recipe, mixed precision
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    fed = min(res["input"][str(batch)],
              next(s["img_per_s"] for s in res["steps"]
                   if s["policy"] == "mixed_bfloat16" and s["batch"] == batch and s["xla"] == jit))
    steps_per_s = fed / batch
    eval_steps = max(1, int(a.eval_every * steps_per_s))
    res["runs"] = []
    for budget in (float(x) for x in a.budgets.split(",")):
        steps = max(eval_steps, int(budget * steps_per_s) // eval_steps * eval_steps)
        log(f"time to accuracy: {steps:,} steps of {batch}, lr {lr:g} (~{budget:g} s at "
            f"{fed:,.0f} img/s), val every {eval_steps} steps")
        r = time_to_accuracy(keras, m, charset, length, (tr_png, tr_ids), (val_x, va_txt),
                             (test_x, te_txt), steps, lr, batch, a.threads, eval_steps,
                             jit, budget)
        r["budget_s"] = budget
        res["runs"].append(r)
        log(f"  -> test seq {r['test']['seq_acc']:.4f} char {r['test']['char_acc']:.4f} on "
            f"{r['test_samples']:,}; {r['img_per_s']:,} img/s in training; first >= 0.99 / "
            f"0.995 on val: {r['first']['0.99']} / {r['first']['0.995']}; gpu {r['gpu']}")
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump(res, f, indent=1)
    keras.mixed_precision.set_global_policy("float32")
    plot(res["runs"], os.path.join(a.out, "accuracy-vs-time.png"))
    shutil.rmtree(data, ignore_errors=True)
    log(json.dumps({k: v for k, v in res.items() if k != "runs"}))


if __name__ == "__main__":
    main()
