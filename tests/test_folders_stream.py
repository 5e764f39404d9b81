"""PNG export/import round trip, import labelled by a model, and the on-the-fly stream
matching `gen`."""

import csv
import io
import json
import os
import string

import numpy as np
import pytest
from PIL import Image

from captchalab.core.errors import UsageError
from captchalab.gen import shards as sh
from captchalab.gen.stream import stream_recipe, stream_samples
from conftest import cli


def test_export_import_round_trip(tmp_path, small_dataset):
    png = tmp_path / "png"
    cli("export", small_dataset, "--png", png)
    rows = list(csv.DictReader(open(png / "labels.csv")))
    assert len(rows) == 100 and {r["split"] for r in rows} == {"train", "val", "test"}
    for split in ("train", "val", "test"):  # Hugging Face imagefolder: metadata beside images
        meta = list(csv.DictReader(open(png / split / "metadata.csv")))
        assert [(split + "/" + m["file_name"], m["label"]) for m in meta] == [
            (r["file"], r["label"]) for r in rows if r["split"] == split]
        assert all((png / split / m["file_name"]).exists() for m in meta)
    back = tmp_path / "back"
    cli("import", png, "--out", back, "--charset", "0-9a-z")
    cli("verify", back)
    m0, m1 = sh.read_manifest(str(small_dataset)), sh.read_manifest(str(back))
    assert m1["source"] == "imported" and m1["charset"] == m0["charset"]
    for split in ("train", "val", "test"):
        a = list(sh.iter_split(str(small_dataset), m0, split))
        b = list(sh.iter_split(str(back), m1, split))
        assert [r["label/text"] for r in a] == [r["label/text"] for r in b]
        assert [r["label/ids"] for r in a] == [r["label/ids"] for r in b]
        for ra, rb in zip(a, b, strict=True):  # pixels survive the trip exactly
            pa, pb = (np.asarray(Image.open(io.BytesIO(r["image/png"]))) for r in (ra, rb))
            assert (pa == pb).all()


def test_import_labels_from_file_names(tmp_path):
    src = tmp_path / "real"
    src.mkdir()
    for name in ("ab12.png", "0007_zz9.jpg", "x_Q1.png"):
        Image.new("RGB", (90, 30), (200, 10, 10)).save(src / name)
    out = tmp_path / "ds"
    p = cli("import", src, "--out", out)
    assert "charset '129Qabz'" in p.stdout
    m = sh.read_manifest(str(out))
    recs = list(sh.iter_split(str(out), m, "test"))
    assert sorted(r["label/text"] for r in recs) == ["Q1", "ab12", "zz9"]
    assert m["length"] == [2, 4] and m["size"] == [90, 30]


@pytest.mark.parametrize("case,msg", [
    ("empty", "holds no labelled images"),
    ("sizes", "differ in size"),
    ("charset", "not in --charset"),
    ("broken", "not a readable image"),
])
def test_import_bad_input(tmp_path, case, msg):
    src = tmp_path / "src"
    src.mkdir()
    if case != "empty":
        Image.new("RGB", (90, 30)).save(src / "ab.png")
    if case == "sizes":
        Image.new("RGB", (91, 30)).save(src / "cd.png")
    if case == "broken":
        (src / "ef.png").write_bytes(b"not an image")
    extra = ["--charset", "0-9"] if case == "charset" else []
    p = cli("import", src, "--out", tmp_path / "o", *extra, check=False)
    assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_stream_matches_gen_and_is_endless(small_dataset):
    m = sh.read_manifest(str(small_dataset))
    stored = list(sh.iter_split(str(small_dataset), m, "train"))[:10]
    recipe = stream_recipe()
    inproc = list(stream_samples(recipe, start=0, stop=10, workers=0))
    pooled = list(stream_samples(recipe, start=0, stop=10, workers=2, chunk=3))
    for (img, text), (img2, text2), rec in zip(inproc, pooled, stored, strict=True):
        ref = np.asarray(Image.open(io.BytesIO(rec["image/png"])))
        assert text == text2 == rec["label/text"]
        assert img.shape == (60, 160, 3) and img.dtype == np.uint8
        assert (img == ref).all() and (img2 == ref).all()
    endless = stream_samples(recipe, start=10_000, workers=1, chunk=4)
    labels = [next(endless)[1] for _ in range(9)]
    endless.close()
    assert len(labels) == 9


