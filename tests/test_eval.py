"""Evaluation and inference: alignment and report figures on hand-worked cases, predict on every
accepted kind of input, eval on labelled folders, export agreement, bad input."""

import io
import json
import shutil

import numpy as np
import pytest

from captchalab.core.errors import UsageError
from captchalab.core.metrics import aligned_pairs, position_hits
from conftest import cli


@pytest.fixture(scope="module")
def pngs(small_dataset, tmp_path_factory):
    """The test split as SPLIT/INDEX_LABEL.png files + labels.csv."""
    from captchalab.gen.folders import export_png

    d = tmp_path_factory.mktemp("png") / "png"
    export_png(str(small_dataset), str(d), ["test"])
    return d


@pytest.mark.parametrize("truth,pred,pairs", [
    ("abcd", "abcd", "aa bb cc dd"),
    ("abcd", "abxd", "aa bb cx dd"),  # substitution
    ("abcd", "abd", "aa bb c_ dd"),  # deletion
    ("abcd", "abxcd", "aa bb _x cc dd"),  # insertion
    ("abcd", "", "a_ b_ c_ d_"),  # empty prediction
    ("", "ab", "_a _b"),
    ("aab", "ab", "aa a_ bb"),  # a dropped repeat
])
def test_alignment_hand_worked(truth, pred, pairs):
    want = [(p[0].replace("_", ""), p[1].replace("_", "")) for p in pairs.split()]
    assert aligned_pairs(truth, pred) == want
    assert position_hits(truth, pred) == [t == p for t, p in want if t]


def test_report_figures_hand_worked():
    from captchalab.eval.report import SCHEMA, build_report, markdown, style_groups

    truths = ["ab", "ab", "ab", "abc", "o0"]
    preds = ["ab", "a", "xb", "abcd", "00"]
    confs = [0.9, 0.8, 0.7, 0.6, 0.95]
    meta = {"font": ["A", "A", "B", "B", "B"], "rotate": [5.0] * 5}
    ctx = {"model": {"run": "r"}, "data": {"path": "d", "what": "test split"},
           "decoding": {"method": "greedy"}}
    r = build_report(truths, preds, confs, [f"s{i}" for i in range(5)], meta, "0abcdox", ctx)
    s = r["summary"]
    assert r["schema"] == SCHEMA and (s["samples"], s["characters"]) == (5, 11)
    assert s["seq_acc"] == pytest.approx(1 / 5)
    assert s["char_acc"] == pytest.approx(8 / 11)  # kept: 2 + 1 + 1 + 3 + 1
    assert s["cer"] == pytest.approx(4 / 11)  # one edit in each wrong sample
    assert s["seq_acc_ci95"][0] < 0.2 < s["seq_acc_ci95"][1]
    assert [(p["position"], p["samples"], p["char_acc"]) for p in r["by_position"]] == [
        (1, 5, 0.6), (2, 5, 0.8), (3, 1, 1.0)]
    assert r["by_length"] == [
        {"length": 2, "samples": 4, "seq_acc": 0.25, "char_acc": 5 / 8},
        {"length": 3, "samples": 1, "seq_acc": 0.0, "char_acc": 1.0}]
    assert [(c["truth"], c["pred"], c["count"]) for c in r["confusions"]] == [
        ("", "d", 1), ("a", "x", 1), ("b", "", 1), ("o", "0", 1)]
    assert r["confusions"][1]["rate"] == pytest.approx(1 / 4) and r["confusions"][0]["rate"] is None
    labels, counts = r["confusion_matrix"]["labels"], r["confusion_matrix"]["counts"]
    assert labels == [*"0abcdox", ""]
    assert counts[labels.index("a")][labels.index("a")] == 3
    assert counts[labels.index("o")][labels.index("0")] == 1
    assert r["by_style"] == {"font": [  # rotate does not vary: left out
        {"value": "A", "samples": 2, "seq_acc": 0.5, "char_acc": 3 / 4},
        {"value": "B", "samples": 3, "seq_acc": 0.0, "char_acc": 5 / 7}]}
    assert [e["sample"] for e in r["errors"]] == ["s4", "s1", "s2", "s3"]  # most confident first
    assert r["errors_total"] == 4
    assert "| `o` | `0` | 1 | 100.00 % |" in markdown(r)
    bins = style_groups(list(range(20)))
    assert len(bins) == 5 and all(len(idx) == 4 for _, idx in bins)


