"""Transfer benchmark: how well models read captchas they were not trained on.

Test sets (each --samples captchas, 4 characters from 0-9a-z or --chars, 160x60):
  captchalab-default    `gen --test N` (the library's default style)
  captchalab-universal  `gen --style universal --test N`
  held-out-fonts        `gen --fonts held-out --test N`: the 8 font families no preset trains on,
                        with the library's default knobs
  claptcha, kaptcha, multicolorcaptcha, wheezy-captcha, flask-simple-captcha
                        other captcha generators from PyPI (the `transfer` extra; bench-only,
                        never training data), each drawing our labels with its own fonts,
                        colours and noise, scaled to 160x60
Rows: each --model NAME=RUN; each --train RECIPE, trained here for --budget into OUT/runs/RECIPE
(kept: a recipe already trained there is reused) on the fly, or with --shards N from N samples
rendered first into OUT/data/RECIPE (the shipped model's way; --mix mixes presets in either
way), or for --steps N optimizer steps instead of --budget (the same training on any
machine); with --known-length, each model again as "NAME len4", reading every captcha as one
of 4 characters (`eval --length 4`: what a user who knows a site's length gets); with --chars
SPEC, every set drawn from those characters and each model again as "NAME SPEC", reading only
them (`eval --charset SPEC`: what a user who knows a site's characters gets); with --plain, five
more sets, NAME-plain: each foreign generator's captchas (the same labels and seeds) without
what it draws over and around its text (lines, curves, ellipses, chips, dots, grain), so the
gap between the two columns is what the marks cost each model; plus ddddocr
(the pretrained captcha OCR on PyPI, which has no length option), lower-cased, and with --chars
"ddddocr SPEC", its per-step probabilities over those characters alone; with --together
NAME=RUN+RUN, the runs read as one (read_together: every reading any of their views proposes,
scored by its mean probability over all their views). Recipes: default,
varied, universal (`--style NAME`), and the ablation universal-no-PART: universal with one part
of its space (fonts, colour, geometry, clutter, degradations) put back to the captcha library's
defaults; with universal among the models, OUT/ablation.png plots what each part buys.
Cells: full-sequence accuracy with its 95 % Wilson interval, and character accuracy. Every row
is also compared with the first (or --against ROW), captcha by captcha (the same captchas read
by both): how many only it reads, how many only that row reads, and the exact McNemar p-value
of that split (small: the difference is not the luck of the draw; intervals that overlap can
still differ there). Printed, and written as OUT/transfer.json and OUT/transfer.png. Sets
are rendered once into OUT/sets (or --sets DIR; seeded: the same on every run) and reused.

    python bench/transfer.py --model default=runs/default --model universal=runs/universal
    python bench/transfer.py --train universal,universal-no-fonts --budget 10m
    python bench/transfer.py --model shipped=pretrained --together both=pretrained+runs/seed1
    python bench/transfer.py --model shipped=pretrained --plain --no-peer
    python bench/transfer.py --train universal,universal-no-clutter --shards 40000 \
        --mix default:0.2 --budget 10m --no-peer
    python bench/transfer.py --train universal,universal-no-fonts --shards 30000 --steps 1872 \
        --mix default:0.3 --scales 1 --no-peer --out bench/out/ablation
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageFont

CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"
SIZE = (160, 60)
LENGTH = 4  # characters of every captcha of every set
EXTRA = "pip install -e '.[transfer]'"


# --- foreign generators: (label, random.Random, marks) -> PIL image -------------------------
# Every one draws from Python's `random` module; it is seeded per sample, so sets are stable.
# marks=False: the same captcha without what the generator draws over or around its text
# (lines, curves, ellipses, chips, dots, grain), for --plain.

def _claptcha(text, rng, marks=True):
    from claptcha import Claptcha

    if not hasattr(ImageFont.FreeTypeFont, "getsize"):  # claptcha 0.3.3 predates Pillow 10
        def getsize(font, t):
            left, top, right, bottom = font.getbbox(t)
            return right, bottom
        ImageFont.FreeTypeFont.getsize = getsize
    font = _mc_font("freefont-20120503/FreeSans.ttf")
    noise = rng.random() * 0.4
    if marks:
        return Claptcha(text, font, size=SIZE, margin=(12, 8), noise=noise).image[1]

    class Plain(Claptcha):  # its morphed line through the text, and no grain
        def _drawLine(self, image):
            pass
    return Plain(text, font, size=SIZE, margin=(12, 8), noise=0.0).image[1]


def _kaptcha(text, rng, marks=True):
    import kaptcha
    from kaptcha.captcha import CaptchaPainter
    fonts = [os.path.join(os.path.dirname(kaptcha.__file__), f"font{i}.ttf") for i in (1, 2, 3, 4)]
    # its defaults: 260x125, 5 rounds of chips (rectangles, ellipses, thick lines)
    return CaptchaPainter(text=text, font=fonts, gran=5 if marks else 0).normal


def _multicolor(text, rng, marks=True):
    from multicolorcaptcha import CaptchaGenerator

    gen = CaptchaGenerator(2)
    size = gen.captcha_size
    fourth = int(size[0] / 4 + 0.5)
    bg = gen.gen_rand_color()
    chars = [gen.gen_captcha_char_image(c, (fourth, fourth), 2 if marks else 0, bg)["image"]
             for c in text]
    image = gen.images_join_horizontal(chars)
    if not marks:  # each character's own lines, the long lines and the dots
        return image
    for _ in range(rng.randint(0, 2)):
        gen.add_rand_horizontal_line_to_image(image, rng.randint(1, 5))
    for _ in range(rng.randint(0, 3)):
        gen.add_rand_circle_to_image(image, int(0.05 * fourth), int(0.15 * fourth))
    return image


def _wheezy(text, rng, marks=True):
    from wheezy.captcha import image as w

    fonts = [_mc_font(f) for f in ("freefont-20120503/FreeSans.ttf",
                                   "freefont-20120503/FreeSerifBold.ttf")]
    draw = w.captcha(width=200, height=75, drawings=[
        w.background(), w.text(fonts=fonts, drawings=[w.warp(), w.rotate(), w.offset()]),
        *((w.curve(), w.noise()) if marks else ()), w.smooth()])
    return draw(list(text))


def _flask_simple(text, rng, marks=True):
    from flask_simple_captcha import img
    from flask_simple_captcha.text import CAPTCHA_FONTS

    font = rng.choice(CAPTCHA_FONTS).path
    if marks:
        return img.draw_lines(img.create_text_img(text, font), text_color=(255, 255, 255))
    lines, img.draw_lines = img.draw_lines, lambda im, **kw: im  # it draws lines inside too
    try:
        return img.create_text_img(text, font)
    finally:
        img.draw_lines = lines


def _mc_font(rel):
    import multicolorcaptcha
    return os.path.join(os.path.dirname(multicolorcaptcha.__file__), "fonts", rel)


FOREIGN = {"claptcha": _claptcha, "kaptcha": _kaptcha, "multicolorcaptcha": _multicolor,
           "wheezy-captcha": _wheezy, "flask-simple-captcha": _flask_simple}
OWN = {"captchalab-default": [], "captchalab-universal": ["--style", "universal"],
       "held-out-fonts": ["--fonts", "held-out"]}

# The ablation: universal with one part of its space back at the library's defaults
# (captcha 0.7.1 ImageCaptcha; the `default` preset), written as a style file.
PARTS = {
    "fonts": {"fonts": ["builtin"]},
    "colour": {"bg": "238-255", "fg": "10-200", "min_contrast": 0, "gradient": 0,
               "bg_gradient": 0},
    "geometry": {"text_scale": 1, "text_x": 0.5, "text_y": 0.5, "tilt": 0, "shear": 0,
                 "wave": 0, "rotate": 30, "warp_dx": 0.3, "warp_dy": 0.3, "offset_dx": 4,
                 "offset_dy": 6, "space_prob": 0.5, "word_offset": 0.25},
    "clutter": {"noise_dots": 30, "noise_dot_width": 3, "noise_curves": 1, "lines": 0,
                "grid": 0, "texture": 0, "speckle": 0},
    "degradations": {"blur": 0, "downscale": 1, "noise": 0, "jpeg": 0},
}
RECIPES = ["default", "varied", "universal", *(f"universal-no-{p}" for p in PARTS)]


def recipe_args(name, folder):
    """`captchalab train` options of a recipe (a style file for the ablation's)."""
    if not name.startswith("universal-no-"):
        return ["--style", name]
    part = PARTS[name.removeprefix("universal-no-")]
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.toml")
    with open(path, "w") as f:
        f.write('preset = "universal"\n' + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in part.items()))
    return ["--style-file", path]


