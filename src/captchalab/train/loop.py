"""The training loop: devices, input, model, callbacks, fit. Called by `train.train` once every
check has passed; importing this module loads TensorFlow."""

from __future__ import annotations

import glob
import json
import math
import os
import warnings
from dataclasses import asdict

from captchalab.core.tfimport import import_tensorflow

tf = import_tensorflow()

import keras  # noqa: E402 - after TensorFlow, whose start-up chatter import_tensorflow hides

from captchalab.core import ctc  # noqa: E402
from captchalab.core.charset import Charset  # noqa: E402
from captchalab.core.errors import RunFailed  # noqa: E402
from captchalab.core.metrics import summary  # noqa: E402
from captchalab.core.runconfig import CONFIG_VERSION, INPUT_VERSION  # noqa: E402
from captchalab.gen import shards as sh  # noqa: E402
from captchalab.gen.fonts import file_sha256  # noqa: E402
from captchalab.train import input as inp  # noqa: E402
from captchalab.train.callbacks import RunState, StepLimit, TimeBudget, ValMetrics  # noqa: E402
from captchalab.train.config import (  # noqa: E402
    MIN_BUDGET_EPOCH_STEPS,
    TrainConfig,
    parse_mix_data,
)
from captchalab.train.models import (  # noqa: E402
    build_audio_model,
    build_model,
    freeze_blocks,
    kind,
    loss_for,
)
from captchalab.train.rundir import CKPT_DIR, plot_history  # noqa: E402

EVAL_BATCH = 256  # images per prediction batch when measuring accuracy
AUDIO_EVAL_BATCH = 32  # audio clips per batch (~20 s each: a batch of 256 needs ~8 GB)


def eval_batch(m: dict) -> int:
    return AUDIO_EVAL_BATCH if m.get("kind") == "audio" else EVAL_BATCH
PROBE_START = 10**12  # on the fly: train-accuracy samples come from this index on
WORKER_STRIDE = 10**10  # on the fly, several workers: worker w renders from index w * this on


def configure_devices(cpu_devices: int, cluster: dict | None):
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


def multi_worker_fit_fixes(model, strategy, train_ds) -> None:
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


def datasets(cfg: TrainConfig, m: dict, frame: dict, recipe: dict | None, first_epoch: int,
             steps_per_epoch: int, worker: int, n_workers: int, mix_m: dict | None = None):
    """(train, val, probe) tf.data datasets; probe is a fixed subset of train samples for the
    train accuracy of each epoch. All three in the model's `frame` (inp.adapt). `mix_m`: the
    manifest of cfg.mix_data, whose train split supplies its share of every train batch."""
    workers = cfg.gen_workers or os.cpu_count() or 1
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
    if cfg.data:
        val_ds = inp.shard_dataset(cfg.data, m, "val", batch_size=eval_batch(m), training=False)
    else:  # rendered once, kept in memory
        val_ds = inp.stream_dataset(recipe, "val", start=0, stop=cfg.val_samples,
                                    batch_size=eval_batch(m), workers=workers,
                                    training=False).cache()
    if recipe is None:  # a fixed subset of train, read in a fixed order
        probe_ds = inp.shard_dataset(cfg.data, m, "train", batch_size=eval_batch(m),
                                     training=False)
    else:  # a fixed slice of the stream's split, far past any index training reaches
        probe_ds = inp.stream_dataset(recipe, "train", start=PROBE_START,
                                      stop=PROBE_START + cfg.train_eval_samples,
                                      batch_size=eval_batch(m), workers=0, training=False)
    probe_ds = inp.rebatch(probe_ds, cfg.train_eval_samples, eval_batch(m)).cache()
    train_ds, val_ds, probe_ds = (inp.adapt(ds, m, frame) for ds in (train_ds, val_ds, probe_ds))
    if mix_m is not None:
        path, share = parse_mix_data(cfg.mix_data)
        other = inp.shard_dataset(path, mix_m, "train", batch_size=cfg.batch_size,
                                  training=True, seed=cfg.seed + 1, cache=cfg.cache,
                                  shard=(worker, n_workers))
        train_ds = inp.mix_batches(train_ds, inp.adapt(other, mix_m, frame), share,
                                   cfg.batch_size, m["length"][1], seed=cfg.seed)
    if cfg.jit and "audio" in frame:  # a compiled step per band, not per batch length
        train_ds = train_ds.map(inp.pad_to_band)
    return train_ds, val_ds, probe_ds


