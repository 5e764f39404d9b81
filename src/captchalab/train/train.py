"""`captchalab train`: shards or a live stream -> tf.data -> model; val metrics every epoch;
atomic checkpoints with optimizer state so a killed run resumes where it stopped."""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields

from captchalab.charset import Charset
from captchalab.errors import RunFailed, UsageError
from captchalab.gen import shards as sh
from captchalab.train.models import RESAMPLE

EVAL_BATCH = 256  # images per prediction batch when measuring accuracy
CKPT_DIR = "checkpoints"  # epoch-NNNN.weights.h5 (model + optimizer state) and state.json
PROBE_START = 10**12  # on the fly: train-accuracy samples come from this index on
WORKER_STRIDE = 10**10  # on the fly, several workers: worker w renders from index w * this on


@dataclass
class TrainConfig:
    data: str = ""  # dataset folder made by `captchalab gen` / `import`
    out: str = ""  # run directory
    arch: str = "crnn-conv"  # see train.models.ARCHS
    epochs: int = 20  # passes over the train split (on the fly: of epoch_samples)
    steps: int = 0  # optimizer steps in all; overrides epochs when > 0
    time_budget: float = 0.0  # seconds of training; overrides epochs/steps when > 0
    batch_size: int = 64  # images per step
    lr: float = 3e-3  # peak learning rate (Adam)
    schedule: str = "cosine"  # cosine decay to 0 over the run, or constant
    downscale: int = 2  # input at 1/downscale resolution (160x60 -> 80x30)
    resample: str = "fold"  # fold: stack each d x d block as d*d channels; box: average it
    seed: int = 0
    patience: int = 0  # early stopping on val sequence accuracy; 0 = off
    train_eval_samples: int = 512  # train samples decoded each epoch for train accuracy
    augment: bool = False  # random shifts, zoom and contrast on training batches
    dropout: float = 0.0  # CTC archs: dropout on the column features entering the RNN
    jitter: int = 1  # random shifts of up to N px (dataset resolution) on training batches
    cache: bool = False  # decode the train split into memory once, before training
    mixed_precision: bool = False  # float16 compute on GPU, bfloat16 on CPU; logits stay float32
    jit: bool = False  # XLA-compile the train step (helps on GPU; slower on CPU here)
    cpu_devices: int = 1  # split the CPU into N logical devices (tests distribution on CPU)
    on_the_fly: bool = False  # train on freshly rendered samples, never repeating one
    style: str = ""  # on the fly without --data: the preset to render
    epoch_samples: int = 20000  # on the fly: samples per epoch
    val_samples: int = 1000  # on the fly without --data: val samples rendered in memory
    gen_workers: int = 0  # on the fly: render processes (0 = all cores)

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{**BEFORE, **{k: v for k, v in d.items() if k in known}})


# settings added since the first release, as runs that predate them were trained (--resume)
BEFORE = {"jitter": 0, "resample": "box"}


# ---------------------------------------------------------------- data sources

def _source(cfg: TrainConfig) -> tuple[dict, dict | None]:
    """(meta with charset/length/image/splits, recipe to stream from or None)."""
    from captchalab.gen.generate import RECIPE_KEYS

    if cfg.style and not cfg.on_the_fly:
        raise UsageError("--style applies to --on-the-fly training; a --data set has its own style")
    if cfg.data:
        if cfg.style:
            raise UsageError("--style with --data: the stream uses the dataset's own recipe; "
                             "give one of them")
        m = sh.read_manifest(cfg.data)
        need = ("val",) if cfg.on_the_fly else ("train", "val")
        for split in need:
            if split not in m["splits"]:
                raise UsageError(f"--data {cfg.data} has no {split} split; generate one with "
                                 f"'captchalab gen --{split} N'")
        if cfg.on_the_fly and not all(k in m for k in RECIPE_KEYS):
            raise UsageError(f"--on-the-fly re-renders from the recipe of a generated dataset; "
                             f"{cfg.data} was imported and has none")
        return m, (m if cfg.on_the_fly else None)
    if not cfg.on_the_fly:
        raise UsageError("give --data DIR (a dataset from 'captchalab gen') or --on-the-fly")
    from captchalab.gen.stream import stream_recipe

    recipe = stream_recipe(style=cfg.style or "default", seed=cfg.seed)
    w, h = recipe["size"]
    return {"charset": recipe["charset"], "length": recipe["length"],
            "image": {"width": w, "height": h}, "splits": {}}, recipe