def train_recipe(name, out, budget, shards=0, mix="", steps=0):
    """Train recipe `name` for `budget` (or `steps` optimizer steps, when > 0) into
    out/runs/name (reused if there): on the fly, or from `shards` samples rendered first into
    out/data/name. Returns (run, seconds rendering)."""
    run = os.path.join(out, "runs", name)
    if os.path.isfile(os.path.join(run, "model.keras")):
        print(f"{name}: reusing {run}", flush=True)
        return run, None
    shutil.rmtree(run, ignore_errors=True)
    style = [*recipe_args(name, os.path.join(out, "styles")), *(["--mix", mix] if mix else [])]
    t = time.perf_counter()
    gen_s = 0.0
    if shards:
        data = os.path.join(out, "data", name)
        subprocess.run([sys.executable, "-m", "captchalab", "gen", "--out", data, "--train",
                        str(shards), "--val", "1000", "--seed", "1", "--overwrite", "-q", *style],
                       check=True)
        gen_s = time.perf_counter() - t
        args = ["--data", data]
    else:
        args = ["--on-the-fly", *style]
    length = ["--steps", str(steps)] if steps else ["--time-budget", budget]
    subprocess.run([sys.executable, "-m", "captchalab", "train", "--out", run, *length, "-q",
                    *args], check=True)
    print(f"{name}: {f'rendered in {gen_s:.0f} s, ' if shards else ''}trained in "
          f"{time.perf_counter() - t - gen_s:.0f} s", flush=True)
    return run, round(gen_s, 1)


