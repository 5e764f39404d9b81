"""The shipped generalist: used without --model, by name, and by `captchalab.load()`; rebuilt
by `python -m captchalab.pretrained.build` with its checks."""

import json
import os
import shutil

import pytest

from captchalab.core.runconfig import PRETRAINED_DIR
from conftest import FIXTURE_RUN, cli


@pytest.fixture(scope="module")
def default_pngs(tmp_path_factory):
    """30 captchas of the library's default style, lengths 4-6, as NAME_LABEL.png files."""
    d = tmp_path_factory.mktemp("pre")
    cli("gen", "--out", d / "data", "--test", 30, "--length", "4-6", "--seed", 7, "-q",
        "--workers", 1)
    cli("export", d / "data", "--png", d / "png")
    return d


def test_the_shipped_model_reads_default_captchas_out_of_the_box(default_pngs, tmp_path):
    """predict without --model, eval --model pretrained (report outside the installation)."""
    p = cli("predict", default_pngs / "png" / "test", "--json")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rows) == 30
    right = sum(r["text"] == os.path.basename(r["file"]).split("_")[1][:-4] for r in rows)
    assert right >= 27, rows  # measured 0.968 on the default style (docs/transfer.md)
    p = cli("eval", "--model", "pretrained", "--data", default_pngs / "data", "--json",
            cwd=tmp_path)
    assert json.loads(p.stdout)["summary"]["seq_acc"] >= 0.9
    assert (tmp_path / "captchalab-pretrained" / "eval" / "data-test" / "report.json").is_file()
    assert not os.path.exists(os.path.join(PRETRAINED_DIR, "eval"))


def test_load_without_a_path_is_the_shipped_model():
    import numpy as np

    import captchalab

    rec = captchalab.load()
    assert os.path.abspath(rec.run_dir) == PRETRAINED_DIR
    assert rec.charset.chars == "0123456789abcdefghijklmnopqrstuvwxyz"
    assert isinstance(rec.predict(np.full((60, 160, 3), 255, np.uint8)).text, str)
    assert rec.scales == (1.0, 0.85, 0.7) and rec.blurs == (0.0, 1.0)  # docs/transfer.md


def test_the_shipped_model_fits_the_limit():
    size = sum(os.path.getsize(os.path.join(PRETRAINED_DIR, f))
               for f in os.listdir(PRETRAINED_DIR))
    assert size <= 5 * 1024 * 1024


def test_build_copies_a_run_and_refuses_what_cannot_ship(tmp_path, monkeypatch):
    from captchalab.core.errors import UsageError
    from captchalab.pretrained import build

    dest = tmp_path / "model"
    files = build.build(FIXTURE_RUN, str(dest))
    assert "model.keras" in files and (dest / "config.json").is_file()
    inference = json.loads((dest / "config.json").read_text())["inference"]
    assert inference == {"scales": build.SCALES, "blurs": build.BLURS}
    monkeypatch.setattr(build, "MAX_BYTES", 1000)
    with pytest.raises(UsageError, match="must fit in"):
        build.build(FIXTURE_RUN, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()
    monkeypatch.undo()
    digits = tmp_path / "digits"
    shutil.copytree(FIXTURE_RUN, digits)
    cfg = json.loads((digits / "config.json").read_text())
    cfg["charset"]["chars"] = "0123456789"
    (digits / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError, match="cannot read 'abcdefghijklmnopqrstuvwxyz'"):
        build.build(str(digits), str(dest))
    assert (dest / "model.keras").is_file()  # what was there is kept


def test_a_label_the_shipped_model_cannot_express(tmp_path):
    data = tmp_path / "upper"
    cli("gen", "--out", data, "--test", 4, "--charset", "A-Z", "-q", "--workers", 1)
    p = cli("eval", "--model", "pretrained", "--data", data, check=False, cwd=tmp_path)
    assert p.returncode == 2 and "cannot output" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
