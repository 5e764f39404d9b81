"""Plan a dataset, render its shards in a process pool, resume after a crash, write the manifest."""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

from captchalab import __version__, storage
from captchalab.charset import Charset
from captchalab.errors import UsageError
from captchalab.gen import shards as sh
from captchalab.gen.render import (
    SEED_RULE,
    SPLIT_RULE,
    SPLITS,
    Renderer,
    label_space,
    png_bytes,
    split_pools,
)
from captchalab.gen.style import KNOBS, Style

DEFAULT_SHARD_SIZE = 1000  # records per shard: ~5 MB at 160x60, enough files to interleave


@dataclass
class GenRequest:
    """What the user asked for, before validation."""

    charset: str = "0-9a-z"
    length: str = "4"  # "4" or "4-6"
    size: str = "160x60"  # WIDTHxHEIGHT, px
    style: Style = Style()
    style_name: str = "default"
    counts: dict | None = None  # split -> number of samples
    seed: int = 0
    shard_size: int = DEFAULT_SHARD_SIZE


def parse_length(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in str(text).split("-", 1)]
    except ValueError:
        raise UsageError(f"--length: {text!r} is not a length like 4 or a range like 4-6") from None
    lo, hi = parts[0], parts[-1]
    if lo <= 0:
        raise UsageError(f"--length: {text!r}; lengths must be at least 1")
    if lo > hi:
        raise UsageError(f"--length: {text!r} has min > max; write it as min-max, e.g. 4-6")
    if hi > 64:
        raise UsageError(f"--length: {text!r}; at most 64 characters are supported")
    return lo, hi


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(p) for p in str(text).lower().split("x"))
    except ValueError:
        raise UsageError(f"--size: {text!r} is not WIDTHxHEIGHT in px, e.g. 160x60") from None
    if not (8 <= w <= 4096 and 8 <= h <= 4096):
        raise UsageError(f"--size: {text!r}; width and height must be 8..4096 px")
    return w, h


def check_text_fits(fonts, style: Style, size, length, chars: str) -> None:
    """Refuse sizes where glyphs would be clipped (too low) or squeezed >2x (too narrow)."""
    from PIL import ImageFont
    w, h = size
    tallest = widest_mean = 0.0
    for f in fonts:
        big = ImageFont.truetype(f.path, max(style.font_sizes))
        small = ImageFont.truetype(f.path, min(style.font_sizes))
        tallest = max(tallest, max(big.getbbox(c)[3] - big.getbbox(c)[1] for c in chars))
        mean_w = sum(small.getbbox(c)[2] - small.getbbox(c)[0] for c in chars) / len(chars)
        widest_mean = max(widest_mean, mean_w)
    if h < tallest:
        raise UsageError(
            f"--size {w}x{h} is too small for the text: glyphs at font size {max(style.font_sizes)} "
            f"are up to {tallest:.0f} px tall; use a height >= {math.ceil(tallest)} or smaller --font-sizes")
    need = math.ceil(length[1] * widest_mean / 2)
    if w < need:
        raise UsageError(
            f"--size {w}x{h} is too small for the text: {length[1]} characters at font size "
            f"{min(style.font_sizes)} would be squeezed more than 2x; use a width >= {need}")


