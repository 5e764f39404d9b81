"""Scale-out: `gen --engine ray` (same bytes, retried dead workers, resume, storage URLs)."""

import json
import os
import signal
import threading
import time

import pytest

from captchalab.errors import UsageError
from captchalab.gen import shards as sh
from captchalab.gen.generate import GenRequest, build_recipe, generate
from conftest import cli


def _recipe(train=1200, shard_size=300, **kw):
    return build_recipe(GenRequest(counts={"train": train, "val": 100}, shard_size=shard_size,
                                   **kw), warn=lambda _m: None)


def _same_dataset(a, b):
    names = sorted(n for n in os.listdir(a) if not n.startswith("."))
    assert names == sorted(n for n in os.listdir(b) if not n.startswith("."))
    for n in names:
        if n != sh.MANIFEST:
            assert (a / n).read_bytes() == (b / n).read_bytes(), n
    ma, mb = (json.loads((d / sh.MANIFEST).read_text()) for d in (a, b))
    for m in (ma, mb):
        m.pop("created"), m.pop("command")
    assert ma == mb


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module (gen reuses an initialised Ray, as on a cluster)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_1200(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale") / "local"
    generate(_recipe(), str(d), workers=2, progress=False)
    return d


def test_ray_cli_output_is_byte_identical_to_local(tmp_path, small_dataset):
    """Through the CLI, starting its own local Ray instance, as a user would."""
    out = tmp_path / "ray"
    cli("gen", "--out", out, "--train", 60, "--val", 20, "--test", 20, "--shard-size", 25, "-q",
        "--engine", "ray", "--workers", 2)
    _same_dataset(out, small_dataset)
    cli("verify", out)


def _kill_first_writer(out_dir, killed):
    """Watch for a shard being written; SIGKILL the worker process that holds it open."""
    deadline = time.time() + 60
    while time.time() < deadline and not killed:
        for name in os.listdir(out_dir) if out_dir.exists() else []:
            tmp = os.path.join(out_dir, name)
            if not name.startswith(sh.TMP_PREFIX + "captcha") or os.path.getsize(tmp) < 20000:
                continue  # not a shard, or too early to be mid-task
            for pid in os.listdir("/proc"):
                try:
                    fds = os.listdir(f"/proc/{pid}/fd") if pid.isdigit() else []
                    if any(os.readlink(f"/proc/{pid}/fd/{fd}") == tmp for fd in fds):
                        os.kill(int(pid), signal.SIGKILL)
                        killed.append((int(pid), name))
                        return
                except OSError:
                    continue
        time.sleep(0.01)


def test_ray_worker_killed_mid_shard_is_retried_without_partial_shard(tmp_path, ray_local,
                                                                        local_1200):
    out = tmp_path / "ray"
    killed = []
    watcher = threading.Thread(target=_kill_first_writer, args=(out, killed))
    watcher.start()
    m = generate(_recipe(), str(out), workers=2, progress=False, engine="ray")
    watcher.join()
    assert killed, "no worker was caught mid-shard"
    pid, name = killed[0]
    assert pid != os.getpid()
    assert not [n for n in os.listdir(out) if n.startswith(sh.TMP_PREFIX)]
    assert m["_stats"]["rendered"] == 1300
    _same_dataset(out, local_1200)


def test_ray_resume_keeps_complete_shards(tmp_path, ray_local, local_1200):
    out = tmp_path / "ray"
    generate(_recipe(), str(out), workers=2, progress=False)
    os.remove(out / "captcha-train.tfrecord-00001-of-00004")  # as if never written
    with open(out / "captcha-train.tfrecord-00002-of-00004", "r+b") as f:
        f.truncate(1000)  # as if cut mid-write
    m = generate(_recipe(), str(out), resume=True, progress=False, engine="ray")
    assert m["_stats"]["reused_shards"] == 3
    assert m["_stats"]["rendered"] == 600
    _same_dataset(out, local_1200)


def test_fonts_missing_on_a_worker_are_fetched_from_the_object_store(tmp_path, ray_local):
    """A cluster node without the driver's font files gets them through the object store."""
    from captchalab.gen import ray_engine
    from captchalab.gen.generate import render_shard

    recipe = _recipe()
    f0 = recipe["fonts"][0]
    data = open(f0["path"], "rb").read()
    moved = {**recipe, "fonts": [{**f0, "path": str(tmp_path / "not-on-this-node.ttf")}]}
    here = ray_engine._localise_fonts(moved, [ray_local.put({f0["sha256"]: data})])
    path = here["fonts"][0]["path"]
    assert path.startswith(ray_engine.FONT_CACHE) and open(path, "rb").read() == data
    assert ray_engine._localise_fonts(recipe, [None]) == recipe  # present: used, nothing fetched
    entries = []
    for r, d in ((recipe, tmp_path / "a"), (here, tmp_path / "b")):
        d.mkdir()
        entries.append(render_shard(r, "val", 0, 1, 0, 20, str(d)))
    assert entries[0] == entries[1]


def test_fsspec_url_output(small_dataset):
    """A URL goes through fsspec: memory:// here stands for a bucket."""
    import fsspec

    recipe = build_recipe(GenRequest(counts={"train": 60, "val": 20, "test": 20}, shard_size=25),
                          warn=lambda _m: None)
    generate(recipe, "memory://captchalab-test/ds", workers=1, progress=False)
    fs = fsspec.filesystem("memory")
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls("/captchalab-test/ds", detail=False))
    assert names == sorted(n for n in os.listdir(small_dataset) if not n.startswith("."))
    for n in names:
        if n != sh.MANIFEST:
            assert fs.cat(f"/captchalab-test/ds/{n}") == (small_dataset / n).read_bytes()
    from captchalab.gen.verify import verify_dataset
    assert verify_dataset("memory://captchalab-test/ds") == []
    with pytest.raises(UsageError, match="not empty"):
        generate(recipe, "memory://captchalab-test/ds", workers=1, progress=False)
    fs.rm("/captchalab-test", recursive=True)


def test_file_url_through_cli(tmp_path, small_dataset):
    out = tmp_path / "viaurl"
    cli("gen", "--out", f"file://{out}", "--train", 60, "--val", 20, "--test", 20,
        "--shard-size", 25, "-q", "--workers", 2)
    _same_dataset(out, small_dataset)
    cli("verify", f"file://{out}")


@pytest.mark.parametrize("extra, msg", [
    (["--engine", "spark"], "--engine: unknown 'spark' (allowed: local, ray)"),
    (["--address", "auto"], "--address names a Ray cluster; give it with --engine ray"),
])
def test_engine_bad_input(tmp_path, extra, msg):
    p = cli("gen", "--out", tmp_path / "d", "--val", 10, *extra, check=False)
    assert p.returncode == 2 and p.stderr.strip() == f"error: {msg}"
    assert not (tmp_path / "d").exists()


def test_engine_ray_without_ray_installed(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UsageError, match=r"pip install 'captchalab\[ray\]'"):
        generate(_recipe(), str(tmp_path / "d"), engine="ray", progress=False)
    assert not (tmp_path / "d").exists()
