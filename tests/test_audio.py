"""Audio captchas: the numpy renderer against the captcha library, gen/verify through the CLI,
determinism, bad input, and the model's front end."""

from __future__ import annotations

import hashlib
import io
import json
import os
import wave

import numpy as np
import pytest

from conftest import cli


def run_cli(*args):
    return cli(*args, check=False)


def _lib():
    import captcha.audio as ca
    return ca


@pytest.mark.parametrize("seed", range(3))
def test_ops_match_the_library_byte_for_byte(seed):
    from captchalab.gen.audio import change_sound, change_speed, mix_wave

    ca = _lib()
    rng = np.random.default_rng(seed)
    for _ in range(60):
        b = rng.integers(0, 256, rng.integers(1, 4000)).astype(np.uint8)
        d = rng.integers(0, 256, rng.integers(1, 4000)).astype(np.uint8)
        speed, level = rng.integers(50, 200) / 100, rng.integers(0, 200) / 100
        assert change_speed(b, speed).tobytes() == bytes(ca.change_speed(bytearray(b), speed))
        assert change_sound(b, level).tobytes() == bytes(ca.change_sound(bytearray(b), level))
        assert mix_wave(b, d).tobytes() == bytes(ca.mix_wave(bytearray(b), bytearray(d)))


def test_default_style_renders_what_the_library_renders():
    """Same `secrets` draws and the same noise floor: create_wave_body's bytes exactly."""
    from captchalab.gen.audio import AudioRenderer, AudioStyle
    from captchalab.gen.render import SeededSecrets

    ca = _lib()
    r = AudioRenderer("0123456789", (6, 6), AudioStyle(), ["builtin"], 0)
    lib = ca.AudioCaptcha()
    lib._choices = list(r.choices)  # the library lists the folder unsorted; ours is sorted
    lib._cache = {c: [bytearray(a.tobytes()) for a in v] for c, v in r.bank.items()}
    for seed, text in [(1, "120597"), (2, "999999"), (3, "0")]:
        secrets = SeededSecrets()
        secrets.rng.seed(seed)

        def floor(length, level=4, seed=seed):
            return bytearray(r.floor_noise(length, level, np.random.default_rng(seed)).tobytes())

        saved = ca.secrets, ca.create_noise
        ca.secrets, ca.create_noise = secrets, floor
        try:
            want = bytes(lib.create_wave_body(text))
        finally:
            ca.secrets, ca.create_noise = saved
        r._secrets.rng.seed(seed)
        got, draws = r.body(text, np.random.default_rng(seed))
        assert got.tobytes() == want
        assert len(draws["speed"]) == len(text) and all(1 <= g <= 3 for g in draws["gap"])


def _shard_hashes(d):
    m = json.load(open(os.path.join(d, "dataset_info.json")))
    return [e["sha256"] for s in m["splits"].values() for e in s["shards"]], m


def _records(d):
    from captchalab.gen import shards as sh
    m = sh.read_manifest(d)
    return {(r["sample/split"], r["sample/index"]): r for s in m["splits"]
            for r in sh.iter_split(d, m, s)}