def test_predict_accepts_every_kind_of_image(run, pngs, small_dataset):
    import tensorflow as tf
    from PIL import Image

    import captchalab
    from captchalab.eval.predictor import Prediction
    from captchalab.gen import shards as sh

    rec = captchalab.load(run)
    files = sorted(pngs.glob("test/*.png"))[:6]
    arr = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    results = [rec.predict([str(f) for f in files]),
               rec.predict([f.read_bytes() for f in files]),
               rec.predict([Image.open(f) for f in files]),
               rec.predict(arr), rec.predict(list(arr / 255.0))]
    want = [(p.text, round(p.confidence, 5)) for p in results[0]]
    for got in results[1:]:
        assert [(p.text, round(p.confidence, 5)) for p in got] == want
    one = rec.predict(files[0])
    assert isinstance(one, Prediction) and one.text == want[0][0]
    assert isinstance(rec.predict(arr[0, :, :, 0]), Prediction)  # grey [H,W]
    # what the model is given at inference is exactly what training fed it
    m = sh.read_manifest(str(small_dataset))
    for r in list(sh.iter_split(str(small_dataset), m, "test"))[:4]:
        pil = np.asarray(Image.open(io.BytesIO(r["image/png"])).convert("RGB"))
        np.testing.assert_array_equal(pil, tf.io.decode_png(r["image/png"], channels=3).numpy())
    with pytest.raises(UsageError, match=r"is 80x30; .* reads 160x60"):
        rec.predict(np.zeros((30, 80, 3), np.uint8))
    assert isinstance(rec.predict(np.zeros((30, 80, 3), np.uint8), resize=True), Prediction)
    with pytest.raises(UsageError, match="not a readable image"):
        rec.predict(b"not an image")
    with pytest.raises(UsageError, match="float pixels"):
        rec.predict(np.full((60, 160, 3), 2.0))


@pytest.mark.slow  # ~35 s: a report, its gallery and plots, twice
def test_eval_report_on_the_dataset_and_on_its_images(run, pngs, small_dataset, tmp_path):
    p = cli("eval", "--model", run, "--data", small_dataset, "--out", tmp_path / "a", "--json")
    a = json.loads(p.stdout)
    assert {"schema", "model", "data", "decoding", "summary", "by_position", "by_length",
            "confusions", "confusion_matrix", "by_style", "errors", "errors_total",
            "files"} <= set(a)
    assert json.loads((tmp_path / "a" / "report.json").read_text())["summary"] == a["summary"]
    for name in ("confusion.png", "errors.png", "calibration.png"):
        assert (tmp_path / "a" / name).read_bytes()[:4] == b"\x89PNG"
    cal = a["calibration"]
    assert 0 <= cal["ece"] <= 1 and [r["coverage"] for r in cal["risk_coverage"]][-1] == 1.0
    assert cal["risk_coverage"][-1]["accuracy"] == pytest.approx(a["summary"]["seq_acc"])
    assert a["decoding"]["temperature"] == json.loads((run / "calibration.json").read_text())[
        "temperature"]  # fitted on val at the end of `train`
    assert (tmp_path / "a" / "report.md").read_text().startswith("# Evaluation of")
    assert "font" not in a["by_style"]  # one font in the default style
    p = cli("eval", "--model", run, "--images", pngs, "--out", tmp_path / "b")
    assert p.stdout.startswith("labelled images: 20 samples, greedy")
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert b["summary"] == a["summary"]  # the same images, from PNG files instead of shards
    assert sorted((e["truth"], e["pred"]) for e in b["errors"]) == sorted(
        (e["truth"], e["pred"]) for e in a["errors"])


