"""Generation speed: `captchalab gen` against a plain loop over the captcha library.

Prints images/s of `captchalab gen` (whole CLI run: seeding, rendering, PNG encoding, TFRecord
framing, sha256, manifest) with 1 and 2 workers, and of a bare `ImageCaptcha().generate(text)`
loop (PNG bytes, the library's own unseeded randomness) in 1 and 2 processes, all in one run,
with the ratios. Usage: python bench/gen_speed.py [--images 4000]
"""

import argparse
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"


def raw_loop(args):
    n, seed = args
    from captcha.image import ImageCaptcha

    cap = ImageCaptcha()
    rng = random.Random(seed)
    size = 0
    for _ in range(n):
        text = "".join(rng.choice(CHARS) for _ in range(4))
        size += len(cap.generate(text).getvalue())
    return size


def time_raw(n, procs):
    t = time.perf_counter()
    if procs == 1:
        raw_loop((n, 0))
    else:
        with mp.get_context("fork").Pool(procs) as pool:
            pool.map(raw_loop, [(n // procs, i) for i in range(procs)])
    return n / (time.perf_counter() - t)


def time_gen(n, workers, shard_size):
    out = tempfile.mkdtemp(prefix="bench-gen-")
    try:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "captchalab", "gen", "--out", os.path.join(out, "d"),
                        "--train", str(n), "--shard-size", str(shard_size), "--workers",
                        str(workers), "-q"], check=True, stdout=subprocess.DEVNULL)
        return n / (time.perf_counter() - t)
    finally:
        shutil.rmtree(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000, help="images per measurement")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    a = ap.parse_args()
    n = a.images
    shard = max(1, n // 8)  # 8 shards: both workers stay busy to the end
    print(f"# {n} images per run, best of {a.repeats}, {os.cpu_count()} CPUs")
    best = {}
    for _ in range(a.repeats):
        for key, fn in (("raw1", lambda: time_raw(n, 1)), ("raw2", lambda: time_raw(n, 2)),
                        ("gen1", lambda: time_gen(n, 1, shard)),
                        ("gen2", lambda: time_gen(n, 2, shard))):
            best[key] = max(best.get(key, 0.0), fn())
    print(f"{'what':44s} {'img/s':>8s}")
    print(f"{'ImageCaptcha().generate() loop, 1 process':44s} {best['raw1']:8.0f}")
    print(f"{'ImageCaptcha().generate() loop, 2 processes':44s} {best['raw2']:8.0f}")
    print(f"{'captchalab gen --workers 1 (whole CLI run)':44s} {best['gen1']:8.0f}")
    print(f"{'captchalab gen --workers 2 (whole CLI run)':44s} {best['gen2']:8.0f}")
    print(f"ratio gen/raw, 1 process:  {best['gen1'] / best['raw1']:.2f}  (target >= 1.0)")
    print(f"ratio gen/raw, 2 processes: {best['gen2'] / best['raw2']:.2f}")
    print(f"scaling gen 1 -> 2 workers: {best['gen2'] / best['gen1']:.2f}x  (target >= 1.8)")
    print(f"scaling raw 1 -> 2 procs:   {best['raw2'] / best['raw1']:.2f}x")


if __name__ == "__main__":
    main()