def test_gen_audio_verifies_and_is_the_same_for_any_workers_and_shard_size(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--kind", "audio", "--train", "12", "--val", "4", "--length", "3-4", "-q"]
    speaker = ["--pitch", "-3-3", "--formant", "0.9-1.1", "--timbre", "0-6", "--brightness", "-6-6"]
    run_cli("gen", "--out", str(a), *common, *speaker, "--workers", "1")
    run_cli("gen", "--out", str(b), *common, "--workers", "2", "--shard-size", "5",
            "--style", "hard")
    r = run_cli("gen", "--out", str(tmp_path / "c"), *common, *speaker, "--workers", "2",
                "--shard-size", "5")
    assert r.returncode == 0 and "captchas/s" in r.stdout
    assert run_cli("verify", str(a)).returncode == 0
    _, m = _shard_hashes(a)
    assert m["kind"] == "audio" and m["audio"]["rate"] == 8000
    assert m["voices"][0]["name"] == "builtin" and len(m["voices"][0]["sha256"]) == 64
    ra, rc = _records(a), _records(tmp_path / "c")
    assert ra.keys() == rc.keys() and all(ra[k] == rc[k] for k in ra)  # byte for byte
    rec = ra[("train", 0)]
    with wave.open(io.BytesIO(rec["audio/wav"])) as w:  # a WAV as the library writes it
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 1, 8000)
        assert w.getnframes() == rec["audio/samples"]
    assert set(rec["label/text"]) <= set("0123456789") and 3 <= len(rec["label/text"]) <= 4
    assert -3 <= rec["style/pitch"] <= 3 and 0.9 <= rec["style/formant"] <= 1.1
    assert rec["style/tempo"] == 1 and -6 <= rec["style/brightness"] <= 6
    hard = _records(b)[("train", 0)]
    assert hard["label/text"] == rec["label/text"]  # labels do not depend on the style
    assert hard["audio/wav"] != rec["audio/wav"]


def _vowel(f0=120.0, seconds=0.5, formants=(700, 1200, 2600)):
    """A synthetic vowel: a glottal pulse train at f0 through three formant resonances."""
    from captchalab.gen.audio import RATE, _spectrum_filter

    n = int(seconds * RATE)
    x = np.zeros(n)
    x[(np.arange(0, seconds, 1 / f0) * RATE).astype(int)] = 1.0
    x = _spectrum_filter(x, lambda f: sum(1 / (1 + ((f - c) / 80) ** 2) for c in formants))
    return x / np.abs(x).max() * 0.8


