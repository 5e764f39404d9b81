"""Generate a dataset: check the output folder, render the planned shards with an engine, resume
after a crash, write the manifest."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import NamedTuple

from captchalab.core import storage
from captchalab.core.errors import UsageError
from captchalab.gen import shards as sh
from captchalab.gen.engines import default_workers, run_local
from captchalab.gen.recipe import Recipe, plan_shards, versions
from captchalab.gen.render import (
    COMPOSE_RULE,
    FONT_RULE,
    MIX_RULE,
    MIXES_RULE,
    SEED_RULE,
    SPLIT_RULE,
    split_pools,
)
from captchalab.gen.style import Style

# what records' style/mixed holds: one mixed-in style, or several
MIXED_FEATURES = ("int64: 1 if drawn from style.mix",
                  "int64: 0 for the style itself, k if drawn from the k-th style of style.mix.of")
AUDIO_SEED_RULE = (
    "stream seed = first 8 bytes (big-endian) of blake2b('captchalab-v1|{seed}|{split}|{index}|"
    "{stream}', digest_size=8). 'label' seeds a Python random.Random that draws the length and "
    "characters; 'render' seeds the random.Random that replaces captcha.audio.secrets (voice, "
    "speed, level, gap and babble choices, in the library's order); 'noise' seeds numpy's "
    "default_rng for the noise floor (its level, then its samples); 'voice' seeds numpy's "
    "default_rng for the captcha's speaker (pitch, formant, tempo, timbre, equaliser, brightness); "
    "'effects' seeds numpy's default_rng for reverb, band-pass and added noise")


class GenStats(NamedTuple):
    rendered: int  # samples rendered by this call
    seconds: float  # wall-clock of the rendering
    reused_shards: int  # complete shards kept from an interrupted run (--resume)


class GenResult(NamedTuple):
    manifest: sh.Manifest  # as written to dataset_info.json
    stats: GenStats


def _our_file(name: str) -> bool:
    return name == sh.MANIFEST or name.startswith(sh.TMP_PREFIX) or bool(sh.SHARD_RE.match(name))


def prepare_out_dir(out_dir: str, resume: bool, overwrite: bool,
                    resumable: bool = True) -> dict | None:
    """Check `out_dir` against --resume/--overwrite. Returns the stored manifest when resuming.

    Only checks: nothing is created or deleted here.
    """
    if storage.exists(out_dir) and not storage.isdir(out_dir):
        raise UsageError(f"out {out_dir} is a file; give a folder (new or empty)", param="out")
    entries = storage.listdir(out_dir)
    if resume:
        if not storage.exists(storage.join(out_dir, sh.MANIFEST)):
            raise UsageError(f"resume: {out_dir} holds no interrupted dataset (no {sh.MANIFEST})",
                             param="resume")
        return sh.read_manifest(out_dir)
    if entries and not overwrite:
        hint = ("add --resume to finish an interrupted run or --overwrite to replace it"
                if resumable else "add --overwrite to replace it")
        raise UsageError(f"out {out_dir} is not empty; {hint}", param="out")
    return None


ENGINES = ("local", "ray")


def generate(recipe: Recipe, out_dir: str, *, workers: int | None = None, resume: bool = False,
             overwrite: bool = False, command: str = "", progress: bool = True,
             engine: str = "local", address: str | None = None) -> GenResult:
    """Render the dataset described by `recipe` into `out_dir`; returns the manifest written
    and what this call rendered.

    `out_dir` is a local folder or an fsspec URL. engine "local" renders in a process pool of
    `workers`; "ray" runs the same per-shard function as Ray tasks, on the cluster at
    `address` or on a local instance with `workers` CPUs. The output is the same either way.
    """
    if workers is not None and workers <= 0:
        raise UsageError(f"workers: {workers}; must be at least 1", param="workers")
    if engine not in ENGINES:
        raise UsageError(f"engine: unknown {engine!r} (allowed: {', '.join(ENGINES)})",
                         param="engine")
    if address and engine != "ray":
        raise UsageError("address names a Ray cluster; give it with --engine ray", param="address")
    if engine == "ray":
        from captchalab.gen import ray_engine
        ray_engine.require_ray()
    stored = prepare_out_dir(out_dir, resume, overwrite)
    if stored is not None:
        for key in recipe.to_json():
            if stored.get(key, "image" if key == "kind" else None) != recipe.to_json()[key]:
                raise UsageError(
                    f"resume: {key} differs from the interrupted run ({stored.get(key)!r} then, "
                    f"{recipe.to_json()[key]!r} now); give --resume with only --out to continue it",
                                 param="resume")
    workers = default_workers() if workers is None else workers
    with contextlib.ExitStack() as stack:
        # connect before writing anything: a wrong --address leaves no trace
        ray = stack.enter_context(ray_engine.session(address, workers)) if engine == "ray" else None
        return _generate(recipe, out_dir, stored, workers, resume, overwrite, command, progress,
                         ray)


def clear_dataset(out_dir: str, partial_only: bool = False) -> None:
    """Remove a dataset's files from `out_dir` (shards, manifest, temporary files); other files
    are left alone. partial_only: only the temporary files (half-written shards)."""
    for name in storage.listdir(out_dir):
        if name.startswith(sh.TMP_PREFIX) or (not partial_only and _our_file(name)):
            storage.remove(storage.join(out_dir, name))
    tfds_dir = storage.join(out_dir, sh.TFDS_DIR)
    if not partial_only and storage.isdir(tfds_dir):
        for name in storage.listdir(tfds_dir):
            if name in ("dataset_info.json", "features.json") or name.startswith(sh.TMP_PREFIX):
                storage.remove(storage.join(tfds_dir, name))
        if not storage.listdir(tfds_dir):
            storage.rmdir(tfds_dir)


def _generate(recipe, out_dir, stored, workers, resume, overwrite, command, progress, ray):
    if stored is not None:  # the dataset's command stays the one that defined it
        command = stored.get("command", command)
    storage.makedirs(out_dir)
    clear_dataset(out_dir, partial_only=not overwrite)  # resume: drop partial shards only

    tasks = plan_shards(recipe)
    manifest = _manifest(recipe, command, results={}, complete=False)
    if stored is None:
        sh.write_manifest(out_dir, manifest)

    results: dict[str, dict] = {}
    todo = []
    for t in tasks:
        name = sh.shard_name(t.split, t.index, t.count)
        path = storage.join(out_dir, name)
        if resume and storage.exists(path):
            try:
                entry = sh.scan_shard(path)
                if entry["count"] == t.size:
                    results[name] = entry
                    continue
            except sh.CorruptShard:
                pass
            storage.remove(path)  # incomplete or damaged: render again
        todo.append(t)

    total = sum(t.size for t in todo)
    started = time.perf_counter()
    bar = _progress_bar(total, progress, "clip" if recipe.kind == "audio" else "img")
    try:
        if ray is not None and todo:
            from captchalab.gen import ray_engine
            ray_engine.run_tasks(ray, recipe, todo, out_dir, bar, results)
        else:
            run_local(recipe, todo, out_dir, workers, bar, results)
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    clear_dataset(out_dir, partial_only=True)  # left by a worker that died mid-shard

    manifest = _manifest(recipe, command, results, complete=True)
    sh.write_manifest(out_dir, manifest)
    return GenResult(manifest, GenStats(total, elapsed, len(tasks) - len(todo)))


def _progress_bar(total: int, progress: bool, unit: str = "img"):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=not progress or total == 0, smoothing=0.1,
                dynamic_ncols=True, file=sys.stderr)


def _manifest(recipe: Recipe, command: str, results: dict, complete: bool) -> sh.Manifest:
    splits = {}
    ss = recipe.shard_size
    pools, exact = split_pools(recipe.charset["chars"], recipe.length, recipe.seed)
    for split, count in recipe.counts.items():
        n = math.ceil(count / ss)
        names = [sh.shard_name(split, i, n) for i in range(n)]
        splits[split] = {
            "count": count,
            "label_pool": pools[split],
            "label_pool_exact": exact,
            "shards": [results[nm] for nm in names if nm in results] if complete else [],
        }
    if recipe.kind == "audio":
        from captchalab.gen.audio import RATE
        return {
            "format": sh.FORMAT, "format_version": sh.FORMAT_VERSION, "complete": complete,
            "source": "generated", **recipe.to_json(),
            "audio": {"rate": RATE, "channels": 1, "sample_width": 1, "encoding": "wav"},
            "seed_rule": AUDIO_SEED_RULE,
            "split_rule": SPLIT_RULE, "splits": splits,
            "features": {**sh.AUDIO_CORE_FEATURES, **sh.AUDIO_STYLE_FEATURES},
            "versions": versions(), "command": command,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    w, h = recipe.size
    style = Style.from_json(recipe.style)
    scene = style.has_scene
    return {
        "format": sh.FORMAT,
        "format_version": sh.FORMAT_VERSION,
        "complete": complete,
        "source": "generated",
        **recipe.to_json(),
        "image": {"width": w, "height": h, "channels": 3, "encoding": "png"},
        "seed_rule": (SEED_RULE + (COMPOSE_RULE if scene else "")
                      + (MIX_RULE if style.mixes else "")
                      + (MIXES_RULE if len(style.mixes) > 1 else "")
                      + (FONT_RULE if any("weight" in f for f in recipe.fonts) else "")),
        "split_rule": SPLIT_RULE,
        "splits": splits,
        "features": {**sh.CORE_FEATURES, **sh.STYLE_FEATURES,
                     **(sh.SCENE_FEATURES if scene else {}),
                     **({"style/mixed": MIXED_FEATURES[len(style.mixes) > 1]}
                        if style.mixes else {})},
        "versions": versions(),
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
