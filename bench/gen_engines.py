"""Generation engines: `gen --engine ray` against the local process pool, in one run.

Renders the same dataset with the local pool (1 and 2 processes) and with Ray tasks on a local
Ray instance (1 and 2 CPUs), alternating the engines for each repeat, and prints images/s and
Ray's overhead against the pool with the same number of workers. The Ray instance is started
before the clock starts (a cluster is up before its jobs); its start-up is printed apart, with
the end-to-end figure a one-off `captchalab gen --engine ray` sees. Overhead = local img/s
over Ray img/s - 1, with Ray's workers warm (second job on the instance).
Usage: python bench/gen_engines.py [--images 8000] [--shard-size 500] [--repeats 2]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from captchalab.gen.generate import generate  # noqa: E402
from captchalab.gen.recipe import GenRequest, build_recipe  # noqa: E402


def run_once(recipe, engine, workers):
    out = tempfile.mkdtemp(prefix="bench-engine-")
    try:
        t = time.perf_counter()
        generate(recipe, os.path.join(out, "d"), workers=workers, engine=engine, progress=False)
        return time.perf_counter() - t
    finally:
        shutil.rmtree(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8000, help="train images per measurement")
    ap.add_argument("--shard-size", type=int, default=500, help="records per shard (= per task)")
    ap.add_argument("--repeats", type=int, default=2, help="median of this many runs")
    args = ap.parse_args()

    import ray

    recipe = build_recipe(GenRequest(counts={"train": args.images}, shard_size=args.shard_size))
    n = args.images
    rows = []
    for workers in (1, 2):
        local, cold, warm, startup = [], [], [], []
        for _ in range(args.repeats):
            local.append(run_once(recipe, "local", workers))
            t = time.perf_counter()
            ray.init(num_cpus=workers, include_dashboard=False, logging_level="error")
            startup.append(time.perf_counter() - t)
            cold.append(run_once(recipe, "ray", workers))  # first job: workers start up
            warm.append(run_once(recipe, "ray", workers))  # workers up, fonts loaded
            ray.shutdown()
        lt, ct, wt, st = (statistics.median(x) for x in (local, cold, warm, startup))
        rows.append((workers, n / lt, n / wt, n / ct, st, n / (ct + st)))

    print(f"\n{n} images of 160x60, {n // args.shard_size} shards of {args.shard_size}, "
          f"{os.cpu_count()} cores, median of {args.repeats}\n")
    print("| workers | local pool img/s | Ray img/s (warm) | Ray overhead | Ray first job img/s "
          "| Ray start-up | one-off run incl. start-up img/s |")
    print("|---|---|---|---|---|---|---|")
    for w, lr, wr, cr, st, er in rows:
        print(f"| {w} | {lr:.0f} | {wr:.0f} | {100 * (lr / wr - 1):+.1f} % | {cr:.0f} | "
              f"{st:.1f} s | {er:.0f} |")


if __name__ == "__main__":
    main()