def test_accuracy_by_style_value(run, tmp_path):
    from captchalab.eval.evaluate import evaluate

    data = tmp_path / "mixed"
    cli("gen", "--out", data, "--test", 30, "--fonts", "builtin,dejavu", "--rotate", "0-40",
        "--workers", 1, "-q")
    r, _ = evaluate(str(run), data=str(data), out=str(tmp_path / "r"), beam_width=4,
                    progress=False)
    fonts = r["by_style"]["font"]
    assert len(fonts) >= 2 and sum(f["samples"] for f in fonts) == 30  # builtin + DejaVu faces
    assert len(r["by_style"]["rotate"]) == 5  # a drawn float: quantile bins
    assert r["decoding"] == {"method": "beam search (width 4)", "beam_width": 4, "tta": False,
                             "length": None, "charset": None, "scales": [1.0], "blurs": [0.0],
                             "temperature": json.loads((run / "calibration.json").read_text())[
                                 "temperature"]}


def test_eval_folder_unreadable_and_wrongly_sized_files(run, pngs, tmp_path):
    from PIL import Image

    from captchalab.eval.evaluate import evaluate

    folder = tmp_path / "imgs"
    shutil.copytree(pngs / "test", folder)
    (folder / "junk_abcd.png").write_text("not a png")
    p = cli("eval", "--model", run, "--images", folder, check=False)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "junk_abcd.png: not a readable image" in p.stderr and "--skip-bad" in p.stderr
    assert not (run / "eval" / "imgs").exists()  # nothing written
    warnings = []
    r, _ = evaluate(str(run), images=str(folder), skip_bad=True, out=str(tmp_path / "r"),
                    progress=False, warn=warnings.append)
    assert r["summary"]["samples"] == 20 and "junk_abcd.png" in warnings[0]
    Image.new("RGB", (80, 30), "white").save(folder / "small_abcd.png")
    with pytest.raises(UsageError, match="small_abcd.png is 80x30"):
        evaluate(str(run), images=str(folder), skip_bad=True, out=str(tmp_path / "r"),
                 progress=False, warn=warnings.append)
    r, _ = evaluate(str(run), images=str(folder), skip_bad=True, resize=True,
                    out=str(tmp_path / "r"), progress=False, warn=warnings.append)
    assert r["summary"]["samples"] == 21


def test_predict_cli(run, pngs, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(pngs / "test", folder)
    (folder / "zz.png").write_bytes(b"\x89PNG broken")
    p = cli("predict", "--model", run, folder, "--json", "--skip-bad")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rows) == 20 and {"file", "text", "confidence"} == set(rows[0])
    assert "warning: skipped" in p.stderr and "zz.png" in p.stderr


@pytest.mark.slow
def test_predict_and_eval_with_a_known_length(run, small_dataset, pngs, tmp_path):
    import captchalab

    files = sorted(str(f) for f in pngs.glob("test/*.png"))
    p = cli("predict", "--model", run, *files, "--json", "--length", "3")
    assert {len(json.loads(line)["text"]) for line in p.stdout.splitlines()} == {3}
    got = captchalab.load(run, length=(2, 3)).predict(files, tta=True)
    assert {len(g.text) for g in got} <= {2, 3}
    assert {len(g.text) for g in captchalab.load(run, length=5).predict(files[:4])} == {5}
    p = cli("eval", "--model", run, "--data", small_dataset, "--length", "4", "--out", tmp_path)
    assert p.stdout.startswith("test split: 20 samples, the best path of 4 characters")
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["decoding"]["length"] == [4, 4] and r["by_length"][0]["length"] == 4