def _check_options(cfg: TrainConfig) -> None:
    if cfg.downscale < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise UsageError("--downscale and --batch-size must be >= 1 and --lr > 0")
    if cfg.resample not in RESAMPLE:
        raise UsageError(f"--resample: unknown '{cfg.resample}' (allowed: {', '.join(RESAMPLE)})")
    if not 0 <= cfg.jitter <= 8:
        raise UsageError(f"--jitter: {cfg.jitter}; a shift in pixels from 0 (off) to 8")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UsageError(f"--dropout: {cfg.dropout}; a rate from 0 (off) to below 1")
    if cfg.schedule not in ("cosine", "constant"):
        raise UsageError(f"--schedule: unknown '{cfg.schedule}' (allowed: cosine, constant)")
    if cfg.cpu_devices < 1 or cfg.epoch_samples < cfg.batch_size or cfg.val_samples < 1:
        raise UsageError("--cpu-devices and --val-samples must be >= 1, --epoch-samples >= "
                         "--batch-size")


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
    last = state.get("improved", (state["best"] or {}).get("epoch", 0))  # runs before session 9
    return bool(patience) and epoch - last >= patience


# ---------------------------------------------------------------- run directory

def prepare_run_dir(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file; give a folder for the run")
    if os.path.isdir(out) and os.listdir(out):
        raise UsageError(f"--out {out} is not empty; give a new run folder (or --resume it)")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write-test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"--out {out} is not writable: {e.strerror}") from None


def read_run_config(run: str) -> dict:
    path = os.path.join(run, "config.json")
    if not os.path.isfile(path):
        raise UsageError(f"{run} is not a captchalab run (no config.json)")
    with open(path) as f:
        return json.load(f)


def _read_state(run: str) -> dict:
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
    state = _read_state(out)
    if state["done"]:
        raise UsageError(f"--resume: {out} already finished ({state['epoch']} epochs); "
                         "start a new run to train further")
    if data:
        m = sh.read_manifest(data)
        for what, get in (("charset", lambda d: d["charset"]["chars"]),
                          ("label length", lambda d: d["length"]),
                          ("image size", lambda d: (d["image"]["width"], d["image"]["height"]))):
            have, want = get(m), get(stored)
            if have != want:
                raise UsageError(f"--resume: {data} has {what} {have!r} but {out} was trained on "
                                 f"{want!r}")
        cfg.data = data
    return cfg


def _atomic(path: str, write) -> None:
    """write(tmp) to a temporary name beside `path`, then rename it into place.

    The name starts with tmp- (and keeps the suffix Keras checks), so a run resumed after a kill
    removes any half-written leftover."""
    tmp = os.path.join(os.path.dirname(path), "tmp-" + os.path.basename(path))
    write(tmp)
    os.replace(tmp, path)


def _write_history_csv(run: str, history: list[dict]) -> None:
    first = ["epoch", "steps", "time", "wall"]
    keys = first + sorted({k for r in history for k in r} - set(first))

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, keys)
            w.writeheader()
            w.writerows(history)

    _atomic(os.path.join(run, "history.csv"), write)