def build_recipe(req: GenRequest, warn=None) -> dict:
    """Validate a request and resolve it into the recipe stored in the manifest.

    Nothing is written. Raises UsageError on the first invalid value.
    """
    from captchalab.gen.fonts import resolve_fonts

    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    charset = Charset.parse(req.charset)
    length = parse_length(req.length)
    size = parse_size(req.size)
    counts = {s: n for s, n in (req.counts or {}).items() if n is not None}
    for split, n in counts.items():
        if n <= 0:
            raise UsageError(f"--{split}: {n}; a split count must be a positive number of samples "
                             "(leave the option out to skip the split)")
    if not counts:
        raise UsageError("no samples asked for; give --train N, --val N and/or --test N")
    if req.shard_size <= 0:
        raise UsageError(f"--shard-size: {req.shard_size}; must be a positive number of records")
    if req.seed < 0 or req.seed >= 2**63:
        raise UsageError(f"--seed: {req.seed}; must be between 0 and 2^63-1")
    fonts = resolve_fonts(req.style.fonts, charset.chars)
    check_text_fits(fonts, req.style, size, length, charset.chars)

    pools, exact = split_pools(charset.chars, length, req.seed)
    space = label_space(charset.chars, length)
    for split, n in counts.items():
        if pools[split] == 0:
            raise UsageError(
                f"the label space is too small for the splits: charset {charset.chars!r} with "
                f"length {req.length} has {space} labels and none falls in {split}'s share "
                "(labels are kept disjoint across splits); use a longer length or a larger charset")
        if n > pools[split]:
            warn(f"note: {split} asks for {n} samples but its share of the label space holds "
                 f"{'' if exact else 'about '}{pools[split]} distinct labels; labels repeat "
                 "within the split (never across splits)")
    return {
        "charset": charset.to_json(),
        "length": list(length),
        "size": list(size),
        "style_name": req.style_name,
        "style": req.style.to_json(),
        "fonts": [f.to_json() for f in fonts],
        "seed": req.seed,
        "shard_size": req.shard_size,
        "counts": {s: counts[s] for s in SPLITS if s in counts},
    }


RECIPE_KEYS = ("charset", "length", "size", "style_name", "style", "fonts", "seed", "shard_size",
               "counts")


def plan_shards(recipe: dict) -> list[tuple[str, int, int, int, int]]:
    """(split, shard index, shard count, first sample index, end index) for every shard."""
    out = []
    ss = recipe["shard_size"]
    for split, count in recipe["counts"].items():
        n = math.ceil(count / ss)
        out.extend((split, i, n, i * ss, min(count, (i + 1) * ss)) for i in range(n))
    return out


def versions() -> dict:
    import importlib.metadata as md

    import cv2
    import numpy
    import PIL
    from PIL import features

    return {
        "captchalab": __version__,
        "captcha": md.version("captcha"),
        "pillow": PIL.__version__,
        "freetype": features.version("freetype2"),
        "opencv": cv2.__version__,  # PNG encoding (its wheel bundles libpng and zlib)
        "numpy": numpy.__version__,
        "protobuf": md.version("protobuf"),
        "python": platform.python_version(),
    }


def style_features(sample, style: Style) -> dict:
    v = sample.draws.values
    feats = {"style/font": sample.font, "style/font_sizes": list(style.font_sizes)}
    for name, knob in KNOBS.items():
        val = v[name]
        if isinstance(val, tuple):
            feats[f"style/{name}"] = list(val)
        else:
            feats[f"style/{name}"] = float(val) if knob.kind is float else int(val)
    return feats


def render_record(renderer: Renderer, split: str, index: int) -> bytes:
    s = renderer.render(split, index)
    w, h = renderer.size
    from captchalab.charset import Charset
    return sh.encode_record(
        png=png_bytes(s.image), width=w, height=h, text=s.text,
        ids=Charset(renderer.chars).encode(s.text), split=split, index=index,
        seed=renderer.seed, extra=style_features(s, renderer.style))


# --- one shard: a pure function of (recipe, split, shard) so any engine can run it -------------

_worker_renderer: tuple[str, Renderer] | None = None
_worker_counter = None


def _renderer_for(recipe: dict) -> Renderer:
    global _worker_renderer
    key = repr(sorted((k, repr(recipe[k])) for k in RECIPE_KEYS))
    if _worker_renderer is None or _worker_renderer[0] != key:
        _worker_renderer = (key, Renderer.from_recipe(recipe))
    return _worker_renderer[1]


