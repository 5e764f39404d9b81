"""`captchalab adapt`: a site's folders to a model that reads them, in one command."""

import json
import shutil

import pytest

from captchalab.eval.adapt import doubt, hold_out, labels_length
from captchalab.gen import shards as sh
from conftest import FIXTURE_RUN, cli


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A site's captchas (light text on dark, 200x70): 30 labelled NAME_LABEL.png files and 30
    unlabelled INDEX.png files."""
    root = tmp_path_factory.mktemp("site")
    cli("gen", "--out", root / "data", "--test", 60, "--size", "200x70", "--bg", "20-40", "--fg",
        "200-230", "--seed", 3, "-q", "--workers", 1)
    cli("export", root / "data", "--png", root / "png")
    (root / "labelled").mkdir()
    (root / "unlabelled").mkdir()
    for i, f in enumerate(sorted((root / "png" / "test").glob("*.png"))):
        if i < 30:
            shutil.copy(f, root / "labelled" / f.name)
        else:
            shutil.copy(f, root / "unlabelled" / f"{i}.png")
    return root


def test_hold_out_draws_a_fifth_as_val_unless_the_folder_has_one():
    items = [(f"{i}.png", "ab12", "train") for i in range(100)] + [("t.png", "zz99", "test")]
    split = hold_out(items, seed=0)
    assert sum(s == "val" for _, _, s in split) == 20 and split[-1][2] == "test"
    assert split == hold_out(items, seed=0) and split != hold_out(items, seed=1)
    small = hold_out([(f"{i}.png", "ab1", "train") for i in range(12)], seed=0)
    assert sum(s == "val" for _, _, s in small) == 6  # at least 10, at most half
    given = [("a.png", "ab", "train"), ("b.png", "abc", "val")]
    assert hold_out(given, seed=0) == given
    assert labels_length(given) == "2-3" and labels_length(items) == "4"


def test_without_labels_an_unsure_base_is_told_to_label_some():
    said, record = [], {}
    doubt(0.9, record, said.append)
    assert not said and not record
    doubt(0.27, record, said.append)
    assert said == [f"note: {record['note']}"] and "0.27" in said[0] and "--labelled" in said[0]


@pytest.mark.slow  # ~60 s: fits, renders, pretrains, fine-tunes and self-trains a round
def test_adapt_end_to_end_through_the_cli(site, tmp_path):
    out = tmp_path / "ad"
    p = cli("adapt", "--labelled", site / "labelled", "--unlabelled", site / "unlabelled",
            "--out", out, "--base", FIXTURE_RUN, "--renderings", 200, "--pretrain-budget", "4s",
            "--finetune-budget", "3s", "--rounds", 1, "--min-confidence", 0, "--match-fonts", 2)
    rec = json.loads((out / "adapt.json").read_text())
    names = [s["stage"] for s in rec["stages"]]
    assert names == ["labels", "base", "fit-style", "renderings", "pretrain", "fine-tune",
                     "pseudo-labels 1", "round 1"]
    assert rec["stages"][0]["counts"] == {"train": 20, "val": 10}
    assert rec["length"] == "4" and rec["from_stage"] == "round 1"
    for s in rec["stages"]:
        if s["stage"] in ("base", "pretrain", "fine-tune", "round 1"):
            assert s["held_out"]["samples"] == 10 and 0 <= s["held_out"]["seq_acc"] <= 1
    last = rec["stages"][-1]["command"]
    assert "--init-from" in last and "--resize" in last and "--mix-data" in last
    pseudo = rec["stages"][-2]["command"]
    assert "--most-confident 0.3" in pseudo and "--val-share" not in pseudo
    assert "$ captchalab fit-style" in p.stdout and "model: " in p.stdout
    assert (out / "style.png").is_file()
    cfg = json.loads((out / "model" / "config.json").read_text())
    # round 1 starts from the pretraining (as the study's arm), reading the fine-tuned run's labels
    assert cfg["train"]["init_from"].endswith("pretrain") and cfg["train"]["mix_data"]
    got = cli("predict", "--model", out / "model", "--resize", "--length", 4,
              *sorted((site / "unlabelled").glob("*.png"))[:2])
    assert len(got.stdout.strip().splitlines()) == 2
    # again into the same folder: refused, nothing removed; with --overwrite, replaced
    again = cli("adapt", "--labelled", site / "labelled", "--out", out, check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert (out / "model" / "model.keras").is_file()


@pytest.mark.slow  # ~20 s: fine-tunes the base on the labels directly
def test_adapt_with_labels_only_fine_tunes_the_base_by_default(site, tmp_path):
    out = tmp_path / "ad"
    p = cli("adapt", "--labelled", site / "labelled", "--out", out, "--base", FIXTURE_RUN,
            "--finetune-budget", "3s")
    rec = json.loads((out / "adapt.json").read_text())
    assert rec["pretrain_budget"] == "0"  # no pretraining by default when there are labels
    assert [s["stage"] for s in rec["stages"]] == ["labels", "base", "fine-tune"]
    assert "--resize" in rec["stages"][-1]["command"] and "model: " in p.stdout
    assert f"read with: captchalab predict --model {out}/model --length 4 --resize" in p.stdout
    assert (out / "model" / "model.keras").is_file() and not (out / "renderings").exists()


@pytest.mark.slow  # ~30 s: two rounds on the readings alone
def test_adapt_without_labels_self_trains_on_the_most_confident_readings(site, tmp_path):
    out = tmp_path / "ad"
    p = cli("adapt", "--unlabelled", site / "unlabelled", "--out", out, "--base", FIXTURE_RUN,
            "--finetune-budget", "3s", "--rounds", 2, "--length", 4)
    rec = json.loads((out / "adapt.json").read_text())
    assert rec["pretrain_budget"] == "0" and rec["min_confidence"] == 0.0
    stages = {s["stage"]: s["command"] for s in rec["stages"]}
    assert list(stages) == ["pseudo-labels 1", "round 1", "pseudo-labels 2", "round 2"]
    assert "--most-confident 0.3 --val-share 0.1" in stages["pseudo-labels 1"]
    assert "--most-confident 0.5" in stages["pseudo-labels 2"]
    assert f"--data {out}/pseudo-2 " in stages["round 2"] and "--mix-data" not in stages["round 2"]
    assert "--resize" in stages["round 1"] and "held_out" not in rec["stages"][-1]
    m = sh.read_manifest(str(out / "pseudo-1"))
    assert m["counts"] == {"train": 8, "val": 1}  # 0.3 of 30, a tenth of them val
    lowest = m["origin"]["labelled_by"]["lowest_kept_confidence"]
    assert ("note" in rec) == (lowest < 0.5) and ("note: " in p.stdout) == (lowest < 0.5)
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["train"]["init_from"].endswith("round-1")  # each round goes on from the last
    assert "$ captchalab import" in p.stdout and "--resize IMAGES" in p.stdout


@pytest.mark.parametrize("setup,args,msg", [
    ("none", [], "adapt needs the site's captchas"),
    ("few", ["--labelled", "{few}"], "3 labelled captchas; adapt needs at least 10"),
    ("upper", ["--labelled", "{upper}"], "the labels use 'AB'"),
    ("file", ["--unlabelled", "{file}"], "is not a folder"),
    ("used", ["--labelled", "{upper}"], "exists and is not empty"),
    ("budget", ["--labelled", "{upper}", "--pretrain-budget", "soon"], "is not a duration"),
    ("nolabels", ["--unlabelled", "{few}", "--rounds", "0"], "--rounds 0 needs --labelled"),
    ("base", ["--labelled", "{upper}", "--base", "{few}"], "few"),
    ("finetune", ["--labelled", "{upper}", "--finetune-budget", "-1"], "--finetune-budget"),
    ("charset", ["--labelled", "{upper}", "--charset", "z-a"], "z-a"),
    ("length", ["--labelled", "{upper}", "--length", "x"], "x"),
    ("rounds", ["--labelled", "{upper}", "--rounds", "-1"], "--rounds"),
    ("share", ["--labelled", "{upper}", "--pseudo-share", "1"], "--pseudo-share"),
    ("confidence", ["--labelled", "{upper}", "--min-confidence", "1"], "--min-confidence"),
    ("renderings", ["--labelled", "{upper}", "--renderings", "5"], "--renderings"),
    ("fonts", ["--labelled", "{upper}", "--match-fonts", "-1"], "--match-fonts"),
])
def test_adapt_bad_input(tmp_path, setup, args, msg):
    from PIL import Image

    (tmp_path / "few").mkdir()
    (tmp_path / "upper").mkdir()
    for i in range(3):
        Image.new("RGB", (160, 60), "white").save(tmp_path / "few" / f"{i}_ab{i}1.png")
    for i in range(12):
        Image.new("RGB", (160, 60), "white").save(tmp_path / "upper" / f"{i}_AB{i % 10}1.png")
    (tmp_path / "file").write_text("x")
    out = tmp_path / "out"
    if setup == "used":
        out.mkdir()
        (out / "mine.txt").write_text("keep")
    args = [a.format(**{k: tmp_path / k for k in ("few", "upper", "file")}) for a in args]
    base = [] if "--base" in args else ["--base", FIXTURE_RUN]
    p = cli("adapt", *args, "--out", out, *base, check=False)
    assert p.returncode == 2 and msg in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert (out / "mine.txt").read_text() == "keep" if setup == "used" else not out.exists()