@pytest.mark.slow
def test_predict_eval_and_import_in_a_charset(run, small_dataset, pngs, tmp_path):
    import captchalab

    files = sorted(str(f) for f in pngs.glob("test/*.png"))
    p = cli("predict", "--model", run, *files, "--json", "--charset", "digits")
    assert set("".join(json.loads(line)["text"] for line in p.stdout.splitlines())) <= set("0123456789")
    got = captchalab.load(run, charset="abc", length=4).predict(files, tta=True)
    assert set("".join(g.text for g in got)) <= set("abc") and {len(g.text) for g in got} == {4}
    p = cli("eval", "--model", run, "--data", small_dataset, "--charset", "0-9a-z", "--out",
            tmp_path / "r")
    assert "characters '0123456789abcdefghijklmnopqrstuvwxyz' only" in p.stdout
    r = json.loads((tmp_path / "r" / "report.json").read_text())
    assert r["decoding"]["charset"] == "0123456789abcdefghijklmnopqrstuvwxyz"
    p = cli("eval", "--model", run, "--data", small_dataset, "--charset", "0-4",
            "--out", tmp_path / "r2", check=False)
    assert p.returncode == 2 and "outside the charset read ('01234')" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "r2").exists()
    unlabelled = tmp_path / "u"
    unlabelled.mkdir()
    for i, f in enumerate(files):
        (unlabelled / f"u{i}.png").write_bytes(open(f, "rb").read())
    cli("import", unlabelled, "--out", tmp_path / "u-data", "--label-with", run,
        "--min-confidence", 0, "--charset", "xyz", "--length", 4)
    m = json.loads((tmp_path / "u-data" / "dataset_info.json").read_text())
    assert m["charset"]["chars"] == "xyz" and m["origin"]["labelled_by"]["read_charset"] == "xyz"


def test_reading_in_a_charset_leaves_only_its_classes():
    """The logits of a charset's other classes are pushed out of reach: greedy, the best path of
    a length and the confidence see the charset's classes alone, renormalised."""
    from captchalab.core.charset import Charset
    from captchalab.core.ctc import decode, length_ids, softmax
    from captchalab.core.errors import UsageError
    from captchalab.eval.predictor import read_mask

    model = Charset("0123456789abcdefghijklmnopqrstuvwxyz")
    assert read_mask(model, None) == (None, None)
    chars, off = read_mask(model, "digits")
    assert chars == "0123456789" and off.shape == (37,)
    assert (off[:11] == 0).all() and (off[11:] < -1e3).all()
    # steps: 'o' over '0', blank, 'l' over '1', 'l' over '1'
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 0.1, (1, 4, 37)).astype(np.float32)
    o, zero, el, one = model.encode("o0l1")
    logits[0, 0, [o, zero]] = 5, 4
    logits[0, 1, 0] = 5
    logits[0, 2:, el] = 5
    logits[0, 2:, one] = 4
    assert decode(logits, model)[0] == ["ol"]
    texts, conf = decode(logits + off, model)
    assert texts == ["01"]
    allowed = [0, *model.encode("0123456789")]
    expect = np.exp(logits[0, :, allowed].T - logits[0, :, allowed].T.max(-1, keepdims=True))
    expect = expect / expect.sum(-1, keepdims=True)  # [steps, allowed classes]
    p = softmax(logits + off)[0]
    assert p[0, o] < 1e-30 and p[0, zero] == pytest.approx(expect[0, 1 + 0], rel=1e-5)
    assert conf[0] == pytest.approx(expect[0, 1] * expect[1, 0] * expect[2, 2] * expect[3, 2],
                                    rel=1e-4)
    ids, _ = length_ids(logits + off, 3, 3)
    assert len(t := model.decode(int(i) for i in ids[0] if i > 0)) == 3 and t.isdigit()
    with pytest.raises(UsageError, match=r"has 'AB', which the model cannot read"):
        read_mask(model, "0-9AB")


def test_test_time_augmentation_through_eval_and_predict(run, small_dataset, pngs, tmp_path):
    import captchalab
    from captchalab.core.ctc import decode_views

    p = cli("eval", "--model", run, "--data", small_dataset, "--tta", "--out", tmp_path / "r")
    assert p.stdout.startswith("test split: 20 samples, greedy, test-time augmentation")
    r = json.loads((tmp_path / "r" / "report.json").read_text())
    assert r["decoding"]["tta"] is True
    rec = captchalab.load(run)
    files = sorted(str(f) for f in pngs.glob("test/*.png"))
    tta = rec.predict(files, tta=True)
    # the same as decoding the four phase views (1/2 downscale) by hand
    x = np.stack([np.asarray(__import__("PIL.Image").Image.open(f).convert("RGB")) for f in files])
    views = [rec.logits(np.pad(x, ((0, 0), (dy, 0), (dx, 0), (0, 0)), mode="edge")[:, :60, :160])
             for dy in (0, 1) for dx in (0, 1)]
    texts, conf = decode_views("ctc", views, rec.charset, temperature=rec.temperature)
    assert [q.text for q in tta] == texts
    np.testing.assert_allclose([q.confidence for q in tta], conf, rtol=1e-4)
    p = cli("predict", "--model", run, *files[:3], "--tta")
    assert [line.split("\t")[1] for line in p.stdout.splitlines()] == texts[:3]