def render_shard(recipe: dict, split: str, i: int, n: int, start: int, stop: int,
                 out_dir: str, on_record=None) -> dict:
    """Render samples [start, stop) of `split` into shard i of n under `out_dir`.

    Returns the shard's manifest entry (file, count, bytes, sha256).
    """
    renderer = _renderer_for(recipe)
    with sh.ShardWriter(out_dir, sh.shard_name(split, i, n)) as w:
        for index in range(start, stop):
            w.write(render_record(renderer, split, index))
            if on_record is not None:
                on_record()
        return w.commit()


def _init_worker(counter):
    global _worker_counter
    _worker_counter = counter


def _count_record():
    if _worker_counter is not None:
        with _worker_counter.get_lock():
            _worker_counter.value += 1


def _render_shard_task(recipe, split, i, n, start, stop, out_dir):
    return render_shard(recipe, split, i, n, start, stop, out_dir, on_record=_count_record)


# --- the whole dataset ----------------------------------------------------------------------

def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _our_file(name: str) -> bool:
    return name == sh.MANIFEST or name.startswith(sh.TMP_PREFIX) or bool(sh.SHARD_RE.match(name))


def prepare_out_dir(out_dir: str, resume: bool, overwrite: bool) -> dict | None:
    """Check `out_dir` against --resume/--overwrite. Returns the stored manifest when resuming.

    Only checks: nothing is created or deleted here.
    """
    if storage.exists(out_dir) and not storage.isdir(out_dir):
        raise UsageError(f"--out {out_dir} is a file; give a folder (new or empty)")
    entries = storage.listdir(out_dir)
    if resume:
        if not storage.exists(storage.join(out_dir, sh.MANIFEST)):
            raise UsageError(f"--resume: {out_dir} holds no interrupted dataset (no {sh.MANIFEST})")
        return sh.read_manifest(out_dir)
    if entries and not overwrite:
        raise UsageError(f"--out {out_dir} is not empty; add --resume to finish an interrupted "
                         "run or --overwrite to replace it")
    return None


ENGINES = ("local", "ray")


def generate(recipe: dict, out_dir: str, *, workers: int | None = None, resume: bool = False,
             overwrite: bool = False, command: str = "", progress: bool = True,
             engine: str = "local", address: str | None = None) -> dict:
    """Render the dataset described by `recipe` into `out_dir`; returns the manifest.

    `out_dir` is a local folder or an fsspec URL. engine "local" renders in a process pool of
    `workers`; "ray" runs the same per-shard function as Ray tasks, on the cluster at
    `address` or on a local instance with `workers` CPUs. The output is the same either way.
    """
    if workers is not None and workers <= 0:
        raise UsageError(f"--workers: {workers}; must be at least 1")
    if engine not in ENGINES:
        raise UsageError(f"--engine: unknown {engine!r} (allowed: {', '.join(ENGINES)})")
    if address and engine != "ray":
        raise UsageError("--address names a Ray cluster; give it with --engine ray")
    if engine == "ray":
        from captchalab.gen import ray_engine
        ray_engine.require_ray()
    stored = prepare_out_dir(out_dir, resume, overwrite)
    if stored is not None:
        for key in RECIPE_KEYS:
            if stored.get(key) != recipe.get(key):
                raise UsageError(
                    f"--resume: {key} differs from the interrupted run ({stored.get(key)!r} then, "
                    f"{recipe.get(key)!r} now); give --resume with only --out to continue it")
    workers = default_workers() if workers is None else workers
    with contextlib.ExitStack() as stack:
        # connect before writing anything: a wrong --address leaves no trace
        ray = stack.enter_context(ray_engine.session(address, workers)) if engine == "ray" else None
        return _generate(recipe, out_dir, stored, workers, resume, overwrite, command, progress,
                         ray)