def run_config(cfg: TrainConfig, m: dict, frame: dict, recipe: dict | None, shape,
               strategy, cluster: dict | None, command: str) -> dict:
    """config.json: everything `eval`, `predict` and `export` need besides model.keras.
    `data_format`: the training data's charset and image size where they differ from the
    model's (a run started from another: a subset charset, resized images); `inference`: the
    widths and blurs it is read at, a run started from another's (frame)."""
    length = m["length"]
    if m.get("kind") == "audio":
        from captchalab.train.models import AUDIO_FRONT, audio_stride
        what = {"data_kind": "audio", "audio": frame["audio"],
                "data_format": {"charset": m["charset"], "audio": m["audio"]},
                "input": {"format": "uint8 PCM [B,N] at 8 kHz (8-bit unsigned, padded with 128) "
                                    "and clip lengths [B] int32", "version": INPUT_VERSION},
                "front_end": {**AUDIO_FRONT, "stride": audio_stride(cfg.arch)}}
    else:
        what = {"data_kind": "image", "image": frame["image"],
                "data_format": {"charset": m["charset"], "image": m["image"]},
                "input": {"format": "uint8 RGB [B,H,W,3] at the image size",
                          "version": INPUT_VERSION}, "model_shape": list(shape)}
    views = {"inference": frame["inference"]} if frame.get("inference") else {}
    return {"config_version": CONFIG_VERSION, "charset": frame["charset"], **what, **views,
            "max_length": length[1], "length": list(length),
            "arch": cfg.arch, "kind": kind(cfg.arch), "train": asdict(cfg),
            "dataset": os.path.abspath(cfg.data) if cfg.data else None,
            "init_from": ({"run": os.path.abspath(cfg.init_from),
                           "config_sha256": file_sha256(os.path.join(cfg.init_from,
                                                                     "config.json"))}
                          if cfg.init_from else None),
            "recipe": ({k: v for k, v in recipe.to_json().items()
                        if k not in ("shard_size", "counts")} if recipe is not None else None),
            "strategy": "MultiWorkerMirroredStrategy" if cluster else type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "workers": cluster["workers"] if cluster else 1,
            "precision": keras.mixed_precision.global_policy().name,
            "command": command, "versions": {"tensorflow": tf.__version__,
                                             "keras": keras.__version__}}


def compiled_loss(arch: str):
    """The loss of `arch` as one compiled function for every batch size and length. Run eagerly,
    the CTC loss of one batch of 32 audio clips took ~0.2 s, 20x its compiled cost and more than
    the forward pass (2026-12-07: a third of an audio epoch). Traced per shape instead (even
    with reduce_retracing), a trace shared the CTC loop's body with fit()'s trace of another
    batch size, and TensorFlow's graph optimiser printed "error: 'tfg.While' op body function
    argument ... is not compatible" on stderr of every run (harmless, and alarming)."""
    fn, traced = loss_for(arch), {}

    def loss(ids, logits):
        key = (ids.dtype, logits.dtype, ids.shape.rank, logits.shape.rank)
        if key not in traced:
            traced[key] = tf.function(fn, input_signature=[
                tf.TensorSpec([None] * ids.shape.rank, ids.dtype),
                tf.TensorSpec([None] * logits.shape.rank, logits.dtype)])
        return traced[key](ids, logits)

    return loss