def _labelled_folder(tmp_path, header, rows, bom=False):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (90, 30), (200, 10, 10)).save(src / name)
    text = "\n".join([header, *rows]) + "\n"
    (src / "labels.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return src


@pytest.mark.parametrize("header, bom", [("file,label", True), ("file_name,label", False),
                                         ("filename,text", False), ("path,label", False)])
def test_import_labels_csv_common_headers_and_bom(tmp_path, header, bom):
    src = _labelled_folder(tmp_path, header, ["a.png,007", "b.png,x1"], bom=bom)
    out = tmp_path / "ds"
    cli("import", src, "--out", out)
    m = sh.read_manifest(str(out))
    assert sorted(r["label/text"] for r in sh.iter_split(str(out), m, "test")) == ["007", "x1"]


def test_import_refuses_a_file_listed_twice(tmp_path):
    src = _labelled_folder(tmp_path, "file,label", ["a.png,ab", "b.png,cd", "a.png,ef"])
    p = cli("import", src, "--out", tmp_path / "ds", check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "labels.csv:4: a.png is listed again (first on line 2)" in p.stderr
    assert not (tmp_path / "ds").exists()  # refused before anything is written


def test_import_refuses_whitespace_in_a_label(tmp_path):
    src = _labelled_folder(tmp_path, "file,label", ["a.png,ab 1", "b.png,cd"])
    p = cli("import", src, "--out", tmp_path / "ds", check=False)
    assert p.returncode == 2 and "label 'ab 1' holds whitespace" in p.stderr


def test_data_load_gives_the_trainers_batches(small_dataset):
    import captchalab.data
    from captchalab.core.charset import Charset

    m = sh.read_manifest(str(small_dataset))
    ds = captchalab.data.load(str(small_dataset), "val", batch_size=8)
    batches = list(ds.as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    ids = np.concatenate([b[1] for b in batches])
    assert images.shape == (20, 60, 160, 3) and images.dtype == np.uint8
    charset = Charset.from_json(m["charset"])
    texts = [charset.decode(int(i) for i in row if i) for row in ids]
    recs = {r["label/text"]: r for r in sh.iter_split(str(small_dataset), m, "val")}
    assert sorted(texts) == sorted(recs)  # every record once
    first = np.asarray(Image.open(io.BytesIO(recs[texts[0]]["image/png"])).convert("RGB"))
    assert (images[0] == first).all()
    x, y = next(iter(captchalab.data.load(str(small_dataset), "train", batch_size=16,
                                          shuffle=True)))
    assert x.shape == (16, 60, 160, 3) and y.shape == (16, 4)
    with pytest.raises(UsageError, match="^split nope"):
        captchalab.data.load(str(small_dataset), "nope")


def test_tfds_reads_a_dataset_in_place(small_dataset, tmp_path):
    import tensorflow_datasets as tfds  # in the dev extra: a missing install fails here
    m = sh.read_manifest(str(small_dataset))
    b = tfds.builder_from_directory(str(small_dataset / sh.TFDS_DIR))
    assert {s: b.info.splits[s].num_examples for s in ("train", "val", "test")} == m["counts"]
    got = [(ex["label"]["text"].decode(), list(ex["label"]["ids"]), ex["image"]["png"])
           for ex in tfds.as_numpy(b.as_dataset(split="val", shuffle_files=False))]
    recs = list(sh.iter_split(str(small_dataset), m, "val"))
    assert [(t, i) for t, i, _ in got] == [(r["label/text"], r["label/ids"]) for r in recs]
    pixels = np.asarray(Image.open(io.BytesIO(recs[0]["image/png"])).convert("RGB"))
    assert got[0][2].shape == (60, 160, 3) and (got[0][2] == pixels).all()
    # an imported dataset gets the same metadata; --overwrite replaces it
    png, back = tmp_path / "png", tmp_path / "back"
    cli("export", small_dataset, "--png", png)
    cli("import", png, "--out", back)
    assert tfds.builder_from_directory(str(back / sh.TFDS_DIR)).info.splits["test"].num_examples == 20
    cli("gen", "--out", back, "--train", 8, "--val", 4, "--test", 4, "--overwrite")
    assert tfds.builder_from_directory(str(back / sh.TFDS_DIR)).info.splits["test"].num_examples == 4


def test_hugging_face_imagefolder_loads_an_export(small_dataset, tmp_path, monkeypatch):
    import datasets  # in the dev extra
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    png = tmp_path / "png"
    cli("export", small_dataset, "--png", png)
    ds = datasets.load_dataset("imagefolder", data_dir=str(png),
                               cache_dir=str(tmp_path / "hf-cache"))
    assert {s: len(ds[s]) for s in ds} == {"train": 60, "validation": 20, "test": 20}
    rows = {r["file"]: r["label"] for r in csv.DictReader(open(png / "labels.csv"))}
    assert sorted(ds["test"]["label"]) == sorted(v for k, v in rows.items() if k.startswith("test/"))
    assert ds["test"][0]["image"].size == (160, 60)


@pytest.fixture(scope="module")
def unlabelled(small_dataset, tmp_path_factory):
    """small_dataset's test captchas as files whose names carry no label."""
    from captchalab.gen.folders import export_png

    d = tmp_path_factory.mktemp("unl")
    export_png(str(small_dataset), str(d / "png"), ["test"])
    os.makedirs(d / "site")
    for i, name in enumerate(sorted(os.listdir(d / "png" / "test"))):
        if name.endswith(".png"):
            os.replace(d / "png" / "test" / name, d / "site" / f"captcha{i:03d}.png")
    return d / "site"


def test_import_label_with_keeps_the_confident_readings(unlabelled, tmp_path):
    """--label-with: each captcha the model reads at or above --min-confidence, read as one of
    --length characters, is imported with that reading as its label (train split), the rest
    are left out; the manifest says which model labelled them."""
    p = cli("predict", "--model", "pretrained", unlabelled, "--json", "--scales", "1",
            "--blurs", "0", "--length", 4)  # import reads once
    reads = {os.path.basename(r["file"]): r for r in map(json.loads, p.stdout.splitlines())}
    # A cut halfway between two readings well apart: a confidence printed to 6 digits (or read
    # again a hair differently on another machine) must not sit on the cut.
    confs = sorted(r["confidence"] for r in reads.values())
    k = max(range(1, len(confs)), key=lambda i: (confs[i] - confs[i - 1] > 1e-4,
                                                 -abs(i - len(confs) // 2)))
    cut = round((confs[k - 1] + confs[k]) / 2, 6)
    want = {n: r["text"] for n, r in reads.items() if r["confidence"] >= cut}
    assert 0 < len(want) < len(reads)
    out = tmp_path / "pseudo"
    p = cli("import", unlabelled, "--out", out, "--label-with", "pretrained",
            "--min-confidence", cut, "--length", 4)
    assert f"({len(want)} of {len(reads)} read with confidence >= {cut})" in p.stdout
    m = sh.read_manifest(str(out))
    assert list(m["splits"]) == ["train"] and m["charset"]["chars"] == string.digits + \
        string.ascii_lowercase
    got = {r["source/file"]: r["label/text"] for r in sh.iter_split(str(out), m, "train")}
    assert got == want
    by = m["origin"]["labelled_by"]
    assert by["min_confidence"] == cut and (by["read"], by["kept"]) == (len(reads), len(want))
    assert by["length"] == [4, 4]
    assert (by["scales"], by["blurs"]) == ([1.0], [0.0])  # once, not at the model's six views


def test_import_label_with_reads_at_the_views_given(unlabelled, tmp_path):
    """--scales/--blurs: the folder is read at those views, as predict reads it at them."""
    p = cli("predict", "--model", "pretrained", unlabelled, "--json", "--scales", "1,0.85",
            "--blurs", "0", "--length", 4)
    want = {os.path.basename(r["file"]): r["text"] for r in map(json.loads, p.stdout.splitlines())}
    out = tmp_path / "pseudo"
    cli("import", unlabelled, "--out", out, "--label-with", "pretrained", "--min-confidence", 0,
        "--length", 4, "--scales", "1,0.85", "--blurs", "0")
    m = sh.read_manifest(str(out))
    assert {r["source/file"]: r["label/text"] for r in sh.iter_split(str(out), m, "train")} == want
    by = m["origin"]["labelled_by"]
    assert (by["scales"], by["blurs"]) == ([1.0, 0.85], [0.0])


def test_import_label_with_keeps_the_most_confident_share_and_a_val_split(unlabelled, tmp_path):
    """--most-confident: at most that share of the folder, the most confident readings first;
    --val-share: that share of them held out as val (the split `train` needs), the rest train."""
    p = cli("predict", "--model", "pretrained", unlabelled, "--json", "--scales", "1",
            "--blurs", "0", "--length", 4)
    reads = {os.path.basename(r["file"]): r for r in map(json.loads, p.stdout.splitlines())}
    ranked = sorted(reads, key=lambda n: -reads[n]["confidence"])
    top = round(0.5 * len(reads))
    assert reads[ranked[top - 1]]["confidence"] - reads[ranked[top]]["confidence"] > 1e-4
    out = tmp_path / "pseudo"
    p = cli("import", unlabelled, "--out", out, "--label-with", "pretrained", "--min-confidence",
            0, "--most-confident", 0.5, "--val-share", 0.25, "--length", 4)
    assert f"({top} of {len(reads)} read with confidence >= 0.0, at most the most confident " \
        "0.5)" in p.stdout
    m = sh.read_manifest(str(out))
    got = {s: {r["source/file"]: r["label/text"] for r in sh.iter_split(str(out), m, s)}
           for s in ("train", "val")}
    assert len(got["val"]) == round(0.25 * top) and len(got["train"]) == top - len(got["val"])
    assert {**got["train"], **got["val"]} == {n: reads[n]["text"] for n in ranked[:top]}
    assert m["origin"]["labelled_by"]["most_confident"] == 0.5 and "0.25 of train" in \
        m["split_rule"]


def test_import_val_share_of_a_labelled_folder(tmp_path):
    """--val-share on a labelled folder: the rest is train (not test, the default split)."""
    from PIL import Image

    for i in range(10):
        Image.new("RGB", (40, 20), "white").save(tmp_path / f"{i}_ab{i}.png")
    cli("import", tmp_path, "--out", tmp_path / "d", "--val-share", 0.2)
    assert sh.read_manifest(str(tmp_path / "d"))["counts"] == {"train": 8, "val": 2}
    p = cli("import", tmp_path, "--out", tmp_path / "e", "--val-share", 0.2, "--split", "test",
            check=False)
    assert p.returncode == 2 and "--val-share holds out part of the train split" in p.stderr
    assert not (tmp_path / "e").exists()
    for share, msg in (("1", "--val-share"), ("0", "--val-share")):
        p = cli("import", tmp_path, "--out", tmp_path / "e", "--val-share", share, check=False)
        assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1
    (tmp_path / "one").mkdir()
    Image.new("RGB", (40, 20), "white").save(tmp_path / "one" / "ab.png")
    p = cli("import", tmp_path / "one", "--out", tmp_path / "e", "--val-share", 0.5, check=False)
    assert p.returncode == 2 and "needs at least 2" in p.stderr and not (tmp_path / "e").exists()


def test_import_label_with_a_run_that_reads_nothing(unlabelled, tmp_path):
    """A run that reads every captcha as empty cannot label them, whatever --min-confidence:
    said as such (not "give a lower --min-confidence"), exit 2, nothing written."""
    import shutil

    from captchalab.eval.predictor import load_keras_model

    src = os.path.join(os.path.dirname(__file__), "fixtures", "0ce7b0d", "run")
    run = tmp_path / "blank-run"
    run.mkdir()
    shutil.copyfile(os.path.join(src, "config.json"), run / "config.json")
    model = load_keras_model(src)
    kernel, bias = model.get_layer("logits").get_weights()
    bias[0] += 1e3  # the blank at every step
    model.get_layer("logits").set_weights([kernel, bias])
    model.save(run / "model.keras")
    p = cli("import", unlabelled, "--out", tmp_path / "out", "--label-with", run,
            "--min-confidence", 0, check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith(f"error: --label-with: {run} read none of the") and \
        "every reading was empty" in lines[0] and "--min-confidence" not in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,msg", [
    (["--min-confidence", "0.5"], "--min-confidence applies to --label-with RUN"),
    (["--length", "4"], "--length applies to --label-with RUN"),
    (["--scales", "1,0.85"], "--scales applies to --label-with RUN"),
    (["--most-confident", "0.5"], "--most-confident applies to --label-with RUN"),
    (["--label-with", "pretrained", "--most-confident", "0"], "--most-confident"),
    (["--label-with", "pretrained", "--blurs", "9"], "--blurs"),
    (["--label-with", "pretrained", "--length", "0"], "--length: '0'; lengths must be at least 1"),
    (["--label-with", "pretrained", "--length", "9"], "confidently with 9 characters"),
    (["--label-with", "NOTARUN"], "--label-with NOTARUN is not a trained captchalab run"),
    (["--label-with", "pretrained", "--min-confidence", "1"], "--min-confidence"),
    (["--label-with", "pretrained", "--out", "FULL"], "is not empty; add --overwrite"),
    (["--label-with", "pretrained", "--min-confidence", "0.9999999"],
     "confidently (the highest confidence is"),
])
def test_import_label_with_bad_input(unlabelled, tmp_path, args, msg):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("keep me")
    names = {"NOTARUN": str(tmp_path), "FULL": str(tmp_path / "full")}
    args = [names.get(a, a) for a in args]
    msg = msg.replace("NOTARUN", names["NOTARUN"])
    out = [] if "--out" in args else ["--out", tmp_path / "out"]
    p = cli("import", unlabelled, *out, *args, check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and msg in lines[0], p.stderr
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "full" / "keep").read_text() == "keep me"