def _plot_history(run_dir: str, history: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

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


# ---------------------------------------------------------------- devices

def cluster_role() -> dict | None:
    """This process's place in a TF_CONFIG cluster naming several tasks, else None.

    Returns {"workers": n, "index": i, "chief": bool}: index 0 is the `chief` task when the
    cluster has one, otherwise worker 0 (TensorFlow's own convention).
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        conf = json.loads(raw)
        cluster, task = conf["cluster"], conf.get("task", {})
        order = ([("chief", k) for k in range(len(cluster.get("chief", [])))]
                 + [("worker", k) for k in range(len(cluster.get("worker", [])))])
        me = (task.get("type"), int(task.get("index", 0)))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"TF_CONFIG is not a cluster spec like {{\"cluster\": {{\"worker\": "
                         f"[\"host:port\", …]}}, \"task\": {{\"type\": \"worker\", \"index\": 0}}}} "
                         f"({type(e).__name__}: {e})") from None
    if len(order) < 2:
        return None
    if me not in order:
        raise UsageError(f"TF_CONFIG: this task ({me[0]} {me[1]}) is not one of the cluster's "
                         f"{len(order)} chief/worker tasks")
    i = order.index(me)
    return {"workers": len(order), "index": i, "chief": i == 0}


def _configure_devices(tf, cpu_devices: int, cluster: dict | None):
    """Distribution strategy for what is visible: a TF_CONFIG cluster -> MultiWorkerMirrored;
    several GPUs (or logical CPUs) -> Mirrored."""
    if cluster:  # must come before any other TensorFlow op
        return tf.distribute.MultiWorkerMirroredStrategy()
    if cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_devices)])
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


# ---------------------------------------------------------------- training

def parse_duration(text: str) -> float:
    """'300', '300s', '5m', '1.5h' -> seconds (> 0)."""
    t = str(text).strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(t[-1:], None)
    try:
        v = float(t[:-1] if scale else t) * (scale or 1)
    except ValueError:
        v = -1
    if not v > 0 or not math.isfinite(v):
        raise UsageError(f"--time-budget: '{text}'; give a positive duration like 300, 90s, 5m "
                         "or 1.5h")
    return v


def _time_budget_callback(keras):
    class TimeBudget(keras.callbacks.Callback):
        """Stop so that the run ends `budget` seconds after `t_start` (the call to train(),
        plus the time of earlier sessions when resumed): the last batch is chosen so that the
        end-of-epoch evaluation and checkpoint, timed at the previous epoch end, still fit.
        With the cosine schedule the learning rate follows cos over that time, reaching 0 at
        the end."""

        def __init__(self, budget, elapsed, t_start, peak, schedule):
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

    return TimeBudget


def train(cfg: TrainConfig, command: str = "", verbose: int = 1, resume: bool = False,
          callbacks=()) -> dict:
    """Train and write the run directory; returns the best epoch's metrics.

    resume: continue `cfg.out` from its last checkpoint (cfg from `resume_config`).
    callbacks: extra Keras callbacks (benchmarks use them to time epochs).
    """
    from captchalab.train.models import check_data, model_shape

    t_start = time.perf_counter()
    _check_options(cfg)
    m, recipe = _source(cfg)
    charset = Charset.from_json(m["charset"])
    length = tuple(m["length"])
    shape = model_shape((m["image"]["height"], m["image"]["width"]), cfg.downscale,
                        cfg.resample)
    check_data(cfg.arch, shape, length)  # refuse before anything is written
    cluster = cluster_role()
    if cluster:
        _check_cluster(cfg, m, recipe, cluster)
    if not resume:
        if cluster is None or cluster["chief"]:
            prepare_run_dir(cfg.out)
        elif os.path.exists(os.path.join(cfg.out, CKPT_DIR, "state.json")):
            raise UsageError(f"--out {cfg.out} already holds a run; give a new run folder "
                             "(or --resume it, on every worker)")
    state = _read_state(cfg.out)

    from captchalab.tfimport import import_tensorflow

    tf = import_tensorflow()
    import keras

    strategy = _configure_devices(tf, cfg.cpu_devices, cluster)
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy(
            "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16")
    try:
        return _fit(cfg, command, verbose, m, recipe, charset, length, shape, state, strategy,
                    list(callbacks), tf, keras, t_start, cluster)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _check_cluster(cfg: TrainConfig, m: dict, recipe: dict | None, cluster: dict) -> None:
    n = cluster["workers"]
    if cfg.time_budget:
        raise UsageError(f"--time-budget with {n} workers (TF_CONFIG): each would stop on its own "
                         "clock; give --epochs or --steps")
    if cfg.cpu_devices > 1:
        raise UsageError("--cpu-devices splits one process's CPU; with TF_CONFIG every worker "
                         "process is one device")
    if recipe is None:
        train = m["splits"]["train"]
        if len(train["shards"]) < n:
            raise UsageError(
                f"--data {cfg.data}: its train split has {len(train['shards'])} shards for {n} "
                f"workers, and each worker reads whole shards; regenerate it with --shard-size "
                f"{max(1, train['count'] // n)} or less")


def _multi_worker_fit_fixes(model, strategy, train_ds, tf) -> None:
    """Let Keras 3's fit() run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Keras reduces a whole distributed batch with strategy.reduce() only to learn its shapes,
    and reduces each step's scalar logs over axis 0; both fail across workers. So the model,
    loss and optimizer are built here from the dataset's shapes, and the train function runs
    Keras' own train_step on every replica and averages its logs over workers.
    """
    batch = tuple(tf.zeros([1, *spec.shape[1:]], spec.dtype) for spec in train_ds.element_spec)
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

    @tf.function
    def train_function(iterator):
        logs = strategy.run(model.train_step, args=(next(iterator),))
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in logs.items()}

    model.train_function = train_function


def _fit(cfg, command, verbose, m, recipe, charset, length, shape, state, strategy, extra, tf,
         keras, t_start, cluster):

    from captchalab.eval.metrics import summary
    from captchalab.train import ctc
    from captchalab.train import input as inp
    from captchalab.train.models import build_model, kind, loss_for

    model_kind = kind(cfg.arch)
    workers = cfg.gen_workers or os.cpu_count() or 1
    if recipe is not None:
        steps_per_epoch = max(1, cfg.epoch_samples // cfg.batch_size)
    else:
        steps_per_epoch = max(1, m["splits"]["train"]["count"] // cfg.batch_size)
    epochs = math.ceil(cfg.steps / steps_per_epoch) if cfg.steps > 0 else cfg.epochs
    if cfg.time_budget > 0:
        epochs = 10**9  # until the budget is spent
    total_steps = cfg.steps if cfg.steps > 0 else epochs * steps_per_epoch
    first_epoch = state["epoch"]

    keras.utils.set_random_seed(cfg.seed + first_epoch)  # a resumed run draws new shuffles
    with strategy.scope():
        model = build_model(cfg.arch, (m["image"]["height"], m["image"]["width"]), cfg.downscale,
                            charset.num_classes, length, augment=cfg.augment, seed=cfg.seed,
                            dropout=cfg.dropout, jitter=cfg.jitter,
                            resample=cfg.resample)
        lr = (keras.optimizers.schedules.CosineDecay(cfg.lr, total_steps)
              if cfg.schedule == "cosine" and not cfg.time_budget else cfg.lr)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss_for(cfg.arch),
                      jit_compile=cfg.jit)
        if state["checkpoint"]:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(os.path.join(cfg.out, CKPT_DIR, state["checkpoint"]))
    chief = cluster is None or cluster["chief"]  # only the chief writes the run directory
    if chief:
        for tmp in glob.glob(os.path.join(cfg.out, "**", "tmp-*"), recursive=True):
            os.remove(tmp)  # half-written files of a killed run

    worker, n_workers = (cluster["index"], cluster["workers"]) if cluster else (0, 1)
    if recipe is not None:
        # past the dataset's own train samples, and past what earlier epochs of this run saw
        # (each worker of a cluster in its own range of indices)
        start = (m["splits"].get("train", {}).get("count", 0) + worker * WORKER_STRIDE
                 + first_epoch * steps_per_epoch * cfg.batch_size // n_workers)
        train_ds = inp.stream_dataset(recipe, "train", start=start, batch_size=cfg.batch_size,
                                      workers=workers)
    else:
        train_ds = inp.shard_dataset(cfg.data, m, "train", batch_size=cfg.batch_size,
                                     training=True, seed=cfg.seed, cache=cfg.cache,
                                     shard=(worker, n_workers))
    if cluster:
        # the global batch is split between the workers, each from its own shards
        train_ds = inp.already_split(train_ds)
        _multi_worker_fit_fixes(model, strategy, train_ds, tf)
    if cfg.data:
        val_ds = inp.shard_dataset(cfg.data, m, "val", batch_size=EVAL_BATCH, training=False)
    else:  # rendered once, kept in memory
        val_ds = inp.stream_dataset(recipe, "val", start=0, stop=cfg.val_samples,
                                    batch_size=EVAL_BATCH, workers=workers,
                                    training=False).cache()
    if recipe is None:  # a fixed subset of train, read in a fixed order
        probe_ds = inp.shard_dataset(cfg.data, m, "train", batch_size=EVAL_BATCH, training=False)
    else:  # a fixed slice of the stream's split, far past any index training reaches
        probe_ds = inp.stream_dataset(recipe, "train", start=PROBE_START,
                                      stop=PROBE_START + cfg.train_eval_samples,
                                      batch_size=EVAL_BATCH, workers=0, training=False)
    probe_ds = probe_ds.unbatch().take(cfg.train_eval_samples).batch(EVAL_BATCH).cache()

    if chief and not state["history"]:
        config = {"charset": charset.to_json(), "image": m["image"],
                  "input": {"format": "uint8 RGB [B,H,W,3] at the image size", "version": 2},
                  "model_shape": list(shape),
                  "max_length": length[1], "length": list(length), "arch": cfg.arch,
                  "kind": model_kind, "train": asdict(cfg),
                  "dataset": os.path.abspath(cfg.data) if cfg.data else None,
                  "recipe": ({k: recipe[k] for k in ("charset", "length", "size", "style_name",
                                                     "style", "fonts", "seed")}
                             if recipe is not None else None),
                  "strategy": "MultiWorkerMirroredStrategy" if cluster else type(strategy).__name__,
                  "replicas": strategy.num_replicas_in_sync,
                  "workers": cluster["workers"] if cluster else 1,
                  "precision": keras.mixed_precision.global_policy().name,
                  "command": command, "versions": {"tensorflow": tf.__version__,
                                                   "keras": keras.__version__}}
        with open(os.path.join(cfg.out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)

    # One compiled forward pass on the default device whatever the strategy, for loss and
    # accuracy together (Keras' own validation under MirroredStrategy fails on a last batch
    # smaller than the replica count, and would run the val set a second time).
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    loss_fn = loss_for(cfg.arch)

    def measure(ds):
        truths, preds, loss = [], [], 0.0
        for ids, logits, batch_truths, texts, _ in ctc.decode_batches(forward, ds, model_kind,
                                                                       charset):
            loss += float(loss_fn(ids, logits)) * len(texts)
            truths.extend(batch_truths)
            preds.extend(texts)
        return {"loss": loss / max(len(truths), 1), **summary(truths, preds),
                "samples": len(truths)}

    class Accuracy(keras.callbacks.Callback):
        """Val (and a fixed train subset): loss and greedy-decoded accuracy, added to the logs."""

        def on_epoch_end(self, epoch, logs=None):
            for prefix, ds in (("val", val_ds), ("train", probe_ds)):
                for k, v in measure(ds).items():
                    logs[f"{prefix}_{k}"] = v
            logs.pop("train_samples")  # a fixed count; val's is used to choose the best epoch

    class RunState(keras.callbacks.Callback):
        """Per epoch: checkpoint + optimizer state, history, best model, early stopping.

        Files are written under a temporary name and renamed, and state.json (which names the
        checkpoint) last, so a kill -9 at any moment leaves a consistent run to resume.
        """

        def __init__(self):
            super().__init__()
            self.t0 = t_start  # training time counts from the call to train()
            self.elapsed0 = state["elapsed"]
            self.diverged = None
            self.report = bool(verbose and cfg.time_budget)  # Keras would count to epoch 10^9

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
            row = {"epoch": epoch + 1, "steps": int(self.model.optimizer.iterations.numpy()),
                   "time": round(self.elapsed0 + time.perf_counter() - self.t0, 2),
                   "wall": round(time.time(), 2), **logs}
            state["history"].append(row)
            # every worker of a cluster sees the same metrics, so takes the same decisions
            # below; only the chief writes files
            ck_dir = os.path.join(cfg.out, CKPT_DIR)
            name = f"epoch-{epoch + 1:04d}.weights.h5"
            if chief:
                os.makedirs(ck_dir, exist_ok=True)
                _atomic(os.path.join(ck_dir, name), self.model.save_weights)
            if note_epoch(state, row) and chief:
                _atomic(os.path.join(cfg.out, "model.keras"), self.model.save)
            state.update(epoch=epoch + 1, checkpoint=name, elapsed=row["time"])
            if patience_ran_out(state, epoch + 1, cfg.patience):
                state["stopped_early"] = True
                self.model.stop_training = True
            if not chief:
                return
            sh.write_json_atomic(os.path.join(ck_dir, "state.json"), state)
            for old in glob.glob(os.path.join(ck_dir, "epoch-*.weights.h5")):
                if os.path.basename(old) != name:
                    os.remove(old)
            _write_history_csv(cfg.out, state["history"])
            if self.report:
                used, budget = (divmod(round(x), 60) for x in (row["time"], cfg.time_budget))
                print(f"epoch {epoch + 1}  {used[0]}:{used[1]:02d} of {budget[0]}:{budget[1]:02d}  "
                      f"loss {row['loss']:.3f}  val loss {row['val_loss']:.3f}  "
                      f"seq acc {row['val_seq_acc']:.4f}  char acc {row['val_char_acc']:.4f}",
                      flush=True)

    run_state = RunState()
    TimeBudget = _time_budget_callback(keras)
    cbs = ([TimeBudget(cfg.time_budget, state["elapsed"], t_start, cfg.lr, cfg.schedule)]
           if cfg.time_budget else [])
    cbs += [Accuracy(), run_state, *extra]
    if chief:
        cbs.append(keras.callbacks.TensorBoard(os.path.join(cfg.out, "tensorboard"),
                                               write_graph=False))
    if first_epoch < epochs:
        try:
            model.fit(train_ds, epochs=epochs, initial_epoch=first_epoch,
                      steps_per_epoch=steps_per_epoch, callbacks=cbs,
                      verbose=0 if cfg.time_budget else verbose,
                      shuffle=False)
        except tf.errors.OpError as e:
            if cluster is None:
                raise
            # a peer died: TensorFlow's health check aborts the collectives (~15 s here)
            raise RunFailed(f"worker {cluster['index']} of {cluster['workers']}: the cluster "
                            f"failed ({type(e).__name__} in a collective op: did another "
                            f"worker stop?); restart every worker with --resume to continue "
                            f"from the last checkpoint (epoch {state['epoch']})") from None
    if run_state.diverged:
        last = (f"the last good checkpoint (epoch {state['epoch']}) is kept in "
                f"{cfg.out}/{CKPT_DIR}" if state["checkpoint"] else "no epoch finished")
        raise RunFailed(f"training stopped in epoch {run_state.diverged}: the loss became NaN/inf; "
                        f"{last}; try a lower --lr")
    state["done"] = True
    if chief:
        sh.write_json_atomic(os.path.join(cfg.out, CKPT_DIR, "state.json"), state)
        _plot_history(cfg.out, state["history"])
    if state["best"] is None:
        raise RunFailed("no epoch finished")
    return dict(state["best"])
