"""Datasets and runs written by earlier versions still open: a fixture written by commit 0ce7b0d
(a dataset of 8/8/8 samples and a `small` run trained on it for one epoch), and the run-format
migration on hand-made configs."""

import json
import os
import shutil

import pytest

from captchalab.core.errors import UsageError
from captchalab.core.runconfig import CONFIG_VERSION, migrate
from conftest import cli

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "0ce7b0d")


def test_a_dataset_written_by_0ce7b0d_verifies_and_reads(tmp_path):
    from captchalab.gen import shards as sh

    assert "ok" in cli("verify", os.path.join(FIXTURE, "data")).stdout
    m = sh.read_manifest(os.path.join(FIXTURE, "data"))
    recs = list(sh.iter_split(os.path.join(FIXTURE, "data"), m, "test"))
    assert len(recs) == 8 and all(len(r["label/text"]) == 4 for r in recs)


def test_a_run_written_by_0ce7b0d_evaluates_predicts_and_migrates(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(os.path.join(FIXTURE, "run"), run)  # eval writes RUN/eval
    stored = json.loads((run / "config.json").read_text())
    assert "config_version" not in stored  # written before versions were recorded
    cli("eval", "--model", run, "--data", os.path.join(FIXTURE, "data"), "--out", tmp_path / "e")
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["summary"]["samples"] == 8
    cli("export", os.path.join(FIXTURE, "data"), "--png", tmp_path / "png", "--split", "test")
    pngs = sorted((tmp_path / "png").rglob("*.png"))
    out = [json.loads(line) for line in cli("predict", "--model", run, "--json",
                                            *pngs).stdout.splitlines()]
    assert len(pngs) == len(out) == 8 and all(set(o["text"]) <= set("0123456789abcdefghijklmnopqrstuvwxyz")
                                 for o in out)
    from captchalab.core.runconfig import read_run_config
    assert read_run_config(str(run))["config_version"] == CONFIG_VERSION


def test_migrate_fills_settings_that_old_runs_lacked():
    old = {"input": {"version": 2}, "train": {"arch": "crnn", "lr": 0.003}}
    new = migrate(old, "RUN")
    assert new["config_version"] == CONFIG_VERSION
    assert new["train"] == {"jitter": 0, "resample": "box", "arch": "crnn", "lr": 0.003}
    assert migrate(new, "RUN") == new  # the current version passes through unchanged
    kept = migrate({"input": {"version": 2}, "train": {"jitter": 1, "resample": "fold"}}, "RUN")
    assert kept["train"] == {"jitter": 1, "resample": "fold"}  # recorded values win


@pytest.mark.parametrize("config, message", [
    ({"config_version": CONFIG_VERSION + 1, "input": {"version": 2}}, "newer captchalab"),
    ({"input": {"version": 1}}, "pre-scaled grey images"),
])
def test_migrate_refuses_runs_it_cannot_read(config, message):
    with pytest.raises(UsageError, match=message):
        migrate(config, "RUN")


def test_eval_out_refuses_a_folder_that_is_not_a_report_and_predict_reads_stdin(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(os.path.join(FIXTURE, "run"), run)
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "report.md").write_text("my own notes")
    p = cli("eval", "--model", run, "--data", os.path.join(FIXTURE, "data"), "--out", mine,
            check=False)
    assert p.returncode == 2 and "holds other files and no earlier report.json" in p.stderr
    assert (mine / "report.md").read_text() == "my own notes"
    cli("export", os.path.join(FIXTURE, "data"), "--png", tmp_path / "png", "--split", "test")
    png = sorted((tmp_path / "png").rglob("*.png"))[0]
    with open(png, "rb") as f:
        p = cli("predict", "--model", run, "-", stdin=f)
    (line,) = p.stdout.splitlines()
    assert line.startswith("-\t")


def _damage(root, what, split="test"):
    """Copy the fixture to `root` and damage one thing (a shard of `split`); returns (data,
    run)."""
    data, run = root / "data", root / "run"
    shutil.copytree(os.path.join(FIXTURE, "data"), data)
    shutil.copytree(os.path.join(FIXTURE, "run"), run)
    shard = data / f"captcha-{split}.tfrecord-00000-of-00001"
    if what == "manifest-key":
        m = json.loads((data / "dataset_info.json").read_text())
        del m["splits"]
        (data / "dataset_info.json").write_text(json.dumps(m))
    elif what == "manifest-type":
        m = json.loads((data / "dataset_info.json").read_text())
        m["image"]["width"] = "160"
        (data / "dataset_info.json").write_text(json.dumps(m))
    elif what == "shard-missing":
        shard.unlink()
    elif what == "shard-truncated":
        shard.write_bytes(shard.read_bytes()[:3000])
    elif what == "shard-is-dir":
        shard.unlink()
        shard.mkdir()
    elif what == "model-truncated":
        (run / "model.keras").write_bytes((run / "model.keras").read_bytes()[:1000])
    elif what == "model-random":
        (run / "model.keras").write_bytes(os.urandom(5000))
    elif what == "config-not-json":
        (run / "config.json").write_text("{")
    elif what == "config-key":
        c = json.loads((run / "config.json").read_text())
        del c["charset"]
        (run / "config.json").write_text(json.dumps(c))
    return data, run


DAMAGE = [("manifest-key", "lacks splits"), ("manifest-type", "image.width is not int"),
          ("shard-missing", "is missing"), ("shard-truncated", "truncated or replaced"),
          ("shard-is-dir", "truncated or replaced"), ("model-truncated", "cannot be loaded"),
          ("model-random", "cannot be loaded"), ("config-not-json", "not JSON"),
          ("config-key", "lacks charset.chars")]


@pytest.mark.parametrize("what, message", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damaged_data_and_runs_give_one_line_and_exit_1(tmp_path, what, message):
    data, run = _damage(tmp_path, what)
    p = cli("eval", "--model", run, "--data", data, "--out", tmp_path / "e", check=False)
    assert p.returncode == 1, p.stderr
    assert p.stderr.count("\n") == 1 and message in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("what", ["manifest-key", "shard-missing", "shard-truncated"])
def test_train_on_damaged_data_leaves_no_run_folder(tmp_path, what):
    data, _ = _damage(tmp_path, what, split="train")
    p = cli("train", "--data", data, "--out", tmp_path / "t", "--epochs", 1, check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert not (tmp_path / "t").exists()
