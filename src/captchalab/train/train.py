"""`captchalab train`: check the settings and the data, prepare the run directory, then hand
over to the training loop (`train.loop`, which loads TensorFlow only once every check passed)."""

from __future__ import annotations

import json
import os
import time

from captchalab.core.errors import UsageError
from captchalab.gen import shards as sh
from captchalab.train.config import AUTO_CURRICULUM, TrainConfig, check_options, parse_mix_data
from captchalab.train.models import ARCHS, AUDIO_ARCHS, check_data, model_shape, resolve_arch
from captchalab.train.rundir import CKPT_DIR, prepare_run_dir, read_state


def data_source(cfg: TrainConfig) -> tuple[dict, dict | None]:
    """(meta with charset/length/image/splits, recipe to stream from or None)."""
    from captchalab.gen.recipe import Recipe, recipe_keys

    for key in ("style", "style_file", "mix"):
        if getattr(cfg, key) and (not cfg.on_the_fly or cfg.data):
            raise UsageError(f"{key} applies to --on-the-fly training without --data; a --data "
                             "set has its own style", param=key)
    if cfg.data:
        m = sh.read_manifest(cfg.data)
        need = ("val",) if cfg.on_the_fly else ("train", "val")
        for split in need:
            if split not in m["splits"]:
                raise UsageError(f"data {cfg.data} has no {split} split; generate one with "
                                 f"'captchalab gen --{split} N'", param="data")
            # a missing or truncated shard: refused before the run folder exists
            sh.check_shard_files(cfg.data, m, split)
        if cfg.on_the_fly and not all(k in m for k in recipe_keys(m)):
            raise UsageError(f"on_the_fly re-renders from the recipe of a generated dataset; "
                             f"{cfg.data} was imported and has none", param="on_the_fly")
        return m, (with_curriculum(cfg, Recipe.from_json(m)) if cfg.on_the_fly else None)
    if not cfg.on_the_fly:
        raise UsageError("give --data DIR (a dataset from 'captchalab gen') or --on-the-fly")
    from captchalab.gen.stream import stream_recipe
    from captchalab.gen.style import resolve_style, style_file_size, style_label

    name = style_label(cfg.style or "default", cfg.style_file or None)
    style = resolve_style(cfg.style or "default", cfg.style_file or None,
                          {"mix": cfg.mix} if cfg.mix else None)
    size = style_file_size(cfg.style_file or None)
    recipe = with_curriculum(cfg, stream_recipe(style=style, seed=cfg.seed, name=name,
                                                **({"size": size} if size else {})))
    w, h = recipe.size
    return {"charset": recipe.charset, "length": list(recipe.length),
            "image": {"width": w, "height": h}, "splits": {}}, recipe


def with_curriculum(cfg: TrainConfig, recipe):
    """The stream's recipe with cfg.curriculum applied (auto: AUTO_CURRICULUM samples for a
    style with a scene, else none). Audio recipes have none."""
    from captchalab.gen.recipe import restyle
    from captchalab.gen.style import Style

    if recipe.kind == "audio":
        if cfg.curriculum:
            raise UsageError("curriculum ramps image styles; audio data has none",
                             param="curriculum")
        cfg.curriculum = 0
        return recipe
    style = Style.from_json(recipe.style)
    if cfg.curriculum is None:
        cfg.curriculum = AUTO_CURRICULUM if style.has_scene else 0
    if not cfg.curriculum:
        return recipe
    return restyle(recipe, style.with_curriculum(cfg.curriculum))


def resolve_standardize(cfg: TrainConfig, m: dict) -> None:
    """--standardize auto: on for data whose style has a scene (images only)."""
    if cfg.standardize is not None:
        return
    if m.get("kind") == "audio" or not m.get("style"):  # imported data has no style
        cfg.standardize = False
        return
    from captchalab.gen.style import Style

    cfg.standardize = Style.from_json(m["style"]).has_scene


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


