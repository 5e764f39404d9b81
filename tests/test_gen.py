"""`captchalab gen`, `verify` and `show` through the real CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from captchalab.gen import shards as sh
from conftest import ENV, cli, record_hashes


def test_same_seed_same_records_whatever_workers_and_shard_size(tmp_path, small_dataset):
    other = tmp_path / "other"
    cli("gen", "--out", other, "--train", 60, "--val", 20, "--test", 20, "--shard-size", 7,
        "--workers", 1, "-q")
    for split in ("train", "val", "test"):
        assert record_hashes(other, split) == record_hashes(small_dataset, split)
    assert len(os.listdir(other)) > len(os.listdir(small_dataset))  # really other shard layouts


def test_other_seed_other_records(tmp_path, small_dataset):
    d = tmp_path / "s1"
    cli("gen", "--out", d, "--val", 20, "--seed", 1, "-q")
    assert set(record_hashes(d, "val")).isdisjoint(record_hashes(small_dataset, "val"))


def test_manifest_fields(small_dataset):
    m = json.loads((small_dataset / "dataset_info.json").read_text())
    assert m["complete"] and m["source"] == "generated"
    assert m["charset"]["chars"] == "0123456789abcdefghijklmnopqrstuvwxyz"
    assert m["charset"]["blank_id"] == 0
    assert m["length"] == [4, 4] and m["image"]["width"] == 160 and m["image"]["height"] == 60
    assert m["style"]["rotate"] == [30.0, 30.0] and m["seed"] == 0
    assert "blake2b" in m["seed_rule"] and "split" in m["split_rule"]
    assert set(m["versions"]) >= {"captcha", "pillow", "freetype", "opencv", "numpy", "python"}
    assert m["fonts"][0]["name"] == "DroidSansMono.ttf" and len(m["fonts"][0]["sha256"]) == 64
    assert m["command"].startswith("captchalab gen")
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        info = m["splits"][split]
        assert info["count"] == n == sum(s["count"] for s in info["shards"])
        for s in info["shards"]:
            path = small_dataset / s["file"]
            assert sh.SHARD_RE.match(s["file"]) and path.stat().st_size == s["bytes"]
    assert [s["file"] for s in m["splits"]["train"]["shards"]] == [
        f"captcha-train.tfrecord-0000{i}-of-00003" for i in range(3)]


def test_records_carry_label_seed_index_and_style(small_dataset):
    m = sh.read_manifest(str(small_dataset))
    recs = list(sh.iter_split(str(small_dataset), m, "test"))
    assert [r["sample/index"] for r in recs] == list(range(20))
    r = recs[3]
    assert r["sample/split"] == "test" and r["sample/seed"] == 0
    assert len(r["label/text"]) == 4 == r["label/length"] == len(r["label/ids"])
    assert all(1 <= i <= 36 for i in r["label/ids"])
    assert r["style/font"] == "DroidSansMono.ttf" and r["style/noise_dots"] == 30
    assert r["image/png"][:4] == b"\x89PNG"


def test_png_payloads_are_lossless_and_unfiltered(small_dataset):
    """Each payload holds the renderer's exact pixels, every row with PNG filter 0 (none),
    which is what makes decoding in the input pipeline ~1.4x faster than Pillow's Paeth rows."""
    import io
    import struct
    import zlib

    import numpy as np
    from PIL import Image

    from captchalab.gen.recipe import Recipe
    from captchalab.gen.render import Renderer

    m = sh.read_manifest(str(small_dataset))
    renderer = Renderer.from_recipe(Recipe.from_json(m))
    for r in list(sh.iter_split(str(small_dataset), m, "val"))[:5]:
        png = r["image/png"]
        expected = np.asarray(renderer.render("val", r["sample/index"]).image)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)
        idat, pos = b"", 8  # PNG chunks: length, type, data, crc
        while pos < len(png):
            (n,) = struct.unpack(">I", png[pos:pos + 4])
            if png[pos + 4:pos + 8] == b"IDAT":
                idat += png[pos + 8:pos + 8 + n]
            pos += 12 + n
        h, w = expected.shape[:2]
        raw = zlib.decompress(idat)
        assert len(raw) == h * (1 + 3 * w)
        assert {raw[y * (1 + 3 * w)] for y in range(h)} == {0}


