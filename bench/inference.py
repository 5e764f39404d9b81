"""Inference speed of a trained run through `captchalab.load(RUN).predict`.

Batched images/s (batches of --batch-size, uint8 arrays and PNG bytes; arrays again with
test-time augmentation) and warm single-image latency (median and 90th percentile of --repeats
calls), for the Keras model read at one view and its TFLite export; for a run that reads at
several widths and blurs of its own (the shipped model), arrays again with those views.
Without --model, a default-arch run is trained for a few steps here (weights do not change the
speed).
Usage: python bench/inference.py [--model RUN|pretrained] [--images 2048] [--batch-size 256]
"""

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def timed(fn, repeats):
    """Seconds per call of fn(): list of `repeats` timings after 10 warm-up calls."""
    for _ in range(10):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=300)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from captchalab.core.runconfig import resolve_run

        run = a.model and resolve_run(a.model)  # "pretrained": the shipped model
        data = os.path.join(tmp, "data")
        subprocess.run([sys.executable, "-m", "captchalab", "gen", "--out", data, "--train",
                        "64", "--val", "64", "--test", str(a.images), "-q"], check=True)
        if not run:
            run = os.path.join(tmp, "run")
            subprocess.run([sys.executable, "-m", "captchalab", "train", "--data", data,
                            "--out", run, "--steps", "2", "-q"], check=True,
                           stdout=subprocess.DEVNULL)
        import numpy as np
        from PIL import Image

        import captchalab
        from captchalab.eval.export import export_model, load_exported
        from captchalab.gen import shards as sh

        m = sh.read_manifest(data)
        pngs = [r["image/png"] for r in sh.iter_split(data, m, "test")]
        arrays = np.stack([np.asarray(Image.open(io.BytesIO(p)).convert("RGB")) for p in pngs])
        own = captchalab.load(run)  # with the run's own widths and blurs, if it has any
        rec = captchalab.load(run, (1.0,), (0.0,))
        views = len(own.scales) * len(own.blurs)
        params = rec.model.count_params()
        print(f"{os.cpu_count()} cores; {rec.config['arch']} ({params:,} parameters), "
              f"{rec.size[0]}x{rec.size[1]} input; {len(pngs)} test images")
        print(f"{'what':48s} {'figure':>14s}")

        def batched(inputs, tta=False, r=rec):
            t = time.perf_counter()
            r.predict(inputs, batch_size=a.batch_size, tta=tta)
            return len(inputs) / (time.perf_counter() - t)

        rec.predict(arrays[: a.batch_size])  # warm up
        rec.predict(arrays[: a.batch_size], tta=True)
        for label, inputs, tta in (
                (f"batched ({a.batch_size}), uint8 arrays", arrays, False),
                (f"batched ({a.batch_size}), PNG bytes (decode included)", pngs, False),
                (f"batched ({a.batch_size}), uint8 arrays, tta=True", arrays, True)):
            best = max(batched(inputs, tta) for _ in range(3))
            print(f"{label:48s} {best:10.0f} img/s", flush=True)
        if views > 1:
            own.predict(arrays[: a.batch_size])  # warm up
            best = max(batched(arrays, r=own) for _ in range(3))
            label = f"batched ({a.batch_size}), uint8 arrays, the run's {views} views"
            print(f"{label:48s} {best:10.0f} img/s", flush=True)
            ts = np.array(timed(lambda: own.predict(arrays[0]), a.repeats)) * 1000
            label = f"single image warm, uint8 array, {views} views"
            print(f"{label:48s} {np.median(ts):6.2f} ms median, p90 {np.percentile(ts, 90):.2f}",
                  flush=True)
        for label, one, tta in (("single image warm, uint8 array", arrays[0], False),
                                ("single image warm, PNG bytes", pngs[0], False),
                                ("single image warm, uint8 array, tta=True", arrays[0], True)):
            ts = np.array(timed(lambda one=one, tta=tta: rec.predict(one, tta=tta),
                                a.repeats)) * 1000
            print(f"{label:48s} {np.median(ts):6.2f} ms median, p90 {np.percentile(ts, 90):.2f}",
                  flush=True)
        tfl = load_exported(export_model(run, "tflite", os.path.join(tmp, "tflite")))
        one = arrays[:1]
        ts = np.array(timed(lambda: rec.decode(tfl(one)), a.repeats)) * 1000
        print(f"{'single image warm, TFLite export':48s} {np.median(ts):6.2f} ms median, "
              f"p90 {np.percentile(ts, 90):.2f}")


if __name__ == "__main__":
    main()