def test_reading_of_a_known_length_is_the_best_path_of_that_length():
    """length_ids against every path of small random logits; a hand-worked case; greedy where
    no path that long fits."""
    import itertools

    from captchalab.core.ctc import _log_softmax, greedy_ids, length_ids

    rng = np.random.default_rng(0)
    for _ in range(40):
        t, k, lo = int(rng.integers(1, 6)), int(rng.integers(2, 5)), int(rng.integers(1, 4))
        hi = lo + int(rng.integers(0, 2))
        logits = rng.normal(0, 2, (1, t, k)).astype(np.float32)
        logp = _log_softmax(logits)[0]
        best = max((sum(logp[i, c] for i, c in enumerate(path))
                    for path in itertools.product(range(k), repeat=t)
                    if lo <= len([c for i, c in enumerate(path)
                                  if c and (i == 0 or path[i - 1] != c)]) <= hi), default=None)
        ids, conf = length_ids(logits, lo, hi)
        if best is None:  # no path that long fits in the steps: the greedy reading
            np.testing.assert_array_equal(ids, greedy_ids(logits)[0])
        else:
            assert lo <= (ids[0] >= 0).sum() <= hi
            assert np.log(conf[0]) == pytest.approx(best, abs=1e-5)
    # classes blank, a, b, c; greedy reads "aba"
    p = np.array([[.1, .9, 0, 0], [.4, 0, .6, 0], [.1, .9, 0, 0], [.7, 0, 0, .3]])
    logits = np.log(p + 1e-9)[None].astype(np.float32)

    def read(ids):
        return [int(i) for i in ids[0] if i >= 0]

    assert read(greedy_ids(logits)[0]) == [1, 2, 1]
    ids, conf = length_ids(logits, 2, 2)  # "aa": the b's step read as a blank, .9 .4 .9 .7
    assert read(ids) == [1, 1] and conf[0] == pytest.approx(.9 * .4 * .9 * .7, rel=1e-4)
    ids, conf = length_ids(logits, 4, 4)  # "abac": the last blank read as c
    assert read(ids) == [1, 2, 1, 3] and conf[0] == pytest.approx(.9 * .6 * .9 * .3, rel=1e-4)
    assert read(length_ids(logits, 5, 6)[0]) == [1, 2, 1]  # 4 steps hold 5 at most: greedy


def test_squeeze_hand_worked():
    from captchalab.eval.predictor import squeeze

    batch = np.full((2, 4, 10, 3), 200, np.uint8)
    batch[0, :, :, :] = 10  # image 0: dark all over but for two light columns
    batch[0, :, 4:6] = 250
    out = squeeze(batch, 0.5)  # 5 columns wide, from column 2, on the image's median colour
    assert out.shape == batch.shape and out.dtype == np.uint8
    assert (out[0, :, :2] == 10).all() and (out[0, :, 7:] == 10).all()
    assert out[0, :, 2:7].max() > 100 and out[0, :, 2:7].min() == 10  # the light stripe, narrower
    assert (out[1] == 200).all()  # a flat image stays flat
    assert squeeze(batch, 1.0) is batch


def test_blur_hand_worked():
    from captchalab.eval.predictor import blur

    batch = np.zeros((1, 9, 9, 3), np.uint8)
    batch[0, 4, 4] = 255  # one light pixel: spread over its neighbours, total kept
    out = blur(batch, 1.0)
    assert out.shape == batch.shape and out.dtype == np.uint8
    assert 0 < out[0, 4, 4, 0] < 255 and out[0, 4, 5, 0] > 0 and out[0, 0, 0, 0] == 0
    assert abs(int(out[0, ..., 0].sum()) - 255) < 20
    assert blur(batch, 0.0) is batch