def _check_cluster(cfg: TrainConfig, m: dict, recipe: dict | None, cluster: dict,
                   mix_m: dict | None = None) -> None:
    n = cluster["workers"]
    if cfg.time_budget:
        raise UsageError(f"time_budget with {n} workers (TF_CONFIG): each would stop on its own "
                         "clock; give --epochs or --steps", param="time_budget")
    if cfg.cpu_devices > 1:
        raise UsageError("cpu_devices splits one process's CPU; with TF_CONFIG every worker "
                         "process is one device", param="cpu_devices")
    sources = [("data", cfg.data, m)] if recipe is None else []
    if mix_m is not None:
        sources.append(("mix_data", parse_mix_data(cfg.mix_data)[0], mix_m))
    for param, path, manifest in sources:
        train = manifest["splits"]["train"]
        if len(train["shards"]) < n:
            raise UsageError(
                f"{param} {path}: its train split has {len(train['shards'])} shards for {n} "
                f"workers, and each worker reads whole shards; regenerate it with --shard-size "
                f"{max(1, train['count'] // n)} or less", param=param)


# settings that decide the model's weights: a run started from another must share them (and
# their values in runs that predate them)
ARCH_SETTINGS = ("arch", "downscale", "resample", "standardize")
LEGACY_SETTINGS = {"standardize": False}


def _flag(key: str, value) -> str:
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{key}"
    return f"--{key} {value}"


def init_source(cfg: TrainConfig, m: dict) -> dict | None:
    """The config.json of the run `cfg.init_from` names, checked against the new run: same
    architecture settings; the data's charset within the run's (or `new_head`); the same image
    size (or `resize`); the same length for `heads`. None without one."""
    if not cfg.init_from:
        return None
    from captchalab.core.runconfig import read_run_config

    src = read_run_config(cfg.init_from)
    if not os.path.isfile(os.path.join(cfg.init_from, "model.keras")):
        raise UsageError(f"init_from {cfg.init_from} has no model.keras (it finished no epoch)",
                         param="init_from")
    theirs = {"arch": src["arch"], **{k: src["train"].get(k, LEGACY_SETTINGS.get(k))
                                      for k in ARCH_SETTINGS[1:]}}
    for key in ARCH_SETTINGS:
        if theirs[key] != getattr(cfg, key):
            raise UsageError(f"init_from {cfg.init_from} was trained with {key} {theirs[key]}, "
                             f"this run has {getattr(cfg, key)}; give {_flag(key, theirs[key])}",
                             param="init_from")
    if src.get("data_kind", "image") != m.get("kind", "image"):
        raise UsageError(f"init_from {cfg.init_from} reads {src.get('data_kind', 'image')}; "
                         f"the data is {m.get('kind', 'image')}", param="init_from")
    extra = "".join(c for c in m["charset"]["chars"] if c not in src["charset"]["chars"])
    if extra and not cfg.new_head:
        raise UsageError(f"init_from {cfg.init_from} cannot output {extra!r} of the data's "
                         f"charset (it reads {src['charset']['chars']!r}); give --new-head to "
                         "train a new output layer for the data's charset", param="init_from")
    if m.get("kind") == "audio":
        size = theirs_size = None
    else:
        size, theirs_size = ((m["image"]["width"], m["image"]["height"]),
                             (src["image"]["width"], src["image"]["height"]))
    if size != theirs_size and not cfg.resize:
        raise UsageError(f"init_from {cfg.init_from} reads {theirs_size[0]}x{theirs_size[1]} "
                         f"images; the data is {size[0]}x{size[1]} (give --resize to resize it "
                         f"while training, or `captchalab import --size "
                         f"{theirs_size[0]}x{theirs_size[1]}`)", param="init_from")
    if cfg.arch == "heads" and list(src["length"]) != list(m["length"]):
        raise UsageError(f"init_from {cfg.init_from}: heads read exactly {src['length']} "
                         f"characters; the data has lengths {m['length']}", param="init_from")
    n_blocks = len((ARCHS.get(cfg.arch) or AUDIO_ARCHS[cfg.arch]).filters)
    if cfg.freeze > n_blocks:
        raise UsageError(f"freeze: {cfg.freeze}; arch {cfg.arch} has {n_blocks} conv blocks",
                         param="freeze")
    return src


