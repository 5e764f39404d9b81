"""Input pipeline speed: images/s that `train.input.shard_dataset` delivers from shards.

Reads the train split of a dataset (made here with `captchalab gen` unless --data is given) in
training mode (parallel interleave, PNG decode to uint8 RGB, shuffle, batch, prefetch) with no
model attached; with `cache` (the split decoded into memory first; that pass is not timed);
the model's own first layer (grey + 1/3 box downscale) on those batches; for comparison, the
previous pipeline (grey decode + antialiased resize per image in tf.data), in the same run;
then the on-the-fly stream (`--on-the-fly`), which renders every image anew.
Usage: python bench/input_speed.py [--data DIR] [--images 10000] [--batches 400]
"""

import argparse
import os
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
        from captchalab.tfimport import import_tensorflow

        import_tensorflow()
        import tensorflow as tf

        from captchalab.gen import shards as sh
        from captchalab.train.input import shard_dataset
        from captchalab.train.layers import Preprocess
        from captchalab.train.train import TrainConfig

        m = sh.read_manifest(data)
        d = TrainConfig().downscale
        print(f"{os.cpu_count()} cores, train split of {m['splits']['train']['count']} "
              f"{m['image']['width']}x{m['image']['height']} PNGs, batch {a.batch_size}")
        print(f"{'pipeline':52s} {'img/s':>8s}")
        for label, kw in (("decode to uint8 RGB (default)", {}),
                          ("--cache (decoded into memory)", dict(cache=True))):
            ds = shard_dataset(data, m, "train", batch_size=a.batch_size, training=True, **kw)
            print(f"{label:52s} {rate(ds, a.batches, a.batch_size):8.0f}", flush=True)
        pre = tf.function(Preprocess(d))
        batch = next(iter(shard_dataset(data, m, "train", batch_size=a.batch_size, training=True,
                                        cache=True)))[0]
        pre(batch)
        t = time.perf_counter()
        for _ in range(a.batches):
            pre(batch).numpy()
        label = f"model's first layer alone (grey + 1/{d} box downscale)"
        print(f"{label:52s} {a.batches * a.batch_size / (time.perf_counter() - t):8.0f}")
        h, w = m["image"]["height"] // d, m["image"]["width"] // d

        def old_decode(png):  # the pipeline before models took raw RGB (session 2)
            img = tf.image.convert_image_dtype(tf.io.decode_png(png, channels=1), tf.float32)
            return tf.image.resize(img, (h, w), antialias=True)

        spec = {"image/png": tf.io.FixedLenFeature([], tf.string)}
        files = tf.data.Dataset.from_tensor_slices(sh.shard_paths(data, m, "train")).repeat()
        ds = (files.interleave(tf.data.TFRecordDataset, cycle_length=8,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
              .map(lambda r: old_decode(tf.io.parse_single_example(r, spec)["image/png"]),
                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
              .shuffle(8192).batch(a.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
        label = "previous: grey decode + antialiased resize per image"
        print(f"{label:52s} {rate(ds, a.batches, a.batch_size):8.0f}", flush=True)
        from captchalab.train.input import stream_dataset

        workers = os.cpu_count() or 1
        ds = stream_dataset(m, "train", start=0, batch_size=a.batch_size, workers=workers)
        label = f"on the fly, {workers} render processes"
        print(f"{label:52s} {rate(ds, a.batches // 8, a.batch_size):8.0f}", flush=True)


if __name__ == "__main__":
    main()