@pytest.mark.slow
def test_reading_at_several_widths_keeps_the_most_confident(run, pngs, tmp_path):
    import captchalab

    files = sorted(str(f) for f in pngs.glob("test/*.png"))
    scales = (1.0, 0.85, 0.7)
    both = captchalab.load(run, scales).predict(files)
    views = [captchalab.load(run, (s,)).predict(files) for s in scales]
    plain = captchalab.load(run)
    assert (plain.scales, plain.blurs) == ((1.0,), (0.0,))  # a run without its own: one view
    for i, q in enumerate(both):
        best = max((v[i] for v in views), key=lambda v: v.confidence)
        assert q.text == best.text and q.confidence == pytest.approx(best.confidence, rel=1e-5)
    p = cli("eval", "--model", run, "--images", pngs / "test", "--scales", "1,0.85,0.7",
            "--out", tmp_path / "r")
    assert "widths 1,0.85,0.7" in p.stdout
    r = json.loads((tmp_path / "r" / "report.json").read_text())
    assert r["decoding"]["scales"] == list(scales)
    p = cli("predict", "--model", run, *files[:3], "--scales", "1,0.85,0.7")
    assert [line.split("\t")[1] for line in p.stdout.splitlines()] == [q.text for q in both[:3]]
    # every width with every blur: 2 x 2 views, the most confident kept
    four = captchalab.load(run, (1.0, 0.8), (0.0, 1.0)).predict(files)
    views = [captchalab.load(run, (s,), (b,)).predict(files) for s in (1.0, 0.8) for b in (0, 1)]
    for i, q in enumerate(four):
        assert q.confidence == pytest.approx(max(v[i].confidence for v in views), rel=1e-5)
    p = cli("eval", "--model", run, "--images", pngs / "test", "--scales", "1,0.8", "--blurs",
            "0,1", "--json")
    assert json.loads(p.stdout)["decoding"]["blurs"] == [0.0, 1.0]


EVAL_BAD = [
    (["--images", "{empty}"], "holds no labelled images"),
    (["--images", "{upper}"], "label 'ABCD' has 'ABCD', which the model cannot output"),
    (["--images", "{none}"], "is not a folder"),
    (["--data", "{data}", "--skip-bad"], "--skip-bad applies to --images only"),
    (["--data", "{data}", "--images", "{upper}"], "give one of --data DIR"),
    (["--data", "{data}", "--out", "{file}"], "is a file; give a folder for the report"),
]


@pytest.mark.parametrize("args,msg", EVAL_BAD)
def test_eval_bad_input(run, small_dataset, tmp_path, args, msg):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    (tmp_path / "upper").mkdir()
    Image.new("RGB", (160, 60)).save(tmp_path / "upper" / "ABCD.png")
    (tmp_path / "file").write_text("x")
    paths = {"empty": tmp_path / "empty", "upper": tmp_path / "upper", "none": tmp_path / "none",
             "data": small_dataset, "file": tmp_path / "file"}
    p = cli("eval", "--model", run, *[a.format(**paths) for a in args], check=False)
    assert p.returncode == 2 and msg in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,msg", [
    (["predict", "--model", "{run}", "{none}"], "no such file or folder"),
    (["predict", "--model", "{none}", "{run}"], "not a trained captchalab run"),
    (["export", "--model", "{run}", "--format", "tflit"], "did you mean 'tflite'"),
    (["export", "{run}", "--png", "{none}", "--model", "{run}"], "not both"),
    (["export", "--png", "{none}"], "export needs DATA_DIR --png DIR"),
    (["export", "--model", "{run}", "--out", "{run}"], "exists and is not empty"),
    (["predict", "--model", "{run}", "--min-confidence", "2", "{run}"], "--min-confidence"),
    (["predict", "--model", "{run}", "-", "{run}"], "give '-' alone"),
    (["predict", "--model", "{run}", "--scales", "1,1.5", "{run}"], "in (0, 1]"),
    (["predict", "--model", "{run}", "--scales", "1,x", "{run}"], "not a list of numbers"),
    (["predict", "--model", "{run}", "--blurs", "0,5", "{run}"], "in [0, 4]"),
    (["predict", "--model", "{run}", "--length", "0", "{run}"], "lengths must be at least 1"),
    (["predict", "--model", "{run}", "--length", "4", "--beam-width", "3", "{run}"],
     "does not combine with --beam-width"),
    (["predict", "--model", "{run}", "--charset", "9-0", "{run}"], "runs backwards"),
    (["predict", "--model", "{run}", "--charset", "0-9A", "{run}"],
     "has 'A', which the model cannot read"),
])
def test_predict_and_export_bad_input(run, tmp_path, args, msg):
    p = cli(*[a.format(run=run, none=tmp_path / "none") for a in args], check=False)
    assert p.returncode == 2 and msg in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