def foreign_set(name, n, folder, tag="transfer", chars=CHARS, marks=True):
    """n labelled PNGs (INDEX_LABEL.png) of a foreign generator, scaled to 160x60, labels drawn
    from `chars`; `tag` seeds them (other tags give other captchas: bench/adapt.py's training
    pools); marks=False: the same labels from the same seeds, without the generator's marks."""
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        rng = random.Random(f"{tag}|{name}|{i}")
        text = "".join(rng.choice(chars) for _ in range(LENGTH))
        random.seed(f"{tag}|{name}|{i}|render")  # the generators draw from `random`
        im = FOREIGN[name](text, rng, marks).convert("RGB").resize(SIZE,
                                                                    Image.Resampling.BILINEAR)
        im.save(os.path.join(folder, f"{i:05d}_{text}.png"))


def own_set(name, n, folder, chars=CHARS):
    """n captchas of the test split of a captchalab style, labels drawn from `chars`, exported
    as labelled PNGs."""
    data = folder + "-data"
    subprocess.run([sys.executable, "-m", "captchalab", "gen", "--out", data, "--test", str(n),
                    "--seed", "7", "-q", "--overwrite", *OWN[name],
                    *(() if chars == CHARS else ("--charset", chars))], check=True)
    subprocess.run([sys.executable, "-m", "captchalab", "export", data, "--png", folder + "-png",
                    "--overwrite"], check=True, stdout=subprocess.DEVNULL)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder + "-png", "labels.csv")) as f:
        for r in csv.DictReader(f):
            i = int(os.path.basename(r["file"]).split("_")[0].split(".")[0])
            os.replace(os.path.join(folder + "-png", r["file"]),
                       os.path.join(folder, f"{i:05d}_{r['label']}.png"))
    shutil.rmtree(folder + "-png")