def _generate(recipe, out_dir, stored, workers, resume, overwrite, command, progress, ray):
    storage.makedirs(out_dir)
    for name in storage.listdir(out_dir):
        # overwrite: remove our files (others are left alone); resume: drop partial shards
        if (overwrite and _our_file(name)) or name.startswith(sh.TMP_PREFIX):
            storage.remove(storage.join(out_dir, name))

    tasks = plan_shards(recipe)
    manifest = _manifest(recipe, command, results={}, complete=False)
    if stored is None:
        sh.write_json_atomic(storage.join(out_dir, sh.MANIFEST), manifest)

    results: dict[str, dict] = {}
    todo = []
    for t in tasks:
        name = sh.shard_name(t[0], t[1], t[2])
        path = storage.join(out_dir, name)
        if resume and storage.exists(path):
            try:
                entry = sh.scan_shard(path)
                if entry["count"] == t[4] - t[3]:
                    results[name] = entry
                    continue
            except sh.CorruptShard:
                pass
            storage.remove(path)  # incomplete or damaged: render again
        todo.append(t)

    total = sum(t[4] - t[3] for t in todo)
    started = time.perf_counter()
    bar = _progress_bar(total, progress)
    try:
        if ray is not None and todo:
            from captchalab.gen import ray_engine
            ray_engine.run_tasks(ray, recipe, todo, out_dir, bar, results)
        else:
            _run_local(recipe, todo, out_dir, workers, bar, results)
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    for name in storage.listdir(out_dir):  # left by a worker that died mid-shard
        if name.startswith(sh.TMP_PREFIX):
            storage.remove(storage.join(out_dir, name))

    manifest = _manifest(recipe, command, results, complete=True)
    sh.write_json_atomic(storage.join(out_dir, sh.MANIFEST), manifest)
    manifest["_stats"] = {"rendered": total, "seconds": elapsed, "reused_shards": len(tasks) - len(todo)}
    return manifest


def _pool_context():
    # fork is cheapest, but unsafe once TensorFlow's threads exist in this process
    return mp.get_context("spawn" if "tensorflow" in sys.modules else "fork")


def _progress_bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", disable=not progress or total == 0, smoothing=0.1,
                dynamic_ncols=True, file=sys.stderr)


def _run_local(recipe, todo, out_dir, workers, bar, results):
    if workers == 1 or len(todo) <= 1:
        for t in todo:
            entry = render_shard(recipe, *t, out_dir, on_record=lambda: bar.update(1))
            results[entry["file"]] = entry
        return
    ctx = _pool_context()
    counter = ctx.Value("q", 0)
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx,
                             initializer=_init_worker, initargs=(counter,)) as ex:
        pending = {ex.submit(_render_shard_task, recipe, *t, out_dir) for t in todo}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for fut in done:
                    entry = fut.result()
                    results[entry["file"]] = entry
                bar.update(counter.value - bar.n)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _manifest(recipe: dict, command: str, results: dict, complete: bool) -> dict:
    splits = {}
    ss = recipe["shard_size"]
    pools, exact = split_pools(recipe["charset"]["chars"], tuple(recipe["length"]), recipe["seed"])
    for split, count in recipe["counts"].items():
        n = math.ceil(count / ss)
        names = [sh.shard_name(split, i, n) for i in range(n)]
        splits[split] = {
            "count": count,
            "label_pool": pools[split],
            "label_pool_exact": exact,
            "shards": [results[nm] for nm in names if nm in results] if complete else [],
        }
    w, h = recipe["size"]
    return {
        "format": sh.FORMAT,
        "format_version": sh.FORMAT_VERSION,
        "complete": complete,
        "source": "generated",
        **{k: recipe[k] for k in RECIPE_KEYS},
        "image": {"width": w, "height": h, "channels": 3, "encoding": "png"},
        "seed_rule": SEED_RULE,
        "split_rule": SPLIT_RULE,
        "splits": splits,
        "features": {**sh.CORE_FEATURES, **sh.STYLE_FEATURES},
        "versions": versions(),
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