def test_labels_never_cross_splits(tmp_path):
    d = tmp_path / "tiny"  # 100 labels in all: many repeats inside a split, none across
    p = cli("gen", "--out", d, "--charset", "0-9", "--length", 2, "--train", 300, "--val", 40,
            "--test", 40, "--size", "100x60", "-q")
    assert "labels repeat within the split" in p.stderr
    m = sh.read_manifest(str(d))
    labels = {s: {r["label/text"] for r in sh.iter_split(str(d), m, s)} for s in m["splits"]}
    assert labels["train"].isdisjoint(labels["val"]) and labels["train"].isdisjoint(labels["test"])
    assert labels["val"].isdisjoint(labels["test"])


def test_label_space_too_small_is_refused(tmp_path):
    p = cli("gen", "--out", tmp_path / "x", "--charset", "ab", "--length", 1, "--train", 5,
            "--val", 5, "--test", 5, "--size", "100x60", check=False)
    assert p.returncode == 2 and "too small for the splits" in p.stderr
    assert not (tmp_path / "x").exists()


def test_variable_length_and_style_options(tmp_path):
    d = tmp_path / "var"
    cli("gen", "--out", d, "--length", "3-6", "--train", 60, "--style", "varied",
        "--rotate", "0-10", "--noise-dots", 0, "--size", "200x64", "-q")
    m = sh.read_manifest(str(d))
    recs = list(sh.iter_split(str(d), m, "train"))
    assert {len(r["label/text"]) for r in recs} == {3, 4, 5, 6}
    assert all(0 <= r["style/rotate"] <= 10 and r["style/noise_dots"] == 0 for r in recs)
    assert len({r["style/font"] for r in recs}) > 3  # builtin + dejavu + stix faces
    assert m["style_name"] == "varied" and m["style"]["rotate"] == [0.0, 10.0]


def test_a_style_file_is_named_in_the_manifest(tmp_path):
    """With --style-file the manifest's style name is the preset the file starts from (its own
    `preset` over --style) and the file's name."""
    f = tmp_path / "wide.toml"
    f.write_text('preset = "universal"\nlines = "0-8"\n')
    d = tmp_path / "w"
    cli("gen", "--out", d, "--style", "hard", "--style-file", f, "--val", 4, "-q")
    m = sh.read_manifest(str(d))
    assert m["style_name"] == "universal+wide.toml" and m["style"]["lines"] == [0, 8]
    f.write_text('lines = "0-8"\n')
    cli("gen", "--out", d, "--style", "hard", "--style-file", f, "--val", 4, "-q", "--overwrite")
    assert sh.read_manifest(str(d))["style_name"] == "hard+wide.toml"


def test_fonts_preset_is_the_default_look_in_every_training_family(tmp_path):
    """`--style fonts` renders at the default 160x60 with the library's knobs, half in its own
    font and half in every other training font family, none held out."""
    from captchalab.gen.fonts import held_out_paths
    from captchalab.gen.style import Style

    d = tmp_path / "fonts"
    cli("gen", "--out", d, "--train", 40, "--style", "fonts", "-q")
    m = sh.read_manifest(str(d))
    paths = {os.path.abspath(f["path"]) for f in m["fonts"]}
    assert len(paths) > 100 and not paths & held_out_paths()
    assert m["fonts"][0]["name"] == "DroidSansMono.ttf" and m["fonts"][0]["weight"] == 0.5
    knobs = {k: v for k, v in m["style"].items() if k not in ("fonts", "font_sizes")}
    default = {k: v for k, v in Style().to_json().items() if k not in ("fonts", "font_sizes")}
    assert knobs == default and m["style"]["font_sizes"] == [34, 38, 42, 46]
    recs = list(sh.iter_split(str(d), m, "train"))
    assert len({r["style/font"] for r in recs}) > 10


