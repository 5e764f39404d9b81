"""`captchalab gen --engine ray`: the per-shard render function run as Ray tasks.

Ray schedules the shards and retries a task whose worker process dies. A shard is written under a
temporary name and renamed only when complete, so a retried shard never leaves a partial file.
Font files travel through Ray's object store, so workers on other machines need only captchalab
installed, not the driver's fonts.
"""

from __future__ import annotations

import os
import tempfile

from captchalab import storage
from captchalab.errors import RunFailed, UsageError
from captchalab.gen.generate import render_shard

TASK_RETRIES = 3  # times Ray re-runs a shard whose worker died (crash, OOM kill, lost node)
FONT_CACHE = os.path.join(tempfile.gettempdir(), "captchalab-fonts")  # fonts shipped to workers


def require_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--engine ray needs Ray, which is not installed here; "
                         "pip install 'captchalab[ray]'") from None
    return ray


_checked_fonts: dict[tuple[str, str], bool] = {}


def _font_here(path: str, sha256: str) -> bool:
    from captchalab.gen.fonts import file_sha256

    key = (path, sha256)
    if key not in _checked_fonts:
        _checked_fonts[key] = os.path.isfile(path) and file_sha256(path) == sha256
    return _checked_fonts[key]


def _localise_fonts(recipe: dict, boxed_fonts: list) -> dict:
    """The recipe with font paths valid on this machine: the driver's own path where the same
    file is there (same sha256), otherwise a copy fetched from the object store."""
    fonts, shipped = [], None
    for f in recipe["fonts"]:
        path = f["path"]
        if not _font_here(path, f["sha256"]):
            import ray

            shipped = shipped if shipped is not None else ray.get(boxed_fonts[0])
            path = os.path.join(FONT_CACHE, f["sha256"] + os.path.splitext(f["path"])[1])
            if not _font_here(path, f["sha256"]):
                os.makedirs(FONT_CACHE, exist_ok=True)
                tmp = f"{path}.{os.getpid()}.tmp"
                with open(tmp, "wb") as out:
                    out.write(shipped[f["sha256"]])
                os.replace(tmp, path)
                _checked_fonts[(path, f["sha256"])] = True
        fonts.append({**f, "path": path})
    return {**recipe, "fonts": fonts}


def _render_task(recipe, boxed_fonts, split, i, n, start, stop, out_dir):
    return render_shard(_localise_fonts(recipe, boxed_fonts), split, i, n, start, stop, out_dir)


def run_tasks(recipe, todo, out_dir, workers, address, bar, results) -> None:
    """Render the shards in `todo` as Ray tasks; fills `results` (file -> manifest entry)."""
    if not todo:
        return
    ray = require_ray()
    if not storage.is_url(out_dir):
        out_dir = os.path.abspath(out_dir)  # workers do not share the driver's cwd
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(**({"address": address} if address else {"num_cpus": workers}),
                     include_dashboard=False, logging_level="warning")
        except ConnectionError as e:
            raise UsageError(f"--address {address}: no Ray cluster answers there ({e})") from None
    pending = {}
    try:
        fonts = {}
        for f in recipe["fonts"]:
            with open(f["path"], "rb") as fh:
                fonts[f["sha256"]] = fh.read()
        boxed = [ray.put(fonts)]  # boxed: a task fetches the fonts only when it needs them
        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_render_task)
        pending = {task.remote(recipe, boxed, *t, out_dir): t for t in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in done:
                t = pending.pop(ref)
                try:
                    entry = ray.get(ref)
                except ray.exceptions.WorkerCrashedError:
                    raise RunFailed(f"shard {t[0]} {t[1]} of {t[2]}: its worker died "
                                    f"{TASK_RETRIES + 1} times; see the Ray logs") from None
                results[entry["file"]] = entry
                bar.update(entry["count"])
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