def mix_source(cfg: TrainConfig, m: dict, frame: dict) -> dict | None:
    """The manifest of cfg.mix_data, checked against the model: a train split with all its
    shards, images of the model's size (or --resize with --init-from), characters the model
    can output, labels no longer than --data's. None without one."""
    if not cfg.mix_data:
        return None
    path, _ = parse_mix_data(cfg.mix_data)
    try:
        mm = sh.read_manifest(path)
    except UsageError as e:
        raise UsageError(f"mix_data: {e}", param="mix_data") from None
    if mm.get("kind", "image") != "image" or m.get("kind", "image") != "image":
        raise UsageError(f"mix_data {path}: mixing datasets is for images; this is "
                         f"{mm.get('kind', 'image')} with {m.get('kind', 'image')} --data",
                         param="mix_data")
    if "train" not in mm["splits"]:
        raise UsageError(f"mix_data {path} has no train split; generate one with "
                         "'captchalab gen --train N'", param="mix_data")
    sh.check_shard_files(path, mm, "train")
    extra = "".join(sorted({c for c in mm["charset"]["chars"]
                            if c not in frame["charset"]["chars"]}))
    if extra:
        raise UsageError(f"mix_data {path} has characters {extra!r} that the model cannot "
                         f"output (it reads {frame['charset']['chars']!r})", param="mix_data")
    size, want = ((d["image"]["width"], d["image"]["height"]) for d in (mm, frame))
    if size != want and not cfg.resize:
        raise UsageError(f"mix_data {path} holds {size[0]}x{size[1]} images; the model reads "
                         f"{want[0]}x{want[1]} (generate it with --size {want[0]}x{want[1]})",
                         param="mix_data")
    if mm["length"][1] > m["length"][1]:
        raise UsageError(f"mix_data {path} has labels up to {mm['length'][1]} characters; "
                         f"--data's are at most {m['length'][1]}", param="mix_data")
    return mm


def model_frame(cfg: TrainConfig, m: dict, resume: bool) -> dict:
    """What the model reads and writes, {"charset", "image"}: the data's own; with init_from
    the source run's charset (unless new_head) and image size, and how it is read ("inference":
    the widths and blurs of the shipped model); on resume the run's own."""
    from captchalab.core.runconfig import read_run_config

    key = "audio" if m.get("kind") == "audio" else "image"
    src = read_run_config(cfg.out) if resume else init_source(cfg, m)
    if src is None:
        return {"charset": m["charset"], key: m[key]}
    views = {"inference": src["inference"]} if src.get("inference") else {}
    if resume:
        return {"charset": src["charset"], key: src[key], **views}
    return {"charset": m["charset"] if cfg.new_head else src["charset"], key: src[key], **views}


def train(cfg: TrainConfig, command: str = "", verbose: int = 1, resume: bool = False,
          callbacks=()) -> dict:
    """Train and write the run directory; returns the best epoch's metrics.

    resume: continue `cfg.out` from its last checkpoint (cfg from `rundir.resume_config`).
    callbacks: extra Keras callbacks (benchmarks use them to time epochs).
    """
    t_start = time.perf_counter()
    check_options(cfg)
    m, recipe = data_source(cfg)
    cfg.arch = resolve_arch(cfg.arch, m.get("kind", "image"))
    resolve_standardize(cfg, recipe.to_json() if recipe is not None else m)
    if not cfg.batch_size:
        cfg.batch_size = 32 if m.get("kind") == "audio" else 64
        check_options(cfg)  # --epoch-samples against the batch size now known
    frame = model_frame(cfg, m, resume)
    if m.get("kind") == "audio":
        if cfg.cache:
            raise UsageError("cache decodes images into memory; audio data is read from its "
                             "shards (drop --cache)", param="cache")
        shape = None
    else:
        shape = model_shape((frame["image"]["height"], frame["image"]["width"]), cfg.downscale,
                            cfg.resample)
        check_data(cfg.arch, shape, tuple(m["length"]))  # refuse before anything is written
    mix_m = mix_source(cfg, m, frame)
    cluster = cluster_role()
    if cluster:
        _check_cluster(cfg, m, recipe, cluster, mix_m)
    if not resume:
        if cluster is None or cluster["chief"]:
            prepare_run_dir(cfg.out)
        elif os.path.exists(os.path.join(cfg.out, CKPT_DIR, "state.json")):
            raise UsageError(f"out {cfg.out} already holds a run; give a new run folder "
                             "(or --resume it, on every worker)", param="out")
    from captchalab.train import loop

    return loop.run(cfg, m, frame, recipe, shape, read_state(cfg.out), cluster, t_start, command,
                    verbose, list(callbacks), mix_m)