def metric_fn(model, arch: str, charset: Charset):
    """measure(ds) -> val loss, greedy sequence/character accuracy, CER and sample count.

    One compiled forward pass on the default device whatever the strategy, for loss and accuracy
    together (Keras' own validation under MirroredStrategy fails on a last batch smaller than the
    replica count, and would run the val set a second time)."""
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    loss_fn = compiled_loss(arch)

    def measure(ds):
        truths, preds, loss = [], [], 0.0
        for ids, logits, batch_truths, texts, _ in ctc.decode_batches(forward, ds, kind(arch),
                                                                       charset):
            loss += float(loss_fn(ids, logits)) * len(texts)
            truths.extend(batch_truths)
            preds.extend(texts)
        return {"loss": loss / max(len(truths), 1), **summary(truths, preds),
                "samples": len(truths)}

    return measure


def init_weights(model, cfg: TrainConfig) -> None:
    """Weights of the run `cfg.init_from`: all of them, or all but the output layer (new_head,
    left as built: the layers with weights correspond in order, both models being built from
    the same arch)."""
    path = os.path.join(cfg.init_from, "model.keras")
    if not cfg.new_head:
        with warnings.catch_warnings():  # its optimizer state is left behind, on purpose
            warnings.filterwarnings("ignore", message="Skipping variable loading for optim")
            model.load_weights(path)
        return
    import captchalab.core.layers  # noqa: F401  (registers Preprocess for deserialisation)

    source = keras.models.load_model(path, compile=False)

    def weighted(m):  # jitter and augmentation layers (options of either run) hold no weights
        return [layer for layer in m.layers if layer.weights and layer.name != "logits"]

    for new, old in zip(weighted(model), weighted(source), strict=True):
        new.set_weights(old.get_weights())


def compiled_model(cfg: TrainConfig, m: dict, frame: dict, total_steps: int, state: dict,
                   strategy):
    """The model of `cfg`, compiled with Adam (cosine decay over `total_steps` unless a time
    budget drives the rate); weights and optimizer state from the run's last checkpoint, or
    else from `init_from`; the first `freeze` conv blocks not trained."""
    charset = Charset.from_json(frame["charset"])
    with strategy.scope():
        if "audio" in frame:
            model = build_audio_model(cfg.arch, charset.num_classes, dropout=cfg.dropout,
                                      seed=cfg.seed, augment=cfg.augment)
        else:
            model = build_model(cfg.arch, (frame["image"]["height"], frame["image"]["width"]),
                                cfg.downscale,
                                charset.num_classes, tuple(m["length"]), augment=cfg.augment,
                                seed=cfg.seed, dropout=cfg.dropout, jitter=cfg.jitter,
                                resample=cfg.resample, standardize=bool(cfg.standardize))
        freeze_blocks(model, cfg.freeze)
        lr = (keras.optimizers.schedules.CosineDecay(cfg.lr, total_steps)
              if cfg.schedule == "cosine" and not cfg.time_budget else cfg.lr)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss_for(cfg.arch),
                      jit_compile=cfg.jit)
        if state["checkpoint"]:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(os.path.join(cfg.out, CKPT_DIR, state["checkpoint"]))
        elif cfg.init_from:  # a new run from another run's weights (checked in train.train)
            init_weights(model, cfg)
    return model


def _cluster_failed(cluster: dict, state: dict, e: Exception) -> RunFailed:
    # a peer died: TensorFlow's health check aborts the collectives (~15 s here)
    return RunFailed(f"worker {cluster['index']} of {cluster['workers']}: the cluster failed "
                     f"({type(e).__name__} in a collective op: did another worker stop?); "
                     f"restart every worker with --resume to continue from the last checkpoint "
                     f"(epoch {state['epoch']})")


