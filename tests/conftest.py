"""Shared helpers: run the real CLI in a subprocess, make tiny datasets once per session."""

import hashlib
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}


def cli(*args, check=True, **kw):
    """Run `captchalab ARGS…`; returns the CompletedProcess (text mode)."""
    p = subprocess.run([sys.executable, "-m", "captchalab", *map(str, args)],
                       capture_output=True, text=True, env=ENV, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"captchalab {' '.join(map(str, args))} -> {p.returncode}\n"
                             f"{p.stdout}\n{p.stderr}")
    return p


def record_hashes(data_dir, split):
    """sha256 of each record payload of a split, in index order."""
    from captchalab.gen import shards as sh
    from captchalab.gen.tfrecord import read_records

    m = sh.read_manifest(str(data_dir))
    out = []
    for p in sh.shard_paths(str(data_dir), m, split):
        with open(p, "rb") as f:
            out.extend(hashlib.sha256(r).hexdigest() for r in read_records(f))
    return out


# a run written by commit 0ce7b0d (arch small, 0-9a-z, 160x60)
FIXTURE_RUN = os.path.join(os.path.dirname(__file__), "fixtures", "0ce7b0d", "run")

SMALL = ["--train", 60, "--val", 20, "--test", 20, "--shard-size", 25, "-q"]


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds") / "small"
    cli("gen", "--out", d, *SMALL, "--workers", 2)
    return d


@pytest.fixture(scope="session")
def run(small_dataset, tmp_path_factory):
    """A run trained for one epoch on small_dataset (weights barely trained: for plumbing)."""
    r = tmp_path_factory.mktemp("run") / "run"
    cli("train", "--data", small_dataset, "--out", r, "--arch", "small", "--epochs", 1,
        "--batch-size", 16, "-q")
    return r
