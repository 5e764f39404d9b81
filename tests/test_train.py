"""Training: metrics on hand-worked cases, CTC decoding, pipeline shapes, a tiny run via the CLI."""

import csv
import json

import numpy as np
import pytest

from captchalab.core.charset import Charset
from captchalab.core.metrics import (
    character_accuracy,
    character_error_rate,
    sequence_accuracy,
    summary,
)
from conftest import cli


def test_metrics_hand_worked():
    truths = ["abcd", "abcd", "abcd", "abcd", "abcd"]
    preds = ["abcd", "abxd", "abd", "abccd", ""]
    # exact: 1/5; kept truth chars: 4 + 3 (1 replaced) + 3 (1 deleted) + 4 (insertion) + 0
    assert sequence_accuracy(truths, preds) == pytest.approx(0.2)
    assert character_accuracy(truths, preds) == pytest.approx(14 / 20)
    # edits: 0 + 1 + 1 + 1 + 4
    assert character_error_rate(truths, preds) == pytest.approx(7 / 20)
    assert summary([], []) == {"seq_acc": 0.0, "char_acc": 0.0, "cer": 0.0}


def _logits(steps, k=4):
    """One-hot-ish logits for a sequence of class ids (0 = blank)."""
    out = np.full((1, len(steps), k), -5.0, np.float32)
    for t, c in enumerate(steps):
        out[0, t, c] = 5.0
    return out


@pytest.mark.parametrize("steps,text", [
    ([1, 1, 0, 1, 2], "aab"),  # repeats merge unless a blank separates them
    ([0, 0, 0, 0], ""),  # all blanks: empty prediction
    ([3, 0, 3, 3, 0, 0, 2], "ccb"),
    ([2, 2, 2, 1], "ba"),
])
def test_ctc_decoding_greedy_and_beam(steps, text):
    from captchalab.core.ctc import decode
    cs = Charset("abc")
    assert decode(_logits(steps), cs)[0] == [text]
    assert decode(_logits(steps), cs, beam_width=4)[0] == [text]


def _log(probs):
    return np.log(np.asarray(probs, np.float32))[None]  # [1,T,K]: log-probabilities as logits


def test_ctc_likelihood_and_test_time_views_hand_worked():
    from captchalab.core.ctc import decode_views, log_likelihood, shift, tta_shifts

    cs = Charset("a")
    # view 1, T = 2: p(blank), p(a) = (.4, .6) then (.3, .7). p("a") sums the alignments
    # a_, _a, aa: .6*.3 + .4*.7 + .6*.7 = .88; p("") = .4*.3 = .12
    v1 = _log([[.4, .6], [.3, .7]])
    np.testing.assert_allclose(np.exp(log_likelihood(np.repeat(v1, 2, 0), ["a", ""], cs)),
                               [.88, .12], rtol=1e-5)
    # view 2 reads "" greedily: p("") = .81, p("a") = .1*.9 + .9*.1 + .1*.1 = .19. Summed over
    # the views "a" wins (log .88 + log .19 > log .12 + log .81); confidence = sqrt(.88 * .19)
    v2 = _log([[.9, .1], [.9, .1]])
    texts, conf = decode_views("ctc", [v1, v2], cs)
    assert texts == ["a"] and conf[0] == pytest.approx((.88 * .19) ** .5, rel=1e-5)
    # temperature 2 (square roots, renormalised) scales the confidence, not the choice:
    # p(blank) at the steps of v1 becomes .4495 and .3956, of v2 .75 twice; p("a") = 1 - p("")
    texts, conf = decode_views("ctc", [v1, v2], cs, temperature=2.0)
    q = [a ** .5 / (a ** .5 + (1 - a) ** .5) for a in (.4, .3, .9)]
    assert texts == ["a"]
    assert conf[0] == pytest.approx(((1 - q[0] * q[1]) * (1 - q[2] ** 2)) ** .5, rel=1e-5)
    texts, conf = decode_views("ctc", [v2, v2], cs)  # views that agree: plain greedy
    assert texts == [""] and conf[0] == pytest.approx(.81, rel=1e-5)
    # heads: per-position log-probabilities averaged, then argmax; blank 0 never wins here
    h1, h2 = _log([[.0001, .6, .3999]]), _log([[.0001, .1, .8999]])
    texts, conf = decode_views("heads", [h1, h2], Charset("ab"))
    assert texts == ["b"] and conf[0] == pytest.approx((.3999 * .8999) ** .5, rel=1e-4)

    assert tta_shifts(2) == tta_shifts(1) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len(tta_shifts(3)) == 9
    x = np.arange(12, dtype=np.uint8).reshape(1, 3, 4, 1)
    np.testing.assert_array_equal(shift(x, 1, 1)[0, :, :, 0],
                                  [[0, 0, 1, 2], [0, 0, 1, 2], [4, 4, 5, 6]])


