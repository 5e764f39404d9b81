"""Robustness studies: corruptions, deterministic sweep sets, bad input, a tiny study end to end."""

import json
import shutil

import numpy as np
import pytest

from captchalab.core.errors import UsageError
from conftest import cli, record_hashes


@pytest.fixture(scope="module")
def images():
    from captchalab.gen.stream import stream_recipe, stream_samples

    return [img for img, _ in stream_samples(stream_recipe(), "test", workers=0, stop=4)]


def test_corruptions_keep_shape_and_dtype_and_grow_with_severity(images):
    from captchalab.eval.corruptions import CORRUPTIONS, corrupt

    assert len(CORRUPTIONS) == 12
    for name in CORRUPTIONS:
        diffs = []
        for s in range(1, 6):
            d = []
            for i, img in enumerate(images):
                out = corrupt(img, name, s, seed=0, index=i)
                assert out.shape == img.shape and out.dtype == np.uint8, name
                np.testing.assert_array_equal(out, corrupt(img, name, s, seed=0, index=i))
                d.append(np.abs(out.astype(float) - img).mean())
            diffs.append(np.mean(d))
        assert diffs[0] > 0, name
        assert all(b >= 0.9 * a for a, b in zip(diffs, diffs[1:], strict=False)), (name, diffs)
        assert diffs[4] > 1.5 * diffs[0], (name, diffs)


def test_sweep_sets_are_deterministic_and_differ_only_in_their_knob(tmp_path):
    from captchalab.eval.robust import recipe_key, render_set, variant
    from captchalab.gen.stream import stream_recipe

    base = stream_recipe().to_json()
    a = variant(base, 12, "rotate", "0")
    b = variant(base, 12, "rotate", "0")
    assert recipe_key(a) == recipe_key(b)
    clean = variant(base, 12)
    assert {k for k in a.style if a.style[k] != clean.style[k]} == {"rotate"}
    assert a.style["rotate"] == [0.0, 0.0]
    d1 = render_set(a, str(tmp_path / "one"), workers=1)
    d2 = render_set(b, str(tmp_path / "two"), workers=2)
    assert record_hashes(d1, "test") == record_hashes(d2, "test")
    assert render_set(a, str(tmp_path / "one"), workers=1) == d1  # reused, not re-rendered
    with pytest.raises(UsageError, match="rotate"):
        variant(base, 12, "rotate", "500")


@pytest.mark.parametrize("args,msg", [
    (["--sweep", "rotat=0,10"], "did you mean 'rotate'"),
    (["--sweep", "rotate"], "write NAME=V1,V2"),
    (["--corruptions", "jpg"], "did you mean 'jpeg'"),
    (["--severities", "0-3"], "severities run from 1 to 5"),
    (["--severities", "6"], "severities run from 1 to 5"),
    (["--corruptions", "none"], "nothing to measure"),
    (["--sweep", "noise-dots=-5"], "noise_dots"),
    (["--sweep", "charset=A-Z"], "cannot output"),
    (["--sweep", "snr=10,20"], "'snr' does not apply to image models"),
    (["--corruptions", "jpeg", "--samples", "0"], "--samples: 0"),
    (["--corruptions", "jpeg", "--base", "/nonexistent/data"], "/nonexistent/data"),
    (["--corruptions", "jpeg", "--workers", "0"], "--workers"),
])
def test_robust_bad_input(run, tmp_path, args, msg):
    p = cli("robust", "--model", run, "--out", tmp_path / "study", *args, check=False)
    assert p.returncode == 2 and msg in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "study").exists()


