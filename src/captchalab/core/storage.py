"""Where datasets live: a local folder, or any fsspec URL (gs://…, s3://…, file://…, memory://…).

Local paths use plain os calls (fsync, then an atomic rename). URLs go through fsspec: a file is
written under a temporary name and moved into place, so a reader never sees a partial one (on
object stores the move is a copy, and the object appears whole when the copy completes).
"""

from __future__ import annotations

import os
import uuid


def is_url(path: str) -> bool:
    return "://" in str(path)


def _fs(path: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as e:
        from captchalab.core.errors import UsageError
        raise UsageError(f"{path}: this storage URL cannot be opened here ({e}); local folders "
                         "and file:// always work, others need their fsspec package "
                         "(gcsfs, s3fs, …)") from None


def join(base: str, name: str) -> str:
    return f"{str(base).rstrip('/')}/{name}" if is_url(base) else os.path.join(base, name)


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    fs, p = _fs(path)
    return fs.exists(p)


def isdir(path: str) -> bool:
    if not is_url(path):
        return os.path.isdir(path)
    fs, p = _fs(path)
    return fs.isdir(p)


def listdir(path: str) -> list[str]:
    """Names (not paths) of the entries of a folder; [] when it does not exist."""
    if not is_url(path):
        return os.listdir(path) if os.path.isdir(path) else []
    fs, p = _fs(path)
    if not fs.isdir(p):
        return []
    return [os.path.basename(e.rstrip("/")) for e in fs.ls(p, detail=False)]


def makedirs(path: str) -> None:
    if not is_url(path):
        os.makedirs(path, exist_ok=True)
        return
    fs, p = _fs(path)
    fs.makedirs(p, exist_ok=True)


def remove(path: str) -> None:
    if not is_url(path):
        os.remove(path)
        return
    fs, p = _fs(path)
    fs.rm(p)


def rmdir(path: str) -> None:
    """Remove an empty folder (on object stores folders are implicit: nothing to do)."""
    if not is_url(path):
        os.rmdir(path)


def open_file(path: str, mode: str = "rb"):
    if not is_url(path):
        return open(path, mode)
    fs, p = _fs(path)
    return fs.open(p, mode)


def move(src: str, dst: str) -> None:
    """Rename `src` to `dst`, replacing it (atomic for local paths)."""
    if not is_url(src):
        os.replace(src, dst)
        return
    fs, p = _fs(src)
    fs.mv(p, _fs(dst)[1])


def size(path: str) -> int:
    if not is_url(path):
        return os.path.getsize(path)
    fs, p = _fs(path)
    return fs.size(p)


def atomic_write(path: str, write) -> None:
    """Call write(tmp) for a temporary file beside the local `path`, then rename it into place,
    so a reader never sees a partial file. The temporary name is "tmp-", 8 random hex digits,
    "-" and the file's own name: it keeps the suffix (Keras checks it), is unique to the call,
    and a killed writer's leftover is easy to find and remove."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f"tmp-{uuid.uuid4().hex[:8]}-{name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_atomic(path: str, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to the local `path` through `atomic_write`."""
    raw = data.encode() if isinstance(data, str) else data

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(raw)

    atomic_write(path, write)