def test_pipeline_shapes_and_dtypes(small_dataset):
    from captchalab.gen import shards as sh
    from captchalab.train.input import shard_dataset, split_labels

    m = sh.read_manifest(str(small_dataset))
    ds = shard_dataset(str(small_dataset), m, "val", batch_size=8, training=False)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [8, 8, 4]
    img, ids = batches[0]
    assert img.shape == (8, 60, 160, 3) and img.dtype.name == "uint8"
    assert ids.shape == (8, 4) and ids.dtype.name == "int32"
    cs = Charset.from_json(m["charset"])
    assert [cs.decode(r) for r in ids.numpy()] == split_labels(str(small_dataset), m, "val")[:8]
    train = shard_dataset(str(small_dataset), m, "train", batch_size=16, training=True)
    img, ids = next(iter(train))
    assert img.shape == (16, 60, 160, 3)


def test_preprocess_layer_is_grey_and_a_box_average():
    from captchalab.core.layers import GREY, Preprocess

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 7, 10, 3), dtype=np.uint8)
    y = np.asarray(Preprocess(3)(x))
    assert y.shape == (2, 2, 3, 1) and y.dtype == np.float32  # 7x10 -> 2x3: remainders dropped
    grey = (x.astype(np.float64) * np.array(GREY)).sum(-1) / 255
    want = grey[:, :6, :9].reshape(2, 2, 3, 3, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(y[..., 0], want, atol=1e-5)
    assert np.asarray(Preprocess(1)(np.full((1, 2, 2, 3), 255, np.uint8))).max() == pytest.approx(1)


def test_best_epoch_is_val_sequence_accuracy_within_its_noise_the_later_epoch():
    from captchalab.train.config import better, note_epoch

    e1 = {"val_seq_acc": 0.99, "val_loss": 0.01}
    assert better(e1, None)
    assert better({"val_seq_acc": 0.995, "val_loss": 0.05}, e1)  # accuracy decides
    assert not better({"val_seq_acc": 0.98, "val_loss": 0.001}, e1)
    assert better({"val_seq_acc": 0.99, "val_loss": 0.02}, e1)  # a tie: the later epoch
    # one standard error of 0.996 on 1000 val samples is 0.0020: 0.995 is as good, 0.993 is not
    top = {"val_seq_acc": 0.996}
    assert better({"val_seq_acc": 0.995, "val_samples": 1000}, top)
    assert not better({"val_seq_acc": 0.993, "val_samples": 1000}, top)
    assert not better({"val_seq_acc": 0.995, "val_samples": 100_000}, top)  # less noise
    # measured from the highest accuracy so far, so small steps down cannot add up
    state = {"best": None}
    for epoch, acc in enumerate([0.9, 0.996, 0.9945, 0.993, 0.9915], start=1):
        note_epoch(state, {"epoch": epoch, "val_seq_acc": acc, "val_samples": 1000})
    assert state["best"]["epoch"] == 3 and state["top"] == 0.996 and state["improved"] == 2


def test_patience_counts_from_the_last_gain_not_from_a_tie():
    from captchalab.train.config import note_epoch, patience_ran_out

    state = {"best": None}
    kept = []
    for epoch, acc in enumerate([0.90, 0.95, 0.95, 0.95, 0.96, 0.94], start=1):
        if note_epoch(state, {"epoch": epoch, "val_seq_acc": acc}):
            kept.append(epoch)
        if patience_ran_out(state, epoch, 2):
            break
    assert kept == [1, 2, 3, 4]  # ties move model.keras on, but patience counts from epoch 2
    assert epoch == 4 and state["best"]["epoch"] == 4 and state["improved"] == 2
    assert not patience_ran_out(state, 4, 0)  # 0 = off
    old = {"best": {"epoch": 3, "val_seq_acc": 0.9}}  # a state.json from before `improved`
    assert patience_ran_out(old, 5, 2) and not patience_ran_out(old, 4, 2)


def test_preprocess_fold_stacks_each_block_as_channels():
    from captchalab.core.layers import GREY, Preprocess

    x = np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    y = np.asarray(Preprocess(2, "fold")(x))
    assert y.shape == (2, 2, 3, 4) and y.dtype == np.float32  # 5x7 -> 2x3, 2x2 blocks -> 4
    grey = (x.astype(np.float64) * np.array(GREY)).sum(-1) / 255
    for i in range(2):
        for j in range(3):  # channels in row-major order within the block
            np.testing.assert_allclose(y[:, i, j], grey[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                                       .reshape(2, 4), atol=1e-5)
    # the box average is the mean of the folded channels
    np.testing.assert_allclose(np.asarray(Preprocess(2)(x))[..., 0], y.mean(-1), atol=1e-5)


def test_preprocess_standardize_reads_any_brightness_and_contrast_alike(tmp_path):
    """Standardized, each image is (grey - its mean) / (its sd + STD_FLOOR): a brighter copy
    is the same input, a fainter one the same up to scale; the option survives saving, and
    models from before it read [0, 1] grey."""
    import keras

    from captchalab.core.layers import STD_FLOOR, Preprocess

    x = np.random.default_rng(2).integers(0, 200, (3, 6, 8, 3)).astype(np.uint8)
    pre = Preprocess(2, "fold", standardize=True)
    a = np.asarray(pre(x))
    plain = np.asarray(Preprocess(2, "fold")(x))
    mean = plain.mean(axis=(1, 2, 3), keepdims=True)
    want = (plain - mean) / (plain.std(axis=(1, 2, 3), keepdims=True) + STD_FLOOR)
    np.testing.assert_allclose(a, want, atol=1e-4)
    np.testing.assert_allclose(np.asarray(pre(x + 55)), a, atol=1e-4)  # brighter
    faint = np.asarray(pre((x // 2 + 60).astype(np.uint8))).ravel()  # half the contrast
    assert np.corrcoef(faint, a.ravel())[0, 1] > 0.99 and 0.7 < faint.std() / a.std() < 1
    assert plain.min() >= 0 and plain.max() <= 1 and not np.allclose(plain, a, atol=0.1)
    inp = keras.Input((6, 8, 3), dtype="uint8")
    keras.Model(inp, pre(inp)).save(tmp_path / "m.keras")
    back = keras.saving.load_model(tmp_path / "m.keras")
    assert back.layers[-1].standardize is True
    assert Preprocess.from_config({"downscale": 2, "resample": "fold"}).standardize is False


def test_standardize_and_curriculum_default_to_on_for_styles_with_a_scene(tmp_path):
    from captchalab.gen.engines import renderer_for
    from captchalab.train.config import AUTO_CURRICULUM, TrainConfig
    from captchalab.train.train import data_source, resolve_standardize

    f = tmp_path / "s.toml"
    f.write_text('preset = "universal"\nfonts = ["builtin"]\nsize = "200x70"\n')
    m, recipe = data_source(TrainConfig(on_the_fly=True, style_file=str(f)))
    assert recipe.style["fonts"] == ["builtin"] and m["image"] == {"width": 200, "height": 70}
    assert recipe.style["mix"]["ramp"] == AUTO_CURRICULUM and recipe.style_name == "universal+s.toml"

    for style, mix, scene in [("universal", "", True), ("default", "universal:0.3", True),
                              ("hard", "", False), ("", "", False)]:
        cfg = TrainConfig(on_the_fly=True, style=style, mix=mix)
        _, recipe = data_source(cfg)
        resolve_standardize(cfg, recipe.to_json())
        assert cfg.standardize is scene and cfg.curriculum == (AUTO_CURRICULUM if scene else 0)
        assert (recipe.style["mix"].get("ramp") == AUTO_CURRICULUM) if scene else (
            "mix" not in recipe.style)
    _, recipe = data_source(TrainConfig(on_the_fly=True, style="universal"))
    sample = renderer_for(recipe).render("train", 0)  # the warm-up preset, its font included
    assert sample.mixed and sample.font == "DroidSansMono.ttf" and any(f.get("mix") for f in recipe.fonts)
    d = tmp_path / "d"  # on the fly from a dataset's recipe: its style behind the same ramp
    cli("gen", "--out", d, "--style", "universal", "--length", "4-6", "--val", 8, "-q")
    cfg = TrainConfig(on_the_fly=True, data=str(d))
    m, recipe = data_source(cfg)
    resolve_standardize(cfg, m)
    assert cfg.standardize is True and recipe.style["mix"]["ramp"] == AUTO_CURRICULUM
    assert recipe.length == (4, 6) and renderer_for(recipe).render("train", 0).mixed
    for imported in ({"style": None}, {}):  # `captchalab import` data: no style, no scene
        cfg = TrainConfig(data="d")
        resolve_standardize(cfg, imported)
        assert cfg.standardize is False
    cfg = TrainConfig(on_the_fly=True, style="universal", curriculum=0, standardize=False)
    _, recipe = data_source(cfg)
    resolve_standardize(cfg, recipe.to_json())
    assert cfg.standardize is False and "mix" not in recipe.style


def test_time_step_check_refuses_narrow_inputs(small_dataset, tmp_path):
    p = cli("train", "--data", small_dataset, "--out", tmp_path / "run", "--downscale", 16,
            check=False)
    assert p.returncode == 2 and "time steps" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_train_bad_input(tmp_path, small_dataset):
    p = cli("train", "--data", tmp_path / "none", "--out", tmp_path / "r", check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr
    p = cli("train", "--data", tmp_path, "--out", tmp_path / "r", check=False)
    assert p.returncode == 2 and "not a captchalab dataset" in p.stderr
    p = cli("train", "--data", small_dataset, "--out", tmp_path / "r", "--arch", "crnm",
            check=False)
    assert p.returncode == 2 and "did you mean 'crnn'" in p.stderr


def test_tiny_training_run_through_the_cli(small_dataset, tmp_path):
    run = tmp_path / "run"
    p = cli("train", "--data", small_dataset, "--out", run, "--arch", "small", "--epochs", 2,
            "--batch-size", 16, "-q")
    assert "val sequence accuracy" in p.stdout
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["charset"]["chars"] == "0123456789abcdefghijklmnopqrstuvwxyz"
    assert cfg["model_shape"] == [30, 80, 4] and cfg["arch"] == "small"  # 2x2 folded
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert len(rows) == 2 and {"loss", "val_loss", "val_seq_acc", "val_char_acc", "val_cer",
                               "train_seq_acc"} <= set(rows[0])
    assert (run / "history.png").read_bytes()[:4] == b"\x89PNG"
    from captchalab.eval.predictor import load_keras_model
    model = load_keras_model(str(run))
    assert model.input_shape == (None, 60, 160, 3) and model.output_shape == (None, 20, 37)
    p = cli("train", "--data", small_dataset, "--out", run, check=False)
    assert p.returncode == 2 and "not empty" in p.stderr


TRAIN_BAD = [
    (["--epochs", "0"], "--epochs"),
    (["--steps", "-1"], "--steps"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--lr", "0"], "--lr: 0.0; a learning rate > 0 and at most 1"),
    (["--lr", "nan"], "--lr: nan"),
    (["--lr", "1e6"], "--lr: 1000000.0"),
    (["--schedule", "linear"], "--schedule"),
    (["--downscale", "0"], "--downscale"),
    (["--patience", "-2"], "--patience"),
    (["--out", "FILE"], "is a file"),
    (["--cpu-devices", "0"], "--cpu-devices"),
    (["--epoch-samples", "0"], "--epoch-samples"),
    (["--val-samples", "0"], "--val-samples"),
    (["--gen-workers", "-1"], "--gen-workers"),
    (["--dropout", "1"], "--dropout: 1.0; a rate from 0 (off) to below 1"),
    (["--jitter", "9"], "--jitter: 9; a shift in pixels from 0 (off) to 8"),
    (["--jitter", "-1"], "--jitter: -1"),
    (["--resample", "lanczos"], "--resample"),
]


@pytest.mark.parametrize("extra,msg", TRAIN_BAD, ids=[" ".join(b[0]) for b in TRAIN_BAD])
def test_train_options_bad_input(small_dataset, tmp_path, extra, msg):
    (tmp_path / "FILE").write_text("keep me")
    extra = [str(tmp_path / e) if e == "FILE" else e for e in extra]
    out = [] if "--out" in extra else ["--out", tmp_path / "run"]
    p = cli("train", "--data", small_dataset, *out, *extra, check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], p.stderr
    assert not (tmp_path / "run").exists() and (tmp_path / "FILE").read_text() == "keep me"