FORMATS = ["savedmodel", "tflite",
           pytest.param("onnx", marks=pytest.mark.skipif(
               __import__("importlib").util.find_spec("tf2onnx") is None,
               reason="tf2onnx not installed (pip install 'captchalab[onnx]')"))]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_gives_the_keras_predictions(run, small_dataset, tmp_path, fmt):
    from PIL import Image

    import captchalab
    from captchalab.eval.export import export_model, load_exported
    from captchalab.gen import shards as sh

    path = export_model(str(run), fmt, str(tmp_path / fmt))
    side = json.loads((tmp_path / fmt / "captchalab.json").read_text())
    assert side["charset"] == "0123456789abcdefghijklmnopqrstuvwxyz"
    assert side["input"]["shape"] == [None, 60, 160, 3]
    m = sh.read_manifest(str(small_dataset))
    x = np.stack([np.asarray(Image.open(io.BytesIO(r["image/png"])).convert("RGB"))
                  for r in sh.iter_split(str(small_dataset), m, "test")])
    rec = captchalab.load(run)
    want = rec.logits(x)
    got = load_exported(path)(x)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert rec.decode(got)[0] == rec.decode(want)[0]
    with pytest.raises(UsageError, match="exists and is not empty"):
        export_model(str(run), fmt, str(tmp_path / fmt))


@pytest.mark.slow  # ~30 s: five predict runs
def test_predict_min_confidence_rejects_the_unsure(run, pngs):
    rows = [json.loads(line) for line in cli("predict", "--model", run, pngs / "test", "--json",
                                             "--min-confidence", 1.0).stdout.splitlines()]
    assert len(rows) == 20 and all(r["rejected"] and r["text"] is None for r in rows)
    p = cli("predict", "--model", run, pngs / "test", "--min-confidence", 0)
    assert "REJECTED" not in p.stdout and len(p.stdout.splitlines()) == 20


def test_calibration_metrics_hand_worked():
    from captchalab.core.metrics import calibration_error, risk_coverage

    conf = [0.95, 0.95, 0.55, 0.55, 0.15]
    hit = [True, False, True, True, False]
    ece, bins = calibration_error(conf, hit, bins=10)
    # bins: 0.95 -> acc 0.5 (2 samples), 0.55 -> acc 1.0 (2), 0.15 -> acc 0 (1)
    assert ece == pytest.approx((2 * 0.45 + 2 * 0.45 + 1 * 0.15) / 5)
    assert [(b["samples"], b["accuracy"]) for b in bins] == [(1, 0.0), (2, 1.0), (2, 0.5)]
    rc = risk_coverage(conf, hit, coverages=(0.4, 0.8, 1.0))
    assert [(r["kept"], r["accuracy"]) for r in rc] == [(2, 0.5), (4, 0.75), (5, 0.6)]


def test_temperature_fit_undoes_overconfidence():
    """heads logits sharpened 3x: the fitted temperature brings the confidences back."""
    from captchalab.core.charset import Charset
    from captchalab.eval.calibration import fit_temperature, sequence_confidence

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (4000, 1, 5))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    correct = rng.random(4000) < p.max(-1)[:, 0]  # right as often as the calibrated model says
    t = fit_temperature("heads", 3 * logits, None, Charset("abcd"), correct)
    assert 2.5 < t < 3.6
    conf = sequence_confidence("heads", 3 * logits, None, Charset("abcd"), t)
    assert abs(conf.mean() - correct.mean()) < 0.02