def run(cfg: TrainConfig, m: dict, frame: dict, recipe: dict | None, shape, state: dict, cluster: dict | None,
        t_start: float, command: str = "", verbose: int = 1, extra=(), mix_m=None) -> dict:
    """Fit the model of `cfg` and write the run directory; returns the best epoch's row.
    mix_m: the manifest of cfg.mix_data (checked by train.mix_source)."""
    strategy = configure_devices(cfg.cpu_devices, cluster)
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy(
            "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16")
    try:
        return _run(cfg, m, frame, recipe, shape, state, cluster, t_start, command, verbose,
                    extra, strategy, mix_m)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _run(cfg, m, frame, recipe, shape, state, cluster, t_start, command, verbose, extra,
         strategy, mix_m):
    charset = Charset.from_json(frame["charset"])
    if recipe is not None:
        steps_per_epoch = max(1, cfg.epoch_samples // cfg.batch_size)
    else:
        steps_per_epoch = max(1, m["splits"]["train"]["count"] // cfg.batch_size)
        if cfg.time_budget:
            steps_per_epoch = max(steps_per_epoch, MIN_BUDGET_EPOCH_STEPS)
    epochs = math.ceil(cfg.steps / steps_per_epoch) if cfg.steps > 0 else cfg.epochs
    if cfg.time_budget > 0:
        epochs = 10**9  # until the budget is spent
    total_steps = cfg.steps if cfg.steps > 0 else epochs * steps_per_epoch
    first_epoch = state["epoch"]
    chief = cluster is None or cluster["chief"]  # only the chief writes the run directory
    worker, n_workers = (cluster["index"], cluster["workers"]) if cluster else (0, 1)

    keras.utils.set_random_seed(cfg.seed + first_epoch)  # a resumed run draws new shuffles
    model = compiled_model(cfg, m, frame, total_steps, state, strategy)
    if chief:
        for tmp in glob.glob(os.path.join(cfg.out, "**", "tmp-*"), recursive=True):
            os.remove(tmp)  # half-written files of a killed run

    train_ds, val_ds, probe_ds = datasets(cfg, m, frame, recipe, first_epoch, steps_per_epoch, worker,
                                          n_workers, mix_m)
    if cluster:
        train_ds = inp.already_split(train_ds)  # the global batch: each worker its own shards
        multi_worker_fit_fixes(model, strategy, train_ds)
    if chief and not state["history"]:
        with open(os.path.join(cfg.out, "config.json"), "w") as f:
            json.dump(run_config(cfg, m, frame, recipe, shape, strategy, cluster, command), f, indent=2)

    run_state = RunState(cfg.out, state, t_start, cfg.patience, chief,
                         report_budget=cfg.time_budget if verbose else 0.0)
    cbs = ([TimeBudget(cfg.time_budget, state["elapsed"], t_start, cfg.lr, cfg.schedule)]
           if cfg.time_budget else [])
    cbs += [StepLimit(cfg.steps)] if cfg.steps > 0 else []  # the last epoch ends there
    cbs += [ValMetrics(metric_fn(model, cfg.arch, charset), val_ds, probe_ds), run_state, *extra]
    if chief:
        cbs.append(keras.callbacks.TensorBoard(os.path.join(cfg.out, "tensorboard"),
                                               write_graph=False))
    if first_epoch < epochs:
        try:
            model.fit(train_ds, epochs=epochs, initial_epoch=first_epoch,
                      steps_per_epoch=steps_per_epoch, callbacks=cbs,
                      verbose=0 if cfg.time_budget else verbose, shuffle=False)
        except tf.errors.OpError as e:
            if cluster is None:
                raise
            raise _cluster_failed(cluster, state, e) from None
    if run_state.diverged:
        last = (f"the last good checkpoint (epoch {state['epoch']}) is kept in "
                f"{cfg.out}/{CKPT_DIR}" if state["checkpoint"] else "no epoch finished")
        raise RunFailed(f"training stopped in epoch {run_state.diverged}: the loss became NaN/inf; "
                        f"{last}; try a lower --lr")
    state["done"] = True
    if chief:
        sh.write_json_atomic(os.path.join(cfg.out, CKPT_DIR, "state.json"), state)
        plot_history(cfg.out, state["history"])
    if state["best"] is None:
        raise RunFailed("no epoch finished")
    return dict(state["best"])
