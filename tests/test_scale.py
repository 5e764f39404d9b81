"""Scale-out: `gen --engine ray` (same bytes, retried dead workers, resume, storage URLs)."""

import dataclasses
import json
import os
import signal
import threading
import time

import pytest

from captchalab.core.errors import UsageError
from captchalab.gen import shards as sh
from captchalab.gen.generate import generate
from captchalab.gen.recipe import GenRequest, build_recipe
from conftest import cli


def _recipe(train=1200, shard_size=300, **kw):
    return build_recipe(GenRequest(counts={"train": train, "val": 100}, shard_size=shard_size,
                                   **kw), warn=lambda _m: None)


def _same_dataset(a, b):
    names = sorted(n for n in os.listdir(a) if not n.startswith("."))
    assert names == sorted(n for n in os.listdir(b) if not n.startswith("."))
    for n in names:
        if n not in (sh.MANIFEST, sh.TFDS_DIR):  # manifests name their command
            assert (a / n).read_bytes() == (b / n).read_bytes(), n
    assert (a / "tfds/features.json").read_bytes() == (b / "tfds/features.json").read_bytes()
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
    _, stats = generate(_recipe(), str(out), workers=2, progress=False, engine="ray")
    watcher.join()
    assert killed, "no worker was caught mid-shard"
    assert not [n for n in os.listdir(out) if n.startswith(sh.TMP_PREFIX)]
    assert stats.rendered == 1300
    _same_dataset(out, local_1200)


def test_ray_resume_keeps_complete_shards(tmp_path, ray_local, local_1200):
    out = tmp_path / "ray"
    generate(_recipe(), str(out), workers=2, progress=False)
    os.remove(out / "captcha-train.tfrecord-00001-of-00004")  # as if never written
    with open(out / "captcha-train.tfrecord-00002-of-00004", "r+b") as f:
        f.truncate(1000)  # as if cut mid-write
    _, stats = generate(_recipe(), str(out), resume=True, progress=False, engine="ray")
    assert stats.reused_shards == 3
    assert stats.rendered == 600
    _same_dataset(out, local_1200)


def test_fonts_missing_on_a_worker_are_fetched_from_the_object_store(tmp_path, ray_local):
    """A cluster node without the driver's font files gets them through the object store."""
    from captchalab.gen import ray_engine
    from captchalab.gen.engines import render_shard

    recipe = _recipe()
    f0 = recipe.fonts[0]
    data = open(f0["path"], "rb").read()
    moved = dataclasses.replace(recipe, fonts=({**f0, "path": str(tmp_path / "elsewhere.ttf")},))
    here = ray_engine._localise_fonts(moved, [ray_local.put({f0["sha256"]: data})])
    path = here.fonts[0]["path"]
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
        if n not in (sh.MANIFEST, sh.TFDS_DIR):
            assert fs.cat(f"/captchalab-test/ds/{n}") == (small_dataset / n).read_bytes()
    n = "tfds/features.json"
    assert fs.cat(f"/captchalab-test/ds/{n}") == (small_dataset / n).read_bytes()
    from captchalab.gen.preview import contact_sheet, rerender_check
    from captchalab.gen.verify import verify_dataset
    assert verify_dataset("memory://captchalab-test/ds") == []
    contact_sheet("memory://captchalab-test/ds", None, 6, "val")
    assert fs.cat("/captchalab-test/ds/preview.png").startswith(b"\x89PNG")
    ok, out, _ = rerender_check("memory://captchalab-test/ds", "test:3", None)
    assert ok and fs.exists(out.split("://", 1)[1])
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
    (["--engine", "ray", "--address", "127.0.0.1:1"],
     "--address 127.0.0.1:1: no Ray cluster answers there ("),
    (["--engine", "ray", "--address", "nowhere"],
     "--address nowhere: give auto, HOST:PORT or ray://HOST:PORT"),
])
def test_engine_bad_input(tmp_path, extra, msg):
    p = cli("gen", "--out", tmp_path / "d", "--val", 10, *extra, check=False)
    assert p.returncode == 2 and p.stderr.startswith(f"error: {msg}")
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_engine_ray_without_ray_installed(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UsageError, match=r"pip install 'captchalab\[ray\]'"):
        generate(_recipe(), str(tmp_path / "d"), engine="ray", progress=False)
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------- multi-worker training

