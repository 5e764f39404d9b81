"""How shards get rendered: the pure per-shard function any engine runs, and the local engine (a
process pool). The Ray engine (`ray_engine`) runs the same function as Ray tasks."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from captchalab.core.charset import Charset
from captchalab.gen import shards as sh
from captchalab.gen.recipe import Recipe, ShardTask
from captchalab.gen.render import Renderer, png_bytes
from captchalab.gen.style import KNOBS, Style


def style_features(sample, style: Style) -> dict:
    """Every value drawn for the sample (scene knobs only for a style with a scene)."""
    feats = {"style/font": sample.font, "style/font_sizes": list(sample.style.font_sizes)}
    if style.mixes:
        feats["style/mixed"] = int(sample.mixed)
    for name, val in sample.draws.values.items():
        knob = KNOBS[name]
        if isinstance(val, tuple):
            feats[f"style/{name}"] = list(val)
        else:
            feats[f"style/{name}"] = float(val) if knob.kind is float else int(val)
    return feats


def render_record(renderer, split: str, index: int) -> bytes:
    if not isinstance(renderer, Renderer):  # audio: the renderer encodes its own records
        return renderer.record(split, index)
    s = renderer.render(split, index)
    w, h = renderer.size
    return sh.encode_record(
        png=png_bytes(s.image), width=w, height=h, text=s.text,
        ids=Charset(renderer.chars).encode(s.text), split=split, index=index,
        seed=renderer.seed, extra=style_features(s, renderer.style))


# --- one shard: a pure function of (recipe, split, shard) so any engine can run it -------------

_worker_renderer: tuple[Recipe, Renderer] | None = None
_worker_counter = None


def renderer_for(recipe: Recipe):
    """This process's renderer for `recipe` (a Renderer, or an AudioRenderer for audio), built
    once per recipe."""
    global _worker_renderer
    if _worker_renderer is None or _worker_renderer[0] != recipe:
        if recipe.kind == "audio":
            from captchalab.gen.audio import AudioRenderer
            _worker_renderer = (recipe, AudioRenderer.from_recipe(recipe))
        else:
            _worker_renderer = (recipe, Renderer.from_recipe(recipe))
    return _worker_renderer[1]


def render_shard(recipe: Recipe, split: str, i: int, n: int, start: int, stop: int,
                 out_dir: str, on_record=None) -> dict:
    """Render samples [start, stop) of `split` into shard i of n under `out_dir`.

    Returns the shard's manifest entry (file, count, bytes, sha256).
    """
    renderer = renderer_for(recipe)
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


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def pool_context():
    # fork is cheapest, but unsafe once TensorFlow's threads exist in this process
    return mp.get_context("spawn" if "tensorflow" in sys.modules else "fork")


def run_local(recipe: Recipe, todo: list[ShardTask], out_dir: str, workers: int, bar,
              results: dict) -> None:
    """The local engine: render `todo` in a pool of `workers` processes; each finished shard's
    manifest entry goes into `results` under its file name, and `bar` counts records."""
    if workers == 1 or len(todo) <= 1:
        for t in todo:
            entry = render_shard(recipe, *t, out_dir, on_record=lambda: bar.update(1))
            results[entry["file"]] = entry
        return
    ctx = pool_context()
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