def peer_in_charset(ocr, png, chars) -> str:
    """ddddocr's reading (lower-cased) using only `chars` (either case): its per-step
    probabilities with every other class left out, read greedily as CTC (repeats merged,
    blanks dropped). Its own set_ranges() leaves the text of ddddocr 1.6 unchanged."""
    r = ocr.classification(png, probability=True)
    names = r["charset"]
    keep = [0] + [i for i, c in enumerate(names) if c and c.lower() in chars]
    p = np.asarray(r["probabilities"]).reshape(len(r["probabilities"]), -1)[:, keep]
    out, last = [], 0
    for k in p.argmax(-1):
        if k and k != last:
            out.append(names[keep[k]].lower())
        last = k
    return "".join(out)


def read_together(recs, images, batch: int = 256) -> list[str]:
    """Several runs read images as one: each reads every image at each of its views (widths x
    blurs); every reading any view of any run proposes is scored by its probability under each
    view of each run (CTC, all alignments, each run's calibrated temperature), and the reading
    of the highest mean probability is kept (`decode_views(mean=True)`). The runs' outputs are
    never averaged step by step: runs trained apart place a character's peak at different
    steps."""
    from captchalab.core.ctc import decode_views
    from captchalab.eval.predictor import blur, squeeze

    if len({r.charset for r in recs}) > 1:
        sys.exit("error: --together: the runs read different charsets")
    out = []
    for lo in range(0, len(images), batch):
        x = images[lo:lo + batch]
        views = [r.logits(blur(squeeze(x, s), b)) / r.temperature for r in recs
                 for s in r.scales for b in r.blurs]
        out += decode_views("ctc", views, recs[0].charset, mean=True)[0]
    return out


def load_set(folder):
    names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
    labels = [n[:-4].split("_", 1)[1] for n in names]
    pngs = [open(os.path.join(folder, n), "rb").read() for n in names]  # ddddocr reads bytes
    images = np.stack([np.asarray(Image.open(io.BytesIO(p)).convert("RGB")) for p in pngs])
    return labels, images, pngs


def paired(first, other) -> dict:
    """Two readers' right/wrong on the same captchas -> {"better": read by `other` only,
    "worse": by `first` only, "p": the exact two-sided McNemar p-value of that split}."""
    from scipy.stats import binomtest

    first, other = np.asarray(first, bool), np.asarray(other, bool)
    better, worse = int((other & ~first).sum()), int((first & ~other).sum())
    p = binomtest(better, better + worse).pvalue if better + worse else 1.0
    return {"better": better, "worse": worse, "p": round(float(p), 4)}


def hits(truths, preds) -> list[bool]:
    """Whether each captcha was read right (the whole sequence)."""
    return [t == p for t, p in zip(truths, preds, strict=True)]