def _tf_config(n, i):
    import socket

    if not hasattr(_tf_config, "ports"):
        socks = [socket.socket() for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        _tf_config.ports = [s.getsockname()[1] for s in socks]
        for s in socks:
            s.close()
    cluster = {"worker": [f"localhost:{p}" for p in _tf_config.ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})


def _start_workers(args, n=2):
    import subprocess
    import sys

    from conftest import ENV

    if hasattr(_tf_config, "ports"):
        del _tf_config.ports  # fresh ports for each cluster
    return [subprocess.Popen([sys.executable, "-m", "captchalab", "train", *map(str, args)],
                             env={**ENV, "TF_CONFIG": _tf_config(n, i)}, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
            for i in range(n)]


def _finish(procs, timeout=300):
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, f"worker exited {p.returncode}\n{out}\n{err[-3000:]}"
    return outs


@pytest.fixture(scope="module")
def sharded_dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("mw") / "data"
    cli("gen", "--out", d, "--train", 512, "--val", 128, "--test", 64, "--shard-size", 128,
        "-q", "--workers", 2)
    return d


def _check_multi_worker_run(run, data, epochs):
    rows = (run / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, epochs + 1))
    config = json.loads((run / "config.json").read_text())
    assert (config["strategy"], config["replicas"], config["workers"]) == (
        "MultiWorkerMirroredStrategy", 2, 2)
    # only the chief wrote the run directory
    assert sorted(os.listdir(run)) == ["calibration.json", "checkpoints", "config.json",
                                       "history.csv", "history.png", "model.keras",
                                       "tensorboard"]
    import captchalab

    m = sh.read_manifest(str(data))
    rec = next(sh.iter_split(str(data), m, "test"))
    (pred,) = captchalab.load(str(run)).predict([rec["image/png"]])
    assert isinstance(pred.text, str) and 0.0 <= pred.confidence <= 1.0


@pytest.mark.slow  # ~30 s: two worker processes train together
def test_two_workers_train_and_the_model_loads(tmp_path, sharded_dataset):
    """Two worker processes on loopback ports (TF_CONFIG) train one run together."""
    run = tmp_path / "run"
    procs = _start_workers(["--data", sharded_dataset, "--out", run, "--arch", "small",
                            "--epochs", 1, "--batch-size", 32, "-q"])
    (chief_out, _), (worker_out, _) = _finish(procs)
    assert "best epoch 1" in chief_out and "best epoch 1" in worker_out
    _check_multi_worker_run(run, sharded_dataset, 1)


@pytest.mark.slow
def test_a_worker_killed_stops_the_cluster_and_resume_continues(tmp_path, sharded_dataset):
    """Worker 1 is SIGKILLed after epoch 1: the chief stops with one line saying to resume;
    restarted with --resume, both continue from the chief's checkpoint (~60 s)."""
    run = tmp_path / "run"
    procs = _start_workers(["--data", sharded_dataset, "--out", run, "--arch", "small",
                            "--epochs", 2, "--batch-size", 32, "-q"])
    state = run / "checkpoints" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (state.exists() and json.loads(state.read_text())["epoch"]):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    os.killpg(procs[1].pid, signal.SIGKILL)
    procs[1].communicate()
    _, err = procs[0].communicate(timeout=240)
    assert procs[0].returncode == 1, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error: worker 0 of 2: the cluster failed")
    assert "restart every worker with --resume" in err
    cut = json.loads(state.read_text())
    assert cut["epoch"] == 1 and not cut["done"]

    procs = _start_workers(["--out", run, "--resume", "-q"])
    (chief_out, _), _ = _finish(procs)
    assert "best epoch" in chief_out
    _check_multi_worker_run(run, sharded_dataset, 2)


@pytest.mark.parametrize("tf_config, extra, msg", [
    ("{not json", [], "TF_CONFIG is not a cluster spec"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "ps", "index": 0}}', [],
     "TF_CONFIG: this task (ps 0) is not one of the cluster's 2 chief/worker tasks"),
    (None, ["--time-budget", "1m"], "--time-budget with 2 workers (TF_CONFIG)"),
    ('{"cluster": {"worker": ["a:1", "b:2", "c:3", "d:4"]}, "task": {"type": "worker", '
     '"index": 1}}', [], "its train split has 3 shards for 4 workers"),
])
def test_multi_worker_bad_input(tmp_path, small_dataset, tf_config, extra, msg):
    import subprocess
    import sys

    from conftest import ENV

    env = {**ENV, "TF_CONFIG": tf_config or _tf_config(2, 0)}
    p = subprocess.run([sys.executable, "-m", "captchalab", "train", "--data", small_dataset,
                        "--out", tmp_path / "run", *extra], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "run").exists()


def test_worker_shards_are_disjoint_and_cover_the_split(sharded_dataset):
    from captchalab.train import input as inp

    m = sh.read_manifest(str(sharded_dataset))
    parts = []
    for i in range(2):
        ds = inp.shard_dataset(str(sharded_dataset), m, "train", batch_size=100, training=False,
                               shard=(i, 2))
        parts.append([tuple(y) for _, ys in ds for y in ys.numpy().tolist()])
    assert len(parts[0]) == len(parts[1]) == 256
    every = inp.shard_dataset(str(sharded_dataset), m, "train", batch_size=100, training=False)
    assert sorted(parts[0] + parts[1]) == sorted(tuple(y) for _, ys in every
                                                 for y in ys.numpy().tolist())


def test_a_node_with_other_library_versions_is_refused():
    from captchalab.gen import ray_engine
    from captchalab.gen.recipe import versions

    ray_engine.check_versions(versions())
    with pytest.raises(UsageError, match=r"pillow \S+ \(driver: 0\.1\); install the same"):
        ray_engine.check_versions({**versions(), "pillow": "0.1"})


def test_a_shard_lost_more_often_than_ray_retries_stops_the_run_with_one_line(tmp_path):
    """What Ray reports once its retries are spent becomes one line naming the shard."""
    from types import SimpleNamespace

    import ray.exceptions

    from captchalab.core.errors import RunFailed
    from captchalab.gen import ray_engine
    from captchalab.gen.recipe import ShardTask

    class LosingRay:  # the parts of the ray module run_tasks uses; every task is lost
        exceptions = ray.exceptions

        def put(self, value):
            return value

        def remote(self, **_options):
            return lambda fn: SimpleNamespace(remote=lambda *args: object())

        def wait(self, refs, num_returns, timeout):
            return refs[:num_returns], refs[num_returns:]

        def get(self, ref):
            raise ray.exceptions.WorkerCrashedError()

        def cancel(self, ref, force):
            pass

    recipe = _recipe(train=100, shard_size=50)
    todo = [ShardTask("train", 0, 2, 0, 50), ShardTask("train", 1, 2, 50, 100)]
    with pytest.raises(RunFailed, match=r"^shard train 0 of 2: its worker was lost 4 times "
                                        r"\(WorkerCrashedError\).*--resume$"):
        ray_engine.run_tasks(LosingRay(), recipe, todo, str(tmp_path), None, {})