def _f0(x):
    """Pitch from the cepstrum: the quefrency (60-400 Hz) of the harmonics' spacing."""
    from captchalab.gen.audio import RATE

    x = x[len(x) // 4: 3 * len(x) // 4]
    cep = np.fft.irfft(np.log(np.abs(np.fft.rfft(x * np.hanning(len(x)))) + 1e-9))
    lo = RATE // 400
    return RATE / (lo + cep[lo: RATE // 60].argmax())


def _centroid(x):
    from captchalab.gen.audio import RATE

    mag = np.abs(np.fft.rfft(x))
    return (np.fft.rfftfreq(len(x), 1 / RATE) * mag).sum() / mag.sum()


def test_change_voice_moves_pitch_formants_and_tempo_independently():
    from captchalab.gen.audio import change_voice

    x = _vowel()
    np.testing.assert_allclose(change_voice(x, 0, 1, 1, None), x, atol=1e-9)
    up = change_voice(x, 12, 1, 1, None)  # an octave up, same length, same formants
    assert len(up) == len(x) and abs(_f0(up) / _f0(x) - 2) < 0.1
    assert abs(_centroid(up) / _centroid(x) - 1) < 0.12
    wide = change_voice(x, 0, 1.25, 1, None)  # formants up, pitch kept
    assert abs(_f0(wide) / _f0(x) - 1) < 0.05 and _centroid(wide) / _centroid(x) > 1.12
    slow = change_voice(x, 0, 1, 1.25, None)  # longer, pitch kept
    assert len(slow) == round(1.25 * len(x)) and abs(_f0(slow) / _f0(x) - 1) < 0.05
    down = change_voice(x, -6, 1, 1, None)
    assert abs(_f0(down) / _f0(x) - 2 ** -0.5) < 0.05
    tilt = change_voice(x, 0, 1, 1, np.linspace(-12, 12, 32))  # treble up: centroid up
    assert _centroid(tilt) > 1.1 * _centroid(x) and np.abs(tilt).max() == pytest.approx(0.8)


def test_verify_catches_a_damaged_audio_record(tmp_path):
    from captchalab.gen import shards as sh
    from captchalab.gen.tfrecord import encode_example

    d = tmp_path / "d"
    run_cli("gen", "--out", str(d), "--kind", "audio", "--train", "3", "--length", "2", "-q")
    m = sh.read_manifest(str(d))
    path = os.path.join(d, m["splits"]["train"]["shards"][0]["file"])
    recs = list(sh.iter_shard(path))
    recs[1]["audio/samples"] += 5  # claims more samples than the WAV holds
    with sh.ShardWriter(str(d), os.path.basename(path)) as w:
        for r in recs:
            w.write(encode_example(r))
        entry = w.commit()
    m["splits"]["train"]["shards"][0] = entry  # a consistent manifest: only the record is wrong
    sh.write_manifest(str(d), m)
    r = run_cli("verify", str(d))
    assert r.returncode == 1 and "samples" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--charset", "a-z"], "no voice for 'abcdefghijklmnopqrstuvwxyz'"),
    (["--size", "100x40"], "--size applies to image captchas"),
    (["--speed", "0.1"], "speed: '0.1' is out of range"),
    (["--pitch", "20"], "pitch: '20' is out of range"),
    (["--formant", "1.2-0.9"], "formant: range '1.2-0.9' has lo > hi"),
    (["--style", "harder"], "unknown audio style 'harder'"),
    (["--voices", "nowhere"], "voices: nowhere is not a folder"),
])
def test_gen_audio_refuses_bad_options(tmp_path, args, message):
    out = tmp_path / "out"
    r = run_cli("gen", "--out", str(out), "--kind", "audio", "--train", "2", *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_audio_knobs_need_kind_audio(tmp_path):
    r = run_cli("gen", "--out", str(tmp_path / "o"), "--train", "2", "--gap", "1")
    assert r.returncode == 2 and "--gap applies to audio captchas; add --kind audio" in r.stderr


def _write_wav(path, channels=1, width=1, rate=8000, frames=800):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(frames * channels * width))


def test_voice_folders(tmp_path):
    """A folder in the library's layout is a voice; 16-bit mono is converted, stereo refused."""
    v = tmp_path / "voice"
    for c in "12":
        _write_wav(v / c / "a.wav", width=2)
    d = tmp_path / "d"
    r = run_cli("gen", "--out", str(d), "--kind", "audio", "--charset", "12", "--length", "2",
                "--voices", str(v), "--train", "2", "-q")
    assert r.returncode == 0, r.stderr
    voices = json.load(open(d / "dataset_info.json"))["voices"]
    assert [x["name"] for x in voices] == ["voice"] and voices[0]["files"] == 2
    r = run_cli("gen", "--out", str(d), "--kind", "audio", "--charset", "123", "--length", "2",
                "--voices", str(v), "--train", "2", "--overwrite")
    assert r.returncode == 2 and "no voice for '3'" in r.stderr
    _write_wav(v / "2" / "b.wav", channels=2)
    r = run_cli("gen", "--out", str(tmp_path / "e"), "--kind", "audio", "--charset", "12",
                "--voices", str(v), "--train", "2")
    assert r.returncode == 2 and "2 channels; expected mono PCM at 8000 Hz" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("gen", "--out", str(tmp_path / "f"), "--kind", "audio", "--voices", str(empty),
                "--train", "2")
    assert r.returncode == 2 and "holds no voice" in r.stderr


def test_brightness_is_drawn_after_the_other_speaker_knobs_and_colours_the_babble():
    from captchalab.gen.audio import AudioRenderer, resolve_audio_style, voice_draws

    voices = resolve_audio_style("voices")
    bright = resolve_audio_style("voices", overrides={"brightness": "12-20"})
    a, b = voice_draws(voices, np.random.default_rng(3)), voice_draws(bright, np.random.default_rng(3))
    assert all(a[k] == b[k] for k in ("pitch", "formant", "tempo", "timbre"))  # draws stay put
    assert a["brightness"] == 0 and a["brightness_db"] is None and 12 <= b["brightness"] <= 20
    np.testing.assert_allclose(b["eq_db"] - a["eq_db"], b["brightness_db"])
    flat = AudioRenderer("0123456789", (4, 4), resolve_audio_style(overrides={"babble_level": "0.6"}),
                         ["builtin"], 0)
    up = AudioRenderer("0123456789", (4, 4), resolve_audio_style(
        overrides={"babble_level": "0.6", "brightness": "20"}), ["builtin"], 0)
    rec = flat.bank["7"][0]
    up._voice = voice_draws(up.style, np.random.default_rng(0))
    for babble in (False, True):  # the speech and the babble of one captcha: both brighter
        x, y = ((r.astype(float) - 128) / 128 for r in (rec, up._speaker(rec, babble)))
        assert _centroid(y) > 1.2 * _centroid(x)
    s0, s1 = flat.render("train", 2), up.render("train", 2)
    assert s0.text == s1.text and s1.draws["brightness"] == 20 and s0.draws["brightness"] == 0


def test_cmn_front_end_ignores_a_colouring_of_the_whole_clip():
    """LogMel(normalize=True): each band's mean over the clip is 0, and a fixed equaliser on
    the whole clip moves the features far less than without the normalisation."""
    from captchalab.core.layers import LogMel
    from captchalab.gen.audio import AudioRenderer, AudioStyle, brighten
    from captchalab.train.models import AUDIO_FRONT

    pcm = AudioRenderer("0123456789", (3, 3), AudioStyle(), ["builtin"], 0).render("val", 1).pcm
    x = (pcm.astype(float) - 128) / 128
    y = brighten(x, np.linspace(-8, 8, 32))
    coloured = np.clip(np.round(y * 128 + 128), 0, 255).astype(np.uint8)
    n = np.array([len(pcm)])
    feats = {}
    for norm in (False, True):
        layer = LogMel(**AUDIO_FRONT, normalize=norm)
        feats[norm] = [np.asarray(layer(c[None], n))[0, :, :, 0] for c in (pcm, coloured)]
    np.testing.assert_allclose(feats[True][0].mean(axis=0), 0, atol=1e-3)
    moved = {k: np.abs(a - b).mean() for k, (a, b) in feats.items()}
    assert moved[True] < 0.5 * moved[False], moved


@pytest.mark.parametrize("arch", ["audio-conv", "audio-cmn", "audio-crnn"])
def test_a_clip_reads_the_same_however_it_is_padded(arch):
    """Padding a clip with silence to a longer batch changes none of its steps (the convolutions
    see zeros past its end either way), and every padded step is a certain blank."""
    from captchalab.core.tfimport import import_tensorflow

    import_tensorflow()
    from captchalab.gen.audio import AudioRenderer, AudioStyle
    from captchalab.train.models import build_audio_model

    model = build_audio_model(arch, 11)
    r = AudioRenderer("0123456789", (2, 2), AudioStyle(gap=(0.2, 0.4)), ["builtin"], 0)
    pcm = r.render("train", 0).pcm
    alone = np.asarray(model({"audio": pcm[None], "audio_length": np.array([len(pcm)])}))
    t = alone.shape[1]
    for extra in (37, 5000):
        padded = np.full((2, len(pcm) + extra), 128, np.uint8)
        padded[0, :len(pcm)] = pcm  # the second clip: 3000 samples of silence
        padded[1, :3000] = pcm[:3000]
        both = np.asarray(model({"audio": padded, "audio_length": np.array([len(pcm), 3000])}))
        np.testing.assert_allclose(both[0, :t], alone[0], atol=1e-4)
        assert (both[0, t:].argmax(-1) == 0).all() and (both[1, 2:].argmax(-1) == 0).all()


def test_training_batches_group_clips_of_about_one_length():
    """Training: every clip of a batch lies in one 0.5 s band, padded with silence to the
    batch's longest (for --jit: to the band's top, so compiled steps see one shape per band);
    evaluation: every clip once, in order, padded to each batch's longest."""
    from captchalab.core.tfimport import import_tensorflow

    tf = import_tensorflow()
    from captchalab.train.input import BUCKET, SILENCE, audio_batches, pad_to_band

    lengths = np.random.default_rng(0).integers(8000, 40000, 400)

    def elements():
        for i, n in enumerate(lengths):
            yield {"audio": np.full(n, i % 200, np.uint8), "audio_length": np.int32(n)}, \
                np.array([i % 7 + 1, 0], np.int32)

    ds = tf.data.Dataset.from_generator(elements, output_signature=(
        {"audio": tf.TensorSpec((None,), tf.uint8), "audio_length": tf.TensorSpec((), tf.int32)},
        tf.TensorSpec((2,), tf.int32)))
    seen = 0
    for x, _ in audio_batches(ds, 8, True, 2):
        n = x["audio_length"].numpy()
        assert len(n) == 8 and len(set(n // BUCKET)) == 1
        assert x["audio"].shape[1] == n.max()
        assert all((x["audio"][i, k:] == SILENCE).numpy().all() for i, k in enumerate(n))
        banded, _ = pad_to_band(x, None)
        assert banded["audio"].shape[1] == -(-n.max() // BUCKET) * BUCKET
        assert (banded["audio"][:, :n.max()] == x["audio"]).numpy().all()
        assert (banded["audio"][:, n.max():] == SILENCE).numpy().all()
        seen += 8
    assert seen > 400 - 8 * (40000 // BUCKET + 1)  # only the bands' last partial batches dropped
    got = np.concatenate([x["audio_length"].numpy() for x, _ in audio_batches(ds, 8, False, 2)])
    np.testing.assert_array_equal(got, lengths)


def test_dataset_seed_rule_names_audio(tmp_path):
    d = tmp_path / "d"
    run_cli("gen", "--out", str(d), "--kind", "audio", "--train", "1", "--length", "1", "-q")
    m = json.load(open(d / "dataset_info.json"))
    assert "captcha.audio.secrets" in m["seed_rule"] and "'noise'" in m["seed_rule"]
    assert hashlib.sha256(open(d / m["splits"]["train"]["shards"][0]["file"], "rb").read()
                          ).hexdigest() == m["splits"]["train"]["shards"][0]["sha256"]


@pytest.mark.slow
def test_audio_train_eval_predict_export_through_the_cli(tmp_path):
    """A tiny audio run end to end: train, eval (data and a WAV folder), predict, import,
    export to SavedModel and TFLite giving the Keras model's logits."""
    from captchalab.eval.export import load_exported

    d, run, wavs = tmp_path / "d", tmp_path / "run", tmp_path / "wavs"
    cli("gen", "--out", d, "--kind", "audio", "--train", 64, "--val", 16, "--test", 16,
        "--length", "2-3", "--gap", "0.5-1", "-q")
    cli("train", "--data", d, "--out", run, "--epochs", 1, "-q")
    cli("train", "--data", d, "--out", tmp_path / "jit", "--epochs", 1, "--jit", "-q")
    config = json.load(open(run / "config.json"))
    assert config["data_kind"] == "audio" and config["arch"] == "audio-conv"
    assert config["train"]["batch_size"] == 32 and config["audio"]["rate"] == 8000
    r = cli("eval", "--model", run, "--data", d, "--json")
    assert json.loads(r.stdout)["summary"]["samples"] == 16
    assert (run / "eval" / "d-test" / "errors.png").exists()
    cli("export", d, "--wav", wavs, "--split", "test")
    r = cli("eval", "--model", run, "--images", wavs / "test", "--json")
    assert json.loads(r.stdout)["summary"]["samples"] == 16
    r = cli("predict", "--model", run, wavs / "test", "--json")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 16 and all(x["file"].endswith(".wav") for x in lines)
    r = cli("eval", "--model", run, "--images", wavs / "test", "--tta", "--json")
    tta = json.loads(r.stdout)
    assert tta["summary"]["samples"] == 16 and tta["decoding"]["tta"] is True
    r = run_cli("predict", "--model", run, wavs / "test", "--scales", "1,0.8")
    assert r.returncode == 2 and "do not apply to audio models" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    cli("import", wavs, "--out", tmp_path / "imported")
    assert cli("verify", tmp_path / "imported").returncode == 0
    # robust: audio knobs and voices; a copy of the built-in voice renders the same clips
    import shutil

    from captchalab.gen.audio import builtin_dir

    voice, study = tmp_path / "voice", tmp_path / "study"
    shutil.copytree(builtin_dir(), voice, ignore=shutil.ignore_patterns("*.ttf", "beep.wav"))
    r = run_cli("robust", "--model", run, "--out", study, "--corruptions", "jpeg")
    assert r.returncode == 2 and "image corruptions do not apply to audio models" in r.stderr
    r = run_cli("robust", "--model", run, "--out", study, "--sweep", "rotate=0,10")
    assert r.returncode == 2 and "'rotate' does not apply to audio models" in r.stderr
    assert not study.exists()
    cli("robust", "--model", run, "--out", study, "--samples", 8, "--sweep", "snr=100,0",
        "--sweep", f"voices=builtin,{voice}", "-q")
    rep = json.load(open(study / "robust.json"))
    assert rep["kind"] == "audio" and rep["corruptions"] == {}
    snr, voices = rep["sweeps"]["snr"], rep["sweeps"]["voices"]
    assert snr[0]["set"] == rep["clean"]["set"] and snr[1]["set"] != snr[0]["set"]
    assert voices[0]["set"] == rep["clean"]["set"]  # builtin: the base recipe itself
    assert voices[0]["results"] == voices[1]["results"]  # same recordings, other folder
    assert (study / "sweep-voices.png").exists() and "voices builtin" in (
        study / "robust.md").read_text()
    cli("train", "--data", d, "--out", tmp_path / "fly", "--on-the-fly", "--epoch-samples", 32,
        "--epochs", 1, "--gen-workers", 1, "-q")
    # an image model refuses audio data, and an audio model image data
    r = run_cli("train", "--data", d, "--out", tmp_path / "x", "--arch", "crnn-conv")
    assert r.returncode == 2 and "crnn-conv reads images; the data is audio" in r.stderr
    cli("gen", "--out", tmp_path / "img", "--test", 4, "-q")
    r = run_cli("eval", "--model", run, "--data", tmp_path / "img")
    assert r.returncode == 2 and "holds image captchas but the model" in r.stderr

    import captchalab
    rec = captchalab.load(str(run))
    clips = [rec.decode_item(str(p), str(p)) for p in sorted((wavs / "test").glob("*.wav"))[:3]]
    batch = rec.batch(clips)
    want = rec.logits(batch)
    # predict reads clips in batches of one length, in another order: the same readings
    every = [rec.decode_item(str(p), str(p)) for p in sorted((wavs / "test").glob("*.wav"))]
    one_by_one = [rec.predict(c) for c in every]
    together = rec.predict(every)
    assert [p.text for p in together] == [p.text for p in one_by_one]
    assert [p.confidence for p in together] == pytest.approx(
        [p.confidence for p in one_by_one], abs=1e-4)
    for fmt in ("savedmodel", "tflite"):
        path = cli("export", "--model", run, "--format", fmt, "--out", tmp_path / fmt
                   ).stdout.split()[1]
        got = load_exported(path)(batch)
        np.testing.assert_allclose(got, want, atol=1e-3)


def test_audio_tta_views_put_each_clip_at_phases_of_the_output_step():
    from captchalab.eval.predictor import audio_views

    pcm = np.full((2, 10), 128, np.uint8)
    pcm[0, :10], pcm[1, :6] = np.arange(10), np.arange(6)
    views = audio_views({"audio": pcm, "audio_length": np.array([10, 6], np.int32)}, 8, 4)
    assert len(views) == 4
    for k, v in enumerate(views):
        assert v["audio"].shape == (2, 16)  # one width: the logits line up step for step
        assert (v["audio"][0, :2 * k] == 128).all() and (v["audio"][0, 2 * k:2 * k + 10]
                                                        == np.arange(10)).all()
        assert (v["audio"][1, 2 * k + 6:] == 128).all()
        assert v["audio_length"].tolist() == [10 + 2 * k, 6 + 2 * k]


def test_audio_tta_views_at_other_speeds_are_the_clip_resampled():
    """A view at speed s holds each clip resampled to len / s samples (its own length, not the
    batch's padding), every view padded to one width, phases applied after the speed."""
    from captchalab.eval.predictor import audio_views

    t = np.arange(4000)
    clip = np.round(128 + 60 * np.sin(2 * np.pi * 300 * t / 8000)).astype(np.uint8)
    pcm = np.full((2, 4000), 128, np.uint8)
    pcm[0], pcm[1, :2000] = clip, clip[:2000]
    views = audio_views({"audio": pcm, "audio_length": np.array([4000, 2000], np.int32)}, 64, 2,
                        (1.0, 0.8, 1.25))
    assert len(views) == 6 and len({v["audio"].shape for v in views}) == 1
    assert [v["audio_length"].tolist() for v in views] == [
        [4000, 2000], [4032, 2032], [5000, 2500], [5032, 2532], [3200, 1600], [3232, 1632]]
    slow = views[2]["audio"][0, :5000].astype(float) - 128  # 300 Hz played slower: 240 Hz
    peak = np.abs(np.fft.rfft(slow)).argmax() * 8000 / len(slow)
    assert abs(peak - 240) < 3, peak
    assert (views[2]["audio"][1, 2500:] == 128).all() and (views[5]["audio"][0, :32] == 128).all()


def test_audio_tta_views_are_other_readings_of_the_same_clip():
    """The first view reads a clip exactly as it is (only padded further); the others put its
    sounds at other phases of the output step, so the model sees other frames."""
    from captchalab.core.tfimport import import_tensorflow

    import_tensorflow()
    from captchalab.eval.predictor import TTA_SPEEDS, audio_views
    from captchalab.gen.audio import AudioRenderer, AudioStyle
    from captchalab.train.models import audio_stride, build_audio_model

    model = build_audio_model("audio-conv", 11)
    r = AudioRenderer("0123456789", (2, 2), AudioStyle(gap=(0.2, 0.4)), ["builtin"], 0)
    pcm = r.render("train", 0).pcm
    batch = {"audio": pcm[None], "audio_length": np.array([len(pcm)], np.int32)}
    alone = np.asarray(model(batch))
    views = [np.asarray(model(v)) for v in audio_views(batch, audio_stride("audio-conv"), 4,
                                                           TTA_SPEEDS)]
    assert len(views) == 12 and len({v.shape for v in views}) == 1
    np.testing.assert_allclose(views[0][0, :alone.shape[1]], alone[0], atol=1e-4)
    assert all(np.abs(v - views[0]).max() > 1e-3 for v in views[1:])


def test_clips_are_read_in_batches_of_about_one_length():
    from captchalab.eval.predictor import by_length

    lengths = [50, 10, 40, 10, 30, 20, 60]
    batches = by_length(lengths, 3)
    assert batches == [[1, 3, 5], [4, 2, 0], [6]]  # shortest first; ties keep their order
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert by_length([], 32) == []


def test_band_mask_masks_whole_bands_in_training_only():
    from captchalab.core.layers import BandMask

    x = np.random.default_rng(0).normal(size=(8, 50, 32, 1)).astype("float32")
    layer = BandMask(2, 6, seed=1)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)  # inference: identity
    y = np.asarray(layer(x, training=True))
    changed = (y != x).any(axis=(1, 3))  # [B, mels]: bands touched, each all along time
    assert changed.any() and (changed.sum(axis=1) <= 12).all()
    for i in range(8):
        np.testing.assert_allclose(y[i][:, changed[i]], x[i].mean(), rtol=1e-5)
        np.testing.assert_array_equal(y[i][:, ~changed[i]], x[i][:, ~changed[i]])


def test_every_gen_option_is_declared_once():
    """An audio knob named like an image knob would shadow it (click keeps one of the two)."""
    from captchalab.cli import cli

    for name, command in cli.commands.items():
        opts = [o for p in command.params for o in p.opts]
        assert len(opts) == len(set(opts)), (name, sorted(o for o in opts if opts.count(o) > 1))