def score(truths, preds):
    from captchalab.core.metrics import character_accuracy
    from captchalab.eval.report import wilson

    k = sum(hits(truths, preds))
    return {"seq_acc": k / len(truths), "seq_acc_ci95": list(wilson(k, len(truths))),
            "char_acc": character_accuracy(truths, preds), "n": len(truths)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], metavar="NAME=RUN",
                    help="a trained run to score (repeat); none: only ddddocr")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--out", default="bench/out/transfer")
    ap.add_argument("--sets", default="", metavar="DIR",
                    help="where the test sets are rendered and reused (default: OUT/sets); "
                         "another bench's sets folder saves rendering them again")
    ap.add_argument("--against", default="", metavar="ROW",
                    help="the row every other is compared with captcha by captcha (default: "
                         "the first; e.g. ddddocr)")
    ap.add_argument("--no-peer", action="store_true", help="skip the ddddocr row")
    ap.add_argument("--blurs", default="", metavar="S1,S2,…",
                    help="blurs every model reads each image at (eval --blurs; default: each "
                         "run's own: 0,1 for the shipped model, 0 for others)")
    ap.add_argument("--scales", default="", metavar="W1,W2,…",
                    help="widths every model reads each image at (eval --scales; default: each "
                         "run's own: 1,0.85,0.7 for the shipped model, 1 for others)")
    ap.add_argument("--known-length", action="store_true",
                    help=f"also score each model reading every captcha as one of {LENGTH} "
                         f"characters (eval --length {LENGTH}): a row 'NAME len{LENGTH}' each")
    ap.add_argument("--chars", default="", metavar="SPEC",
                    help="draw every set's labels from these characters instead (a subset of "
                         "0-9a-z, e.g. 0-9), into sets of their own, and also score each "
                         "model (and ddddocr) reading only them (eval --charset): a row "
                         "'NAME SPEC' each")
    ap.add_argument("--plain", action="store_true",
                    help="also each foreign generator's captchas without its marks (lines, "
                         "curves, chips, dots, grain): sets NAME-plain")
    ap.add_argument("--together", action="append", default=[], metavar="NAME=RUN+RUN",
                    help="runs read as one, each at its views, the reading of the highest "
                         "mean probability over all their views kept (repeat)")
    ap.add_argument("--train", default="", metavar="RECIPE,…",
                    help=f"recipes to train and score: {', '.join(RECIPES)}")
    ap.add_argument("--budget", default="10m", help="--time-budget of each --train recipe")
    ap.add_argument("--steps", type=int, default=0, metavar="N",
                    help="--train recipes: N optimizer steps each instead of --budget (the same "
                         "training on any machine, however busy)")
    ap.add_argument("--shards", type=int, default=0, metavar="N",
                    help="--train recipes: render N train samples first and train on them "
                         "(0: on the fly)")
    ap.add_argument("--mix", default="", metavar="PRESET:SHARE[,…]",
                    help="--train recipes: presets mixed into each recipe (gen/train --mix)")
    a = ap.parse_args()
    chars = CHARS
    if a.chars:
        from captchalab.core.charset import parse_charset
        from captchalab.core.errors import UsageError

        try:
            chars = parse_charset(a.chars)
        except UsageError as e:
            sys.exit(f"error: --chars: {e}")
        if set(chars) - set(CHARS):
            sys.exit(f"error: --chars: '{a.chars}' has {''.join(sorted(set(chars) - set(CHARS)))!r}"
                     f"; give a subset of {CHARS}")
    models = dict(m.split("=", 1) for m in a.model)
    together = {}
    for spec in a.together:
        name, _, runs = spec.partition("=")
        if not name or not runs:
            sys.exit(f"error: --together {spec!r}: give NAME=RUN+RUN")
        together[name] = runs.split("+")
    recipes = [r for r in a.train.split(",") if r]
    for r in recipes:
        if r not in RECIPES:
            sys.exit(f"error: unknown recipe '{r}' (allowed: {', '.join(RECIPES)})")
    # the rows, named before anything runs: (row, model or recipe, --length, --charset) each
    base = [*models, *recipes]
    readers = [(m, m, None, None) for m in base]
    if a.known_length:
        readers += [(f"{m} len{LENGTH}", m, LENGTH, None) for m in base]
    if a.chars:
        readers += [(f"{m} {a.chars}", m, None, chars) for m in base]
    peers = [] if a.no_peer else ["ddddocr", *([f"ddddocr {a.chars}"] if a.chars else [])]
    rows = [r for r, *_ in readers] + list(together) + peers
    if a.against and a.against not in rows:
        sys.exit(f"error: --against: no row '{a.against}' (rows: {', '.join(rows)})")
    try:
        for mod in ("claptcha", "kaptcha", "multicolorcaptcha", "wheezy.captcha",
                    "flask_simple_captcha", "scipy", *(() if a.no_peer else ("ddddocr",))):
            __import__(mod)
    except ImportError as e:
        sys.exit(f"error: {e.name} is missing; the transfer bench needs its extra: {EXTRA}")

    sets_dir = a.sets or os.path.join(a.out, "sets")
    sets = {}
    plain = [f"{g}-plain" for g in FOREIGN] if a.plain else []
    for name in [*OWN, *FOREIGN, *plain]:
        folder = os.path.join(sets_dir, f"{name}-{a.samples}" + (f"-{chars}" if a.chars else ""))
        if not os.path.isdir(folder) or len(os.listdir(folder)) != a.samples:
            t = time.perf_counter()
            if name in OWN:
                own_set(name, a.samples, folder, chars)
            else:
                foreign_set(name.removesuffix("-plain"), a.samples, folder, chars=chars,
                            marks=name not in plain)
            print(f"rendered {name}: {a.samples} in {time.perf_counter() - t:.0f} s", flush=True)
        sets[name] = load_set(folder)

    gen_seconds = {}
    for r in recipes:
        models[r], gen_seconds[r] = train_recipe(r, a.out, a.budget, a.shards, a.mix, a.steps)

    import captchalab

    results, right = {}, {}  # right: {row: {set: [read right?]}}, for the paired comparison
    scales = [float(v) for v in a.scales.split(",")] if a.scales else None
    blurs = [float(v) for v in a.blurs.split(",")] if a.blurs else None
    for mname, model, length, read_chars in readers:
        rec = captchalab.load(models[model], scales, blurs, length, read_chars)
        t = time.perf_counter()
        preds = {s: [p.text for p in rec.predict(list(ims))] for s, (_, ims, _) in sets.items()}
        results[mname] = {s: score(sets[s][0], preds[s]) for s in sets}
        results[mname]["_seconds"] = time.perf_counter() - t
        right[mname] = {s: hits(sets[s][0], preds[s]) for s in sets}
    for tname, runs in together.items():
        recs = [captchalab.load(run, scales, blurs) for run in runs]
        t = time.perf_counter()
        preds = {s: read_together(recs, ims) for s, (_, ims, _) in sets.items()}
        results[tname] = {s: score(sets[s][0], preds[s]) for s in sets}
        results[tname]["_seconds"] = time.perf_counter() - t
        right[tname] = {s: hits(sets[s][0], preds[s]) for s in sets}
    if not a.no_peer:
        import ddddocr

        ocr = ddddocr.DdddOcr(show_ad=False)
        peer_reads = {"ddddocr": lambda p: ocr.classification(p).lower(),
                      f"ddddocr {a.chars}": lambda p: peer_in_charset(ocr, p, chars)}
        for pname in peers:
            read = peer_reads[pname]
            t = time.perf_counter()
            preds = {s: [read(p) for p in pngs] for s, (_, _, pngs) in sets.items()}
            results[pname] = {s: score(sets[s][0], preds[s]) for s in sets}
            results[pname]["_seconds"] = time.perf_counter() - t
            right[pname] = {s: hits(sets[s][0], preds[s]) for s in sets}

    names = list(sets)
    print(f"\nfull-sequence accuracy (95 % interval), {a.samples} captchas per set")
    print(f"{'model':18s}" + "".join(f"{n[:20]:>22s}" for n in names))
    for m, row in results.items():
        print(f"{m:18s}" + "".join(
            f"{row[n]['seq_acc']:8.3f} ({row[n]['seq_acc_ci95'][0]:.3f}-"
            f"{row[n]['seq_acc_ci95'][1]:.3f})" for n in names))
    first = a.against or next(iter(right), None)
    compared = {m: {s: paired(right[first][s], right[m][s]) for s in names}
                for m in right if m != first}
    if compared:
        print(f"\nagainst {first}, captcha by captcha: read by the row only / by {first} only "
              "(exact McNemar p)")
        print(f"{'model':18s}" + "".join(f"{n[:20]:>22s}" for n in names))
        for m, row in compared.items():
            print(f"{m:18s}" + "".join(
                f"{row[n]['better']:>7d} / {row[n]['worse']:<4d}"
                + (f"(p {row[n]['p']:.3f})" if row[n]["p"] >= 0.001 else "(p <.001)")
                for n in names))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "transfer.json"), "w") as f:
        json.dump({"samples": a.samples, "models": models, "together": together,
                   "budget": a.budget if recipes and not a.steps else None,
                   "steps": a.steps if recipes else None,
                   "shards": a.shards if recipes else None, "mix": a.mix or None,
                   "scales": a.scales or "each run's own", "blurs": a.blurs or "each run's own",
                   "known_length": LENGTH if a.known_length else None,
                   "chars": chars,
                   "gen_seconds": gen_seconds, "results": results,
                   "paired": {"against": first, "rows": compared}}, f, indent=2)
    plot(results, names, os.path.join(a.out, "transfer.png"))
    print(f"wrote {a.out}/transfer.json and transfer.png")
    if plain:
        plot_marks(results, list(FOREIGN), os.path.join(a.out, "marks.png"))
        print(f"wrote {a.out}/marks.png")
    parts = [m for m in results if m.startswith("universal-no-")]
    if "universal" in results and parts:
        plot_ablation(results, parts, names, os.path.join(a.out, "ablation.png"))
        print(f"wrote {a.out}/ablation.png")


