"""Input pipeline speed: images/s that `train.input.shard_dataset` delivers from shards.

Reads the train split of a dataset (made here with `captchalab gen` unless --data is given) in
training mode (parallel interleave, shuffle, batch, then parse + PNG decode to uint8 RGB per
batch, prefetch) with no model attached; the same records with their PNGs re-encoded by Pillow
(a filter chosen per row, mostly Paeth: what `gen` wrote before commit 13f89ee; it now writes rows
unfiltered), alternated with the first, best of 2 each; with `cache` (the split decoded into
memory first; that pass is not timed); the model's own first layer (grey + 1/downscale, the
default resample) on those batches; for comparison, in the same run, the pipeline from before
commit 969b5c3 (parse + decode per image, then batch); then the on-the-fly stream (`--on-the-fly`), which
renders every image anew. Last, one core's PNG decode rate alone (TensorFlow's decoder on
in-memory PNGs, no tf.data), the ceiling per core of any pipeline over these payloads, for both
encodings.
Usage: python bench/input_speed.py [--data DIR] [--images 10000] [--batches 400]
"""

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def rate(ds, batches, batch_size):
    it = iter(ds)
    for _ in range(20):  # warm up: threads started, buffers filled
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t)


def pillow_png(png: bytes) -> bytes:
    """The same pixels as `gen` encoded them before commit 13f89ee: Pillow, a filter per row."""
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def pillow_copy(tf, sh, data, m, out):
    """Copy the train split of `data` to `out` with every payload re-encoded by Pillow."""
    os.makedirs(out)
    for path in sh.shard_paths(data, m, "train"):
        with tf.io.TFRecordWriter(os.path.join(out, os.path.basename(path))) as w:
            for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
                ex = tf.train.Example.FromString(raw)
                png = ex.features.feature["image/png"].bytes_list
                png.value[0] = pillow_png(png.value[0])
                w.write(ex.SerializeToString())
    shutil.copy(os.path.join(data, "dataset_info.json"), out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data or os.path.join(tmp, "data")
        if not a.data:
            subprocess.run([sys.executable, "-m", "captchalab", "gen", "--out", data, "--train",
                            str(a.images), "-q"], check=True)
        from captchalab.core.tfimport import import_tensorflow

        import_tensorflow()
        import tensorflow as tf

        from captchalab.core.layers import Preprocess
        from captchalab.gen import shards as sh
        from captchalab.train.config import TrainConfig
        from captchalab.train.input import shard_dataset

        m = sh.read_manifest(data)
        d, resample = TrainConfig().downscale, TrainConfig().resample
        print(f"{os.cpu_count()} cores, train split of {m['splits']['train']['count']} "
              f"{m['image']['width']}x{m['image']['height']} PNGs, batch {a.batch_size}")
        print(f"{'pipeline':52s} {'img/s':>8s}")
        old = os.path.join(tmp, "pillow")  # the same records, PNGs as Pillow encodes them
        pillow_copy(tf, sh, data, m, old)
        rates = {}
        for rnd in range(2):  # alternated, so drift on a shared machine hits both alike
            for label, src, kw in (
                    ("batch, then parse + decode per batch (default)", data, {}),
                    ("  the same, Pillow-encoded PNGs (before 13f89ee)", old, {}),
                    ("--cache (decoded into memory)", data, dict(cache=True))):
                if rnd and kw:
                    continue
                ds = shard_dataset(src, m, "train", batch_size=a.batch_size, training=True, **kw)
                rates.setdefault(label, []).append(rate(ds, a.batches, a.batch_size))
        for label, r in rates.items():
            print(f"{label:52s} {max(r):8.0f}", flush=True)
        pre = tf.function(Preprocess(d, resample))
        batch = next(iter(shard_dataset(data, m, "train", batch_size=a.batch_size, training=True,
                                        cache=True)))[0]
        pre(batch)
        t = time.perf_counter()
        for _ in range(a.batches):
            pre(batch).numpy()
        label = f"model's first layer alone (grey + 1/{d} {resample})"
        print(f"{label:52s} {a.batches * a.batch_size / (time.perf_counter() - t):8.0f}")
        hw = (m["image"]["height"], m["image"]["width"])
        spec = {"image/png": tf.io.FixedLenFeature([], tf.string),
                "label/ids": tf.io.VarLenFeature(tf.int64)}

        def per_image(raw):  # the pipeline before 969b5c3: one parse + decode call per record
            ex = tf.io.parse_single_example(raw, spec)
            ids = tf.cast(tf.sparse.to_dense(ex["label/ids"]), tf.int32)
            img = tf.io.decode_png(ex["image/png"], channels=3)
            img.set_shape((*hw, 3))
            return img, tf.pad(ids, [[0, m["length"][1] - tf.shape(ids)[0]]])

        files = tf.data.Dataset.from_tensor_slices(sh.shard_paths(data, m, "train")).repeat()
        ds = (files.interleave(tf.data.TFRecordDataset, cycle_length=8,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
              .map(per_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
              .shuffle(8192).batch(a.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
        label = "per image (before 969b5c3): parse + decode, batch"
        print(f"{label:52s} {rate(ds, a.batches, a.batch_size):8.0f}", flush=True)
        from captchalab.gen.recipe import Recipe
        from captchalab.train.input import stream_dataset

        workers = os.cpu_count() or 1
        ds = stream_dataset(Recipe.from_json(m), "train", start=0, batch_size=a.batch_size, workers=workers)
        label = f"on the fly, {workers} render processes"
        print(f"{label:52s} {rate(ds, a.batches // 8, a.batch_size):8.0f}", flush=True)
        pngs = [tf.io.parse_single_example(r, spec)["image/png"] for r in
                tf.data.TFRecordDataset(sh.shard_paths(data, m, "train")[:1]).take(1000)]

        @tf.function
        def one(p):  # parallel_iterations=1: one decode at a time
            return tf.map_fn(lambda x: tf.io.decode_png(x, channels=3), p,
                             fn_output_signature=tf.uint8, parallel_iterations=1)

        for label, payloads in (
                ("PNG decode alone, one core (ceiling per core)", pngs),
                ("  the same, Pillow-encoded PNGs", [pillow_png(p.numpy()) for p in pngs])):
            batch = tf.stack(payloads)
            one(batch)
            best = float("inf")
            for _ in range(5):  # best of 5: one pass is only ~0.2 s
                t = time.perf_counter()
                one(batch)
                best = min(best, time.perf_counter() - t)
            print(f"{label:52s} {len(pngs) / best:8.0f}", flush=True)


if __name__ == "__main__":
    main()