def test_verify_ok_and_catches_truncation_and_flipped_byte(tmp_path, small_dataset):
    assert "ok" in cli("verify", small_dataset).stdout
    import shutil
    d = tmp_path / "broken"
    shutil.copytree(small_dataset, d)
    victim = d / "captcha-train.tfrecord-00001-of-00003"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    short = d / "captcha-val.tfrecord-00000-of-00001"
    short.write_bytes(short.read_bytes()[:-100])
    p = cli("verify", d, check=False)
    assert p.returncode == 1
    assert "captcha-train.tfrecord-00001-of-00003: record " in p.stderr
    assert "checksum mismatch" in p.stderr
    assert "captcha-val.tfrecord-00000-of-00001: record 19 " in p.stderr and "truncated" in p.stderr
    # damaged data is exit 1 (not a usage error) with one line naming the shard, in every verb
    p = cli("export", d, "--png", tmp_path / "png", check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1
    assert "captcha-" in p.stderr and ".tfrecord-" in p.stderr
    assert sorted(os.listdir(tmp_path)) == ["broken"]  # nothing half-exported is left


def test_show_writes_sheet_and_rerenders_a_sample(tmp_path, small_dataset):
    out = tmp_path / "sheet.png"
    cli("show", small_dataset, "--out", out, "-n", 8)
    assert out.read_bytes()[:4] == b"\x89PNG"
    p = cli("show", small_dataset, "--sample", "val:17", "--out", tmp_path / "r.png")
    assert "matches the stored record" in p.stdout


def _kill_group(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_resume_after_kill_gives_identical_dataset(tmp_path):
    args = ["--train", 1200, "--val", 100, "--shard-size", 100, "--workers", 2, "-q"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "captchalab", "gen", "--out", str(cut),
                             *map(str, args)], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        done = [n for n in (os.listdir(cut) if cut.exists() else []) if sh.SHARD_RE.match(n)]
        if len(done) >= 3:
            break
        time.sleep(0.05)
    _kill_group(proc)  # kill -9 the whole run, workers included
    assert 3 <= len(done) < 13, "the run must be cut part-way"
    m = json.loads((cut / "dataset_info.json").read_text())
    assert m["complete"] is False
    assert cli("verify", cut, check=False).returncode == 1
    p = cli("gen", "--out", cut, "--resume", "--val", 50, check=False)
    assert p.returncode == 2 and "differs from the interrupted run" in p.stderr
    p = cli("gen", "--out", cut, "--resume", "-q")
    assert "shards kept from before" in p.stdout
    cli("gen", "--out", whole, *args)
    assert sorted(os.listdir(cut)) == sorted(os.listdir(whole))
    for name in os.listdir(whole):  # the manifests (and TFDS's) name their own command
        if name not in ("dataset_info.json", sh.TFDS_DIR):
            assert (cut / name).read_bytes() == (whole / name).read_bytes(), name
    assert (cut / "tfds/features.json").read_bytes() == (whole / "tfds/features.json").read_bytes()
    a, b = (json.loads((d / "dataset_info.json").read_text()) for d in (cut, whole))
    for m in (a, b):
        m.pop("created"), m.pop("command")
    assert a == b
    cli("verify", cut)


COMMANDS = ["gen", "verify", "show", "export", "import"]


@pytest.mark.parametrize("cmd", [None, *COMMANDS])
def test_help(cmd):
    p = cli(*([cmd] if cmd else []), "--help")
    assert "Usage:" in p.stdout


BAD = [
    (["--charset", ""], "--charset is empty"),
    (["--charset", "abca"], "'a' more than once"),
    (["--length", "0"], "at least 1"),
    (["--length", "6-4"], "min > max"),
    (["--length", "x"], "--length"),
    (["--size", "160x20"], "too small for the text"),
    (["--size", "30x60"], "too small for the text"),
    (["--size", "big"], "WIDTHxHEIGHT"),
    (["--train", "0"], "--train: 0"),
    (["--train", "-5"], "--train: -5"),
    (["--fonts", "nope.ttf"], "--fonts: 'nope.ttf'"),
    (["--fonts", "dejavoo"], "did you mean 'dejavu"),
    (["--fonts", "NOTAFONT"], "cannot read font file"),
    (["--shard-size", "0"], "--shard-size"),
    (["--style", "hrad"], "did you mean 'hard'"),
    (["--rotate", "500"], "--rotate"),
    (["--noise-dots", "5-1"], "lo > hi"),
    (["--workers", "0"], "--workers"),
    (["--style-file", "missing.toml"], "cannot read"),
    (["--style-file", "BADKEY"], "did you mean 'rotate'"),
    (["--resume", "--overwrite"], "contradict"),
    (["--frobnicate"], "No such option"),
    (["--train", "x"], "not a valid integer"),
    (["--train", "99999999999999999999"], "at most 1,000,000,000 samples per split"),
]


@pytest.mark.parametrize("extra,msg", BAD, ids=[" ".join(b[0]) or "empty" for b in BAD])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, extra, msg):
    (tmp_path / "NOTAFONT").write_text("not a font")
    (tmp_path / "BADKEY").write_text("rotat = 3\n")
    out = tmp_path / "out"
    extra = [str(tmp_path / e) if e in ("NOTAFONT", "BADKEY") else e for e in extra]
    args = ["gen", "--out", out, *(["--train", "10"] if "--train" not in extra else []), *extra]
    p = cli(*args, check=False, cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not out.exists()


def test_out_is_a_file_or_not_empty(tmp_path, small_dataset):
    f = tmp_path / "file"
    f.write_text("keep me")
    p = cli("gen", "--out", f, "--train", 10, check=False)
    assert p.returncode == 2 and "is a file" in p.stderr and f.read_text() == "keep me"
    before = {n: (small_dataset / n).stat().st_mtime_ns for n in os.listdir(small_dataset)}
    p = cli("gen", "--out", small_dataset, "--train", 10, check=False)
    assert p.returncode == 2 and "not empty" in p.stderr
    assert before == {n: (small_dataset / n).stat().st_mtime_ns for n in os.listdir(small_dataset)}


def test_overwrite_replaces_dataset(tmp_path):
    d = tmp_path / "d"
    cli("gen", "--out", d, "--train", 30, "-q")
    cli("gen", "--out", d, "--val", 10, "--overwrite", "-q")
    m = sh.read_manifest(str(d))
    assert list(m["splits"]) == ["val"]
    assert not [n for n in os.listdir(d) if n.startswith("captcha-train")]


def test_verify_and_show_refuse_non_datasets(tmp_path):
    for cmd in ("verify", "show"):
        p = cli(cmd, tmp_path, check=False)
        assert p.returncode == 2 and "not a captchalab dataset" in p.stderr
        p = cli(cmd, tmp_path / "nothing", check=False)
        assert p.returncode == 2 and "does not exist" in p.stderr


def test_reading_a_damaged_shard_names_it(tmp_path, small_dataset):
    import shutil
    d = tmp_path / "dmg"
    shutil.copytree(small_dataset, d)
    victim = d / "captcha-train.tfrecord-00000-of-00003"
    victim.write_bytes(victim.read_bytes()[:5000])
    p = cli("show", d, "-n", 30, "--out", tmp_path / "s.png", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr  # damaged data, not a usage error
    assert len(p.stderr.strip().splitlines()) == 1 and victim.name in p.stderr


@pytest.mark.slow
def test_large_varied_dataset_same_with_1_and_2_workers(tmp_path):
    """5000 samples of the most random preset: identical records whatever the worker count."""
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--train", 4000, "--val", 500, "--test", 500, "--style", "varied",
              "--length", "3-7", "--size", "200x64", "-q"]
    cli("gen", "--out", a, *common, "--workers", 1, "--shard-size", 1000)
    cli("gen", "--out", b, *common, "--workers", 2, "--shard-size", 333)
    for split in ("train", "val", "test"):
        assert record_hashes(a, split) == record_hashes(b, split)
    cli("verify", a)
    cli("verify", b)


def test_resume_with_a_partial_recipe_says_what_to_do(tmp_path, small_dataset):
    import shutil
    d = tmp_path / "d"
    shutil.copytree(small_dataset, d)
    p = cli("gen", "--out", d, "--resume", "--length", 5, check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "give --resume with only --out (drop --length)" in p.stderr


def test_resume_keeps_the_command_that_defined_the_dataset(tmp_path):
    d = tmp_path / "d"
    cli("gen", "--out", d, "--train", 20, "--shard-size", 10, "-q", "--workers", 1)
    (d / "captcha-train.tfrecord-00001-of-00002").unlink()  # as if interrupted
    first = json.loads((d / "dataset_info.json").read_text())["command"]
    cli("gen", "--out", d, "--resume", "-q", "--workers", 1)
    m = json.loads((d / "dataset_info.json").read_text())
    assert m["command"] == first and "--resume" not in first and m["complete"]


def test_an_out_folder_that_cannot_be_made_gives_one_line(tmp_path):
    (tmp_path / "afile").write_text("keep me")
    p = cli("gen", "--out", tmp_path / "afile" / "d", "--train", 10, "-q", check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert "Not a directory" in p.stderr and (tmp_path / "afile").read_text() == "keep me"


def test_a_full_disk_gives_one_line_and_resume_finishes(tmp_path):
    """A 300 KB tmpfs fills up mid-way; needs permission to mount (root), else skipped."""
    import shutil
    import subprocess
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        p = cli("gen", "--out", disk / "d", "--train", 100, "--shard-size", 10, "-q",
                "--workers", 1, check=False)
        assert p.returncode == 1 and p.stderr.count("\n") == 1
        assert "No space left on device" in p.stderr and "--resume" in p.stderr
        shutil.copytree(disk / "d", tmp_path / "d")  # move to room enough, then finish
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    cli("gen", "--out", tmp_path / "d", "--resume", "-q", "--workers", 1)
    cli("verify", tmp_path / "d")