def plot(results, names, path):
    """One panel per test set: each model's full-sequence accuracy with its 95 % interval."""
    from captchalab.core.plot import pyplot

    plt = pyplot()
    cols = 4
    rows = -(-len(names) // cols)
    models = list(results)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 0.35 * len(models) * rows + 1.6),
                             sharex=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    y = np.arange(len(models))
    for ax, n in zip(axes.flat, names, strict=False):
        acc = np.array([results[m][n]["seq_acc"] for m in models])
        # (clipped: the interval's ends can lie a rounding error inside the point)
        lo = np.maximum(0, acc - np.array([results[m][n]["seq_acc_ci95"][0] for m in models]))
        hi = np.maximum(0, np.array([results[m][n]["seq_acc_ci95"][1] for m in models]) - acc)
        ax.barh(y, acc, xerr=[lo, hi], capsize=2,
                color=[colours[k % len(colours)] for k in range(len(models))])
        for k, v in enumerate(acc):  # beside the bar, or inside it near the right edge
            inside = v + hi[k] > 0.84
            ax.text(v - lo[k] - 0.02 if inside else v + hi[k] + 0.02, k, f"{v:.3f}",
                    va="center", ha="right" if inside else "left", fontsize=7,
                    color="white" if inside else "black")
        ax.set_yticks(y, models if ax in axes[:, 0] else [""] * len(models), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(n, fontsize=9)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("full-sequence accuracy", fontsize=8)
    fig.suptitle("Reading captchas of other styles and generators (bars: 95 % intervals)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_marks(results, generators, path):
    """What each foreign generator's marks cost each model: its accuracy on the captchas
    without their marks (hollow) and with them (filled), joined per model."""
    from captchalab.core.plot import pyplot

    plt = pyplot()
    models = list(results)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(7.5, 0.3 * len(generators) * len(models) + 1.8))
    step = 0.7 / max(1, len(models))
    for k, m in enumerate(models):
        c = colours[k % len(colours)]
        for i, g in enumerate(generators):
            y = i + (k - (len(models) - 1) / 2) * step
            clean, marked = results[m][f"{g}-plain"]["seq_acc"], results[m][g]["seq_acc"]
            ax.plot([clean, marked], [y, y], color=c, lw=1.5)
            ax.plot(clean, y, "o", mfc="white", mec=c, ms=7)
            ax.plot(marked, y, "o", color=c, ms=7, label=m if i == 0 else None)
            ax.text(max(clean, marked) + 0.015, y, f"{marked:.2f} / {clean:.2f}", va="center",
                    fontsize=7)
    ax.set_yticks(range(len(generators)), generators, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("full-sequence accuracy: with the generator's marks (filled) / without (hollow)",
                  fontsize=8)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("What each generator's marks (lines, curves, chips, dots, grain) cost",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_ablation(results, parts, names, path):
    """What each part of the universal space buys: every universal-no-PART model's character
    accuracy minus universal's, in points, per test set (red: the part helped that set)."""
    from captchalab.core.plot import pyplot

    plt = pyplot()
    d = np.array([[100 * (results["universal"][n]["char_acc"] - results[p][n]["char_acc"])
                   for n in names] for p in parts])
    lim = max(1.0, float(np.abs(d).max()))
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.6, 0.5 * len(parts) + 1.9))
    im = ax.imshow(d, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for (i, j), v in np.ndenumerate(d):
        ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=8,
                color="white" if abs(v) > 0.6 * lim else "black")
    ax.set_xticks(range(len(names)), [n.replace("-", "\n", 1) for n in names], fontsize=7)
    ax.set_yticks(range(len(parts)), [p.removeprefix("universal-no-") for p in parts],
                  fontsize=8)
    ax.set_ylabel("part of the universal space", fontsize=8)
    fig.colorbar(im, ax=ax, label="points of character accuracy the part adds")
    ax.set_title("What each part buys: universal's character accuracy minus that without "
                 "the part", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