@pytest.mark.slow  # ~22 s: a whole sweep over a trained run
def test_tiny_study_end_to_end(run, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(run, other)
    out = tmp_path / "study"
    args = ["robust", "--model", run, "--model", other, "--baseline", run, "--out", out,
            "--sweep", "rotate=0,40", "--sweep", "length=3,5", "--corruptions", "jpeg,occlusion",
            "--severities", "1,3", "--samples", 12, "--workers", 1, "-q"]
    p = cli(*args)
    assert "mCE 1.000" in p.stdout
    r = json.loads((out / "robust.json").read_text())
    assert r["schema"] == "captchalab.robust/1" and [m["name"] for m in r["models"]] == ["run", "copy"]
    assert [v["value"] for v in r["sweeps"]["rotate"]] == ["0", "40"]
    assert [row["severity"] for row in r["corruptions"]["occlusion"]] == [1, 3]
    # the copy has the same weights: the same figures on the same sets
    for rows in [*r["sweeps"].values(), *r["corruptions"].values()]:
        for row in rows:
            assert row["results"]["run"] == row["results"]["copy"]
    for name in ("robust.md", "sweep-rotate.png", "sweep-length.png", "corruptions.png",
                 "corruption-curves.png"):
        assert (out / name).exists(), name
    sets = sorted(p.name for p in (out / "sets").iterdir())
    assert len(sets) == 5  # clean + 2 rotate + 2 length
    cli(*args)  # again: sets reused, same figures
    again = json.loads((out / "robust.json").read_text())
    assert again["sweeps"] == r["sweeps"] and again["corruptions"] == r["corruptions"]
    assert sorted(p.name for p in (out / "sets").iterdir()) == sets


def test_study_with_test_time_augmentation_at_two_widths(run, tmp_path):
    import captchalab
    from captchalab.eval.report import accuracy
    from captchalab.eval.robust import read_set

    out = tmp_path / "study"
    cli("robust", "--model", run, "--out", out, "--corruptions", "jpeg", "--severities", 1,
        "--samples", 12, "--workers", 1, "--tta", "--scales", "1,0.8", "--blurs", "0,1", "-q")
    r = json.loads((out / "robust.json").read_text())
    md = (out / "robust.md").read_text()
    assert r["tta"] is True and "test-time augmentation" in md and "widths 1,0.8" in md
    assert r["scales"] == {"run": [1.0, 0.8]} and r["blurs"] == {"run": [0.0, 1.0]}
    images, truths, _ = read_set(str(out / r["clean"]["set"]))
    preds = captchalab.load(run, (1, 0.8), (0, 1)).predict(list(images), tta=True)
    want = json.loads(json.dumps(accuracy(truths, [p.text for p in preds])))
    assert r["clean"]["results"]["run"] == want


def test_mce_against_a_hand_worked_case():
    """Two corruptions x two severities; CE and mCE worked out by hand (ImageNet-C's definition)."""
    from captchalab.eval.robust import summarize

    def rows(*pairs):  # (model A accuracy, baseline B accuracy) per severity
        return [{"severity": s + 1, "results": {"A": {"seq_acc": a}, "B": {"seq_acc": b}}}
                for s, (a, b) in enumerate(pairs)]

    report = {"baseline": "B", "models": [{"name": "A"}, {"name": "B"}],
              "clean": {"results": {"A": {"seq_acc": 0.9}, "B": {"seq_acc": 0.8}}},
              "corruptions": {"blur": rows((0.8, 0.6), (0.6, 0.4)),   # errors 0.2+0.4 vs 0.4+0.6
                              "jpeg": rows((0.9, 0.9), (0.7, 0.8))}}  # errors 0.1+0.3 vs 0.1+0.2
    s = summarize(report)
    assert s["A"]["CE"]["blur"] == pytest.approx(0.6 / 1.0)
    assert s["A"]["CE"]["jpeg"] == pytest.approx(0.4 / 0.3)
    assert s["A"]["mCE"] == pytest.approx((0.6 + 4 / 3) / 2)
    assert s["B"]["mCE"] == pytest.approx(1.0)
    assert s["A"]["mean_corruption_seq_acc"] == pytest.approx(0.75)
    assert s["A"]["retained"] == pytest.approx(0.75 / 0.9)
