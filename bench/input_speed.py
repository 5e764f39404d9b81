"""Input pipeline speed: images/s that `train.input.shard_dataset` delivers from shards.

Reads the train split of a dataset (made here with `captchalab gen` unless --data is given) in
training mode (parallel interleave, PNG decode, grey, resize, shuffle, batch, prefetch) with no
model attached, at the default and at full resolution, and with `cache` (the split decoded
into memory when the dataset is made; that pass is not timed);
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
        from captchalab.gen import shards as sh
        from captchalab.train.input import shard_dataset
        from captchalab.train.train import TrainConfig

        m = sh.read_manifest(data)
        default_ds = TrainConfig().downscale
        print(f"{os.cpu_count()} cores, train split of {m['splits']['train']['count']} "
              f"{m['image']['width']}x{m['image']['height']} PNGs, batch {a.batch_size}")
        print(f"{'pipeline':44s} {'img/s':>8s}")
        for label, kw in ((f"decode + resize to 1/{default_ds} (default)", dict(downscale=default_ds)),
                          ("decode at full size", dict(downscale=1)),
                          (f"1/{default_ds}, --cache (decoded into memory)",
                           dict(downscale=default_ds, cache=True))):
            ds = shard_dataset(data, m, "train", batch_size=a.batch_size, training=True, **kw)
            print(f"{label:44s} {rate(ds, a.batches, a.batch_size):8.0f}", flush=True)
        from captchalab.train.input import stream_dataset

        workers = os.cpu_count() or 1
        ds = stream_dataset(m, "train", start=0, batch_size=a.batch_size, downscale=default_ds,
                            workers=workers)
        label = f"on the fly, {workers} render processes"
        print(f"{label:44s} {rate(ds, a.batches // 8, a.batch_size):8.0f}", flush=True)


if __name__ == "__main__":
    main()
