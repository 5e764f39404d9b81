"""Benchmark scripts run end to end at toy size (dry runs; the figures are not checked)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ENV

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_bench_gpu_dry_run_on_cpu(tmp_path):
    """bench/gpu.py on the CPU under TensorFlow: every section runs and results.json holds them."""
    env = {**ENV, "KERAS_BACKEND": "tensorflow"}
    out = tmp_path / "out"
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu.py"), *map(str, ["--out", out,
                    "--data", tmp_path / "data", "--train", 300, "--val", 50, "--test", 50,
                    "--budgets", 2, "--eval-every", 1, "--batches", 16, "--batch", 16,
                    "--seconds", 0.3, "--threads", 2])],
                   check=True, env=env, cwd=ROOT, capture_output=True)
    res = json.loads((out / "results.json").read_text())
    assert res["backend"] == "tensorflow" and res["gen"]["samples"] == 400
    assert set(res["input"]) == {"16", "256"}
    assert {(s["policy"], s["xla"]) for s in res["steps"]} == {
        ("float32", True), ("mixed_bfloat16", True), ("float32", False),
        ("mixed_bfloat16", False)}
    (run,) = res["runs"]
    assert run["curve"] and run["test_samples"] == 50 and 0 <= run["test"]["seq_acc"] <= 1
    assert (out / "accuracy-vs-time.png").stat().st_size > 10_000
    assert not (tmp_path / "data").exists()  # the generated data is removed at the end


@pytest.mark.slow
def test_bench_transfer_at_toy_size(tmp_path):
    """bench/transfer.py renders every test set with the right labels (each foreign one also
    without its marks), trains an ablation recipe on the fly, and scores each model (also
    reading 4 characters), runs read together and ddddocr on all."""
    out = tmp_path / "out"
    run = os.path.join(ROOT, "tests", "fixtures", "0ce7b0d", "run")
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "transfer.py"), "--samples", "12",
                    "--out", str(out), "--model", f"tiny={run}", "--train",
                    "universal-no-clutter", "--budget", "3s", "--known-length",
                    "--together", f"pair={run}+{run}", "--plain"],
                   check=True, env=ENV, cwd=ROOT, capture_output=True)
    res = json.loads((out / "transfer.json").read_text())
    foreign = ["claptcha", "kaptcha", "multicolorcaptcha", "wheezy-captcha",
               "flask-simple-captcha"]
    sets = ["captchalab-default", "captchalab-universal", "held-out-fonts", *foreign,
            *(f"{g}-plain" for g in foreign)]
    assert set(res["results"]["tiny"]) == {*sets, "_seconds"}
    for g in foreign:  # the same captchas without their marks: the same labels, other pixels
        marked, plain = out / "sets" / f"{g}-12", out / "sets" / f"{g}-plain-12"
        assert sorted(os.listdir(marked)) == sorted(os.listdir(plain))
        assert any((marked / f).read_bytes() != (plain / f).read_bytes()
                   for f in os.listdir(marked)), g
    assert set(res["results"]) == {"tiny", "universal-no-clutter", "tiny len4",
                                   "universal-no-clutter len4", "pair", "ddddocr"}
    # a run read together with itself reads as it does alone, captcha by captcha
    assert res["together"] == {"pair": [run, run]}
    assert all(res["paired"]["rows"]["pair"][s]["better"] == 0
               and res["paired"]["rows"]["pair"][s]["worse"] == 0 for s in res["results"]["tiny"]
               if not s.startswith("_"))
    assert res["known_length"] == 4
    cfg = json.loads((out / "runs" / "universal-no-clutter" / "config.json").read_text())
    style = cfg["recipe"]["style"]  # universal, its clutter at the library's defaults
    assert style["noise_dots"] == [30, 30] and "lines" not in style and style["fonts"] != ["builtin"]
    assert style["mix"]["ramp"] > 0 and cfg["train"]["standardize"] is True
    for row in res["results"].values():
        assert all(row[s]["n"] == 12 and 0 <= row[s]["seq_acc"] <= 1 for s in sets)
    # every row against the first, captcha by captcha: the split accounts for the difference
    assert res["paired"]["against"] == "tiny"
    assert set(res["paired"]["rows"]) == set(res["results"]) - {"tiny"}
    for m, row in res["paired"]["rows"].items():
        for s in sets:
            gained = round((res["results"][m][s]["seq_acc"] - res["results"]["tiny"][s]["seq_acc"])
                           * 12)
            assert row[s]["better"] - row[s]["worse"] == gained and 0 < row[s]["p"] <= 1
    from captchalab.gen import shards as sh
    data = out / "sets" / "held-out-fonts-12-data"
    m = sh.read_manifest(str(data))
    labels = [r["label/text"] for r in sh.iter_split(str(data), m, "test")]
    pngs = sorted(os.listdir(out / "sets" / "held-out-fonts-12"))
    assert [p[:-4].split("_", 1)[1] for p in pngs] == labels  # exported labels kept in order
    assert (out / "transfer.png").stat().st_size > 0


@pytest.mark.slow
def test_bench_transfer_with_a_smaller_charset(tmp_path):
    """--chars draws every set's labels from those characters, into sets of their own, and
    scores each model and ddddocr again reading only them."""
    out = tmp_path / "out"
    run = os.path.join(ROOT, "tests", "fixtures", "0ce7b0d", "run")
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "transfer.py"), "--samples", "6",
                    "--out", str(out), "--model", f"tiny={run}", "--chars", "0-9"],
                   check=True, env=ENV, cwd=ROOT, capture_output=True)
    res = json.loads((out / "transfer.json").read_text())
    assert set(res["results"]) == {"tiny", "tiny 0-9", "ddddocr", "ddddocr 0-9"}
    assert res["chars"] == "0123456789"
    for name in ("held-out-fonts", "kaptcha"):
        pngs = os.listdir(out / "sets" / f"{name}-6-0123456789")
        assert len(pngs) == 6 and all(p[:-4].split("_", 1)[1].isdigit() for p in pngs)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "transfer.py"), "--chars",
                        "0-9A", "--out", str(out)], env=ENV, cwd=ROOT, capture_output=True,
                       text=True)
    assert p.returncode and "give a subset of 0123456789abcdefghijklmnopqrstuvwxyz" in p.stderr
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "transfer.py"), "--against",
                        "nosuch", "--model", f"tiny={run}", "--out", str(out)], env=ENV,
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode and "--against: no row 'nosuch' (rows: tiny, ddddocr)" in p.stderr
    # another bench's sets, reused (nothing rendered), and the peer as the baseline
    again = tmp_path / "again"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "transfer.py"), "--samples",
                        "6", "--out", str(again), "--sets", str(out / "sets"), "--model",
                        f"tiny={run}", "--chars", "0-9", "--against", "ddddocr"],
                       check=True, env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert "rendered" not in p.stdout and not (again / "sets").exists()
    res2 = json.loads((again / "transfer.json").read_text())
    for m, row in res["results"].items():  # the same captchas, read the same
        assert {s: c["seq_acc"] for s, c in row.items() if s != "_seconds"} == \
            {s: c["seq_acc"] for s, c in res2["results"][m].items() if s != "_seconds"}
    assert res2["paired"]["against"] == "ddddocr"
    assert set(res2["paired"]["rows"]) == {"tiny", "tiny 0-9", "ddddocr 0-9"}


@pytest.mark.slow
def test_bench_transfer_trains_a_recipe_from_shards(tmp_path):
    """--shards renders the recipe's samples (with --mix) and trains on them, not on the fly,
    for --steps steps; universal with an ablation recipe plots what the part buys."""
    out = tmp_path / "out"
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "transfer.py"), "--samples", "4",
                    "--out", str(out), "--train", "universal,universal-no-degradations",
                    "--shards", "64", "--mix", "default:0.2", "--steps", "3", "--no-peer"],
                   check=True, env=ENV, cwd=ROOT, capture_output=True)
    res = json.loads((out / "transfer.json").read_text())
    assert res["shards"] == 64 and res["mix"] == "default:0.2"
    assert res["steps"] == 3 and res["budget"] is None
    for r in ("universal", "universal-no-degradations"):
        rows = (out / "runs" / r / "history.csv").read_text().splitlines()
        assert rows[-1].split(",")[1] == "3"  # the steps column
    assert (out / "ablation.png").stat().st_size > 0
    assert res["gen_seconds"]["universal-no-degradations"] > 0
    from captchalab.gen import shards as sh
    data = str(out / "data" / "universal-no-degradations")
    m = sh.read_manifest(data)
    assert m["splits"]["train"]["count"] == 64 and "blur" not in m["style"]  # at its default
    assert m["style"]["mix"]["share"] == 0.2
    cfg = json.loads((out / "runs" / "universal-no-degradations" / "config.json").read_text())
    assert not cfg["train"].get("on_the_fly")


@pytest.mark.slow
def test_bench_adapt_at_toy_size(tmp_path):
    """bench/adapt.py runs every arm at every N, self-training included, and writes the curve
    (toy budgets: plumbing)."""
    run = os.path.join(ROOT, "tests", "fixtures", "0ce7b0d", "run")
    out = tmp_path / "out"
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "adapt.py"), "--generator",
                    "wheezy-captcha", "--labels", "0,20", "--samples", "12", "--unlabelled", "20",
                    "--fitted-samples", "64", "--pretrain-budget", "3s", "--finetune-budget",
                    "3s", "--scratch-budget", "3s", "--base", run, "--out", str(out),
                    "--sets", str(tmp_path / "sets"), "--unlabelled-pool", "12", "--rounds", "1",
                    "--min-confidence", "0", "--zero-min-confidence", "0",  # an untrained model
                    "--pseudo-length", "1-4", "--match-fonts", "2"],
                   check=True, env=ENV, cwd=ROOT, capture_output=True)
    res = json.loads((out / "adapt.json").read_text())["results"]["wheezy-captcha"]
    assert set(res["scratch"]) == {"20"} and set(res["pretrained"]) == set(res["fitted"]) == {"0", "20"}
    for n in ("0", "20"):  # at N = 0 too: the fitted run labels the unlabelled captchas
        (r1,) = res["self-trained"][n].pop("rounds")
        assert 0 < r1["kept"] <= 12 and 0 <= r1["precision"] <= 1 and 0 <= r1["seq_acc"] <= 1
        assert res["self-trained"][n]["seconds"] > res["fitted"][n]["seconds"]
    for arm in res.values():
        assert all(c["n"] == 12 and 0 <= c["seq_acc"] <= 1 and c["seconds"] >= 0
                   for c in arm.values())
    assert res["fitted"]["20"]["seconds"] > res["fitted"]["0"]["seconds"]  # pretraining counted
    assert set(res["adapt"]) == {"0", "20"}  # the command, end to end, at every N
    assert json.loads((out / "wheezy-captcha" / "adapt-20" / "adapt.json").read_text())[
        "stages"][0]["counts"] == {"train": 10, "val": 10}  # the bench's own val fifth
    assert (out / "adapt.png").stat().st_size > 10_000
    # --arms: only those, and nothing fitted or pseudo-labelled on the way
    out2 = tmp_path / "out2"
    args = [sys.executable, os.path.join(ROOT, "bench", "adapt.py"), "--generator",
            "wheezy-captcha", "--labels", "20", "--samples", "12", "--arms", "scratch,pretrained",
            "--finetune-budget", "3s", "--scratch-budget", "3s", "--base", run, "--out",
            str(out2), "--sets", str(tmp_path / "sets")]
    subprocess.run(args, check=True, env=ENV, cwd=ROOT, capture_output=True)
    res = json.loads((out2 / "adapt.json").read_text())["results"]["wheezy-captcha"]
    assert set(res) == {"scratch", "pretrained"} and set(res["pretrained"]) == {"0", "20"}
    assert sorted(os.listdir(out2 / "wheezy-captcha")) == [
        "labels-20", "labels-20-data", "pool", "pretrained-20", "scratch-20"]
    assert (out2 / "curves.png").stat().st_size > 10_000
    # the same study again: kept from adapt.json, nothing trained again
    stamp = os.stat(out2 / "wheezy-captcha" / "scratch-20" / "model.keras").st_mtime_ns
    r = subprocess.run(args, check=True, env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert "wheezy-captcha: kept from" in r.stdout
    assert os.stat(out2 / "wheezy-captcha" / "scratch-20" / "model.keras").st_mtime_ns == stamp
    assert json.loads((out2 / "adapt.json").read_text())["results"]["wheezy-captcha"] == res


@pytest.mark.slow
def test_bench_audio_at_toy_size(tmp_path):
    """bench/audio.py: gen + train under a (scaled) budget, eval, inference speed, results.json
    and the plot."""
    out, png, voices = tmp_path / "out", tmp_path / "tta.png", tmp_path / "voices"
    script = os.path.join(ROOT, "bench", "voices.py")
    subprocess.run([sys.executable, script, "--out", voices, "--engines", "espeak,piper",
                    "--only", "espeak-m3,piper-joe"], check=True, env=ENV, cwd=ROOT,
                   capture_output=True)
    assert sorted(os.listdir(voices)) == ["espeak-m3", "piper-joe"]
    assert len(os.listdir(voices / "piper-joe")) == 36
    # the training pools of the two families whose engines come from PyPI
    subprocess.run([sys.executable, script, "--out", voices, "--engines", "espeak,piper",
                    "--pools", "--pool-size", "2"], check=True, env=ENV, cwd=ROOT,
                   capture_output=True)
    assert sorted(os.listdir(voices / "pool-espeak" / "W")) == ["00.wav", "01.wav"]
    assert len(os.listdir(voices / "pool-piper")) == 36
    # Flite is not on the test machine: one eSpeak voice stands in for a CMU one, so that
    # no-cmu (trained on the eSpeak and Piper pools) has a voice of the family it left out
    shutil.copytree(voices / "espeak-m3", voices / "flite-stand-in")
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "audio.py"), *map(str, [
        "--targets", "digits,no-cmu", "--train", 64, "--val", 16, "--test", 16, "--scale", 0.06,
        "--startup", 5, "--out", out, "--png", png, "--voices", voices,
        "--voices-png", tmp_path / "voices.png"])], check=True, env=ENV,
        cwd=ROOT, capture_output=True)
    res = json.loads((out / "results.json").read_text())
    assert set(res["held_out"]) == {"espeak-m3", "flite-stand-in", "piper-joe"}  # no pools
    assert res["held_out"]["espeak-m3"]["digits"]["samples"] == 16
    assert (tmp_path / "voices.png").stat().st_size > 10_000
    voices_used = json.loads((out / "no-cmu" / "data" / "dataset_info.json").read_text())["voices"]
    assert [v["name"] for v in voices_used] == ["builtin", "pool-espeak", "pool-piper"]
    nh = res["never_heard"]
    assert list(nh) == ["no-cmu"] and nh["no-cmu"]["voices"] == 1
    assert nh["no-cmu"]["seq_acc"] == res["held_out"]["flite-stand-in"]["no-cmu"]["seq_acc"]
    r, _ = res["results"]
    assert r["target"] == "digits" and r["test_samples"] == 16 and 0 <= r["seq_acc"] <= 1
    assert 0 <= r["tta"]["seq_acc"] <= 1 and (out / "digits" / "eval-tta" / "report.json").exists()
    assert r["history"] and res["inference"]["clips"] == 16 and res["inference"]["clips_per_s"] > 0
    # two stages: short gaps first, then the library's defaults from that run's weights
    assert r["warm_up"]["gen"] == ["--gap", "0.3-1"] and r["warm_history"]
    assert r["warm_history"][-1][0] < r["history"][0][0] <= r["total_s"]
    init = json.loads((out / "digits" / "run" / "config.json").read_text())["init_from"]
    assert init["run"].endswith("warm-run")
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("size", ["0", "100000"])
def test_bench_voices_refuses_a_pool_size_out_of_range(tmp_path, size):
    """bench/voices.py --pool-size outside 1..the eSpeak pairs: one line, nothing written."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "voices.py"), "--out",
                        tmp_path / "v", "--pools", "--pool-size", size], env=ENV, cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"error: --pool-size {size}: give 1 to \d+ renditions \(eSpeak's accent x variant "
        r"pairs\)", lines[0]), lines
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("spec", ["both", "=a+b", "both="])
def test_bench_transfer_refuses_a_malformed_together(tmp_path, spec):
    """bench/transfer.py --together without NAME=RUN+RUN: one line, before anything is rendered."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "transfer.py"), "--out",
                        tmp_path / "o", "--together", spec, "--no-peer"], env=ENV, cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"error: --together {spec!r}: give NAME=RUN+RUN"]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("arms", ["pretrained,foo", "self-trained", "scratch,self-trained"])
def test_bench_adapt_refuses_unknown_arms(tmp_path, arms):
    """bench/adapt.py --arms with an unknown arm, or self-trained without fitted: one line,
    before anything is rendered."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "adapt.py"), "--out",
                        tmp_path / "o", "--sets", tmp_path / "s", "--arms", arms], env=ENV,
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: --arms {arms}: pick from scratch,pretrained,fitted,self-trained,adapt; "
        "self-trained needs fitted"]
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()
