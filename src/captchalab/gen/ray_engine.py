"""`captchalab gen --engine ray`: the per-shard render function run as Ray tasks.

Ray schedules the shards and retries a task whose worker process dies. A shard is written under a
temporary name and renamed only when complete, so a retried shard never leaves a partial file.
Font files travel through Ray's object store, so workers on other machines need only captchalab
installed, not the driver's fonts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile

from captchalab.core import storage
from captchalab.core.errors import RunFailed, UsageError
from captchalab.gen.engines import render_shard
from captchalab.gen.recipe import versions

TASK_RETRIES = 3  # times Ray re-runs a shard whose worker died (crash, OOM kill, lost node)
FONT_CACHE = os.path.join(tempfile.gettempdir(), "captchalab-fonts")  # fonts shipped to workers


def require_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("engine ray needs Ray, which is not installed here; "
                         "pip install 'captchalab[ray]'", param="engine") from None
    return ray


_checked_fonts: dict[tuple[str, str], bool] = {}


def _font_here(path: str, sha256: str) -> bool:
    from captchalab.gen.fonts import file_sha256

    key = (path, sha256)
    if key not in _checked_fonts:
        _checked_fonts[key] = os.path.isfile(path) and file_sha256(path) == sha256
    return _checked_fonts[key]


def _localise_fonts(recipe, boxed_fonts: list):
    """The recipe with font paths valid on this machine: the driver's own path where the same
    file is there (same sha256), otherwise a copy fetched from the object store."""
    fonts, shipped = [], None
    for f in recipe.fonts:
        path = f["path"]
        if not _font_here(path, f["sha256"]):
            import ray

            shipped = shipped if shipped is not None else ray.get(boxed_fonts[0])
            path = os.path.join(FONT_CACHE, f["sha256"] + os.path.splitext(f["path"])[1])
            if not _font_here(path, f["sha256"]):
                os.makedirs(FONT_CACHE, exist_ok=True)
                storage.write_atomic(path, shipped[f["sha256"]])
                _checked_fonts[(path, f["sha256"])] = True
        fonts.append({**f, "path": path})
    return dataclasses.replace(recipe, fonts=tuple(fonts))


# what the bytes of a record depend on: a node with other versions would write other images
BYTE_VERSIONS = ("captchalab", "captcha", "pillow", "freetype", "opencv", "protobuf")
_node_versions: dict | None = None


def check_versions(driver: dict) -> None:
    """Refuse to render on a node whose libraries differ from the driver's."""
    global _node_versions
    if _node_versions is None:
        _node_versions = versions()
    diff = [f"{k} {_node_versions.get(k)} (driver: {driver.get(k)})" for k in BYTE_VERSIONS
            if _node_versions.get(k) != driver.get(k)]
    if diff:
        import socket
        raise UsageError(f"node {socket.gethostname()} renders with other libraries than the "
                         f"driver: {', '.join(diff)}; install the same versions on every node")


def _render_task(recipe, boxed_fonts, driver_versions, split, i, n, start, stop, out_dir):
    check_versions(driver_versions)
    return render_shard(_localise_fonts(recipe, boxed_fonts), split, i, n, start, stop, out_dir)


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minute of retries, when nothing listens at HOST:PORT."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"address {address}: give auto, HOST:PORT or ray://HOST:PORT",
                         param="address")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UsageError(f"address {address}: no Ray cluster answers there "
                         f"({e.strerror or e})", param="address") from None


@contextlib.contextmanager
def session(address: str | None, workers: int):
    """Ray, connected: to `address` (or $RAY_ADDRESS, set inside `ray job submit`), else to a
    new local instance with `workers` CPUs, shut down on exit. An already initialised Ray is
    used as it is."""
    ray = require_ray()
    address = address or os.environ.get("RAY_ADDRESS")
    started = not ray.is_initialized()
    if started:
        if address and address != "auto":
            _check_reachable(address)
        try:
            ray.init(**({"address": address} if address else {"num_cpus": workers}),
                     include_dashboard=False, logging_level="warning")
        except ConnectionError as e:
            raise UsageError(f"address {address}: no Ray cluster answers there "
                             f"({str(e).splitlines()[0]})", param="address") from None
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def run_tasks(ray, recipe, todo, out_dir, bar, results) -> None:
    """Render the shards in `todo` as Ray tasks; fills `results` (file -> manifest entry)."""

    if not storage.is_url(out_dir):
        out_dir = os.path.abspath(out_dir)  # workers do not share the driver's cwd
    fonts = {}
    for f in recipe.fonts:
        with open(f["path"], "rb") as fh:
            fonts[f["sha256"]] = fh.read()
    boxed = [ray.put(fonts)]  # boxed: a task fetches the fonts only when it needs them
    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_render_task)
    here = versions()
    pending = {task.remote(recipe, boxed, here, *t, out_dir): t for t in todo}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in done:
                t = pending.pop(ref)
                try:
                    entry = ray.get(ref)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.OutOfMemoryError) as e:
                    raise RunFailed(f"shard {t.split} {t.index} of {t.count}: its worker was lost "
                                    f"{TASK_RETRIES + 1} times ({type(e).__name__}); see the "
                                    "Ray logs, then finish the dataset with --resume") from None
                results[entry["file"]] = entry
                bar.update(entry["count"])
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
