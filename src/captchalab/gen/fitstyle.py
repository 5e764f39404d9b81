"""`captchalab fit-style FOLDER`: a style file whose renderings resemble a folder of captchas.

Each image is measured with simple statistics that a style knob controls: background and text
colours (border pixels; pixels far from the background), the text block's size and place, pixel
noise, sharpness, small specks, stroke width and the span of the widest connected piece of ink.
The knobs are set to the ranges those measurements span, then text size, blur, stroke width and
strike-through lines are matched by rendering: the text block is scaled until rendered text is
as wide and tall as the real text (the library's arcs and dots belong to the block it places,
so the scale cannot be read off directly), the blur is the one whose renderings are as sharp as
the real images, the gaps between characters the ones whose text block is as wide for its
height (the library's random blank glyphs, or even gaps of 0 to 0.8 of a character's width),
the stroke knob the one whose strokes are as wide (twice the ink's area over
its perimeter, relative to the text's height), and the number of lines struck through the text
the one whose renderings' widest piece of ink spans as much of the text as the real images'
(a line joins the glyphs it crosses into one piece as wide as the text; glyphs that touch join
too, which the rendering with the same fonts and spacing accounts for). What it cannot measure
(the shape of lines and arcs, glyph rotation) is reported; struck lines are drawn over a range
of shapes, from straight to bowed (`line_bend`), rather than guessed.

The font is matched, not measured (`match_fonts`): each candidate family renders the fitted
style, and the families whose renderings are nearest the real images in the shipped model's
features are kept. The features are the mean and spread over positions of its first sequence
layer (`Recognizer.features`): a model trained to read many fonts still encodes each font's
shapes there, and averaged over a set they no longer depend on which characters were drawn.
Rendered as a candidate, a family of the pool ranks first against captchas made with it.

The similarity figure is a standardised mean difference (Cohen's d) over the same statistics:
for each one, |mean(real) - mean(rendered)| / pooled sd, averaged. It is cheap, needs no trained network, and
each term says which property differs; 0 is a perfect match of the averages, and about 1 means
the sets differ by a typical image-to-image spread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from captchalab.core.errors import UsageError
from captchalab.core.plot import pyplot
from captchalab.gen.folders import IMAGE_EXTS

STATS = ("bg_luma", "fg_luma", "contrast", "text_w", "text_h", "text_x", "text_y", "noise",
         "sharpness", "specks", "ink", "stroke", "span")
STROKES = (-2, -1, 0, 1, 2, 3)  # stroke knob values tried when matching the stroke width
BLURS = (0.0, 0.4, 0.8, 1.2, 1.6, 2.2)  # blur sigmas tried when matching the sharpness
UNFITTED = ("the shape of lines and arcs (struck lines are drawn from straight to bowed)",
            "glyph rotation and warping")
LINES = (0, 1, 2)  # strike-through line counts tried when matching the span
LINE_BEND = [0.0, 0.5]  # struck lines' bend, drawn over a range: their shape is not measured
# gaps between characters tried when matching the text's aspect: the library's (a blank glyph
# before a character at random), or none but `spacing` (a fraction of each character's width)
GAPS = ({}, *({"space_prob": [0.0, 0.0], "spacing": [g, g]} for g in (0.0, 0.15, 0.3, 0.5, 0.8)))
# the font families match_fonts chooses from (the held-out ones are never among them)
BASE_FAMILIES = ("builtin", "dejavu-sans", "dejavu-serif", "dejavu-mono", "stix")


def image_paths(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise UsageError(f"{folder} is not a folder; give a folder of captcha images",
                         param="folder")
    paths = sorted(os.path.join(root, n) for root, _, names in os.walk(folder) for n in names
                   if n.lower().endswith(IMAGE_EXTS))
    if not paths:
        raise UsageError(f"{folder} holds no images ({', '.join(IMAGE_EXTS)})", param="folder")
    return paths


def load_images(paths: list[str]) -> list[np.ndarray]:
    """uint8 RGB arrays, all of one size (else refused, counting the sizes found)."""
    from captchalab.core.images import open_rgb

    images = [np.asarray(open_rgb(p)) for p in paths]
    sizes: dict[tuple[int, int], int] = {}
    for a in images:
        sizes[(a.shape[1], a.shape[0])] = sizes.get((a.shape[1], a.shape[0]), 0) + 1
    if len(sizes) > 1:
        found = ", ".join(f"{n} at {w}x{h}" for (w, h), n in sorted(sizes.items(),
                                                                      key=lambda kv: -kv[1]))
        raise UsageError(f"images of mixed sizes ({found}); fit-style needs one size: move the "
                         "others out, or resize them first", param="folder")
    return images


def _luma(rgb) -> np.ndarray:
    return np.asarray(rgb, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def measure(a: np.ndarray) -> dict:
    """The statistics of one uint8 RGB image (see the module docstring)."""
    import cv2

    h, w, _ = a.shape
    f = a.astype(np.float32)
    border = np.concatenate([f[:2].reshape(-1, 3), f[-2:].reshape(-1, 3),
                             f[:, :2].reshape(-1, 3), f[:, -2:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    dist = np.linalg.norm(f - bg, axis=-1)
    d8 = np.clip(dist / max(float(dist.max()), 1.0) * 255, 0, 255).astype(np.uint8)
    thr, _ = cv2.threshold(d8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = d8 > max(thr, 40 * 255 / max(float(dist.max()), 1.0))  # at least 40 levels apart
    if mask.sum() < 10:
        mask = d8 >= np.percentile(d8, 90)
    fg = np.median(f[mask], axis=0)
    n, labels, st, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    small = [i for i in range(1, n) if st[i, cv2.CC_STAT_AREA] <= 12]
    text = mask.copy()
    for i in small:
        text[labels == i] = False
    ys, xs = np.nonzero(text if text.any() else mask)
    x0, x1 = np.percentile(xs, [2, 98])
    y0, y1 = np.percentile(ys, [3, 97])
    tw, th = (x1 - x0 + 1) / w, (y1 - y0 + 1) / h
    grey = _luma(a)
    resid = grey - cv2.medianBlur(grey.astype(np.uint8), 3).astype(np.float32)
    quiet = ~cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    noise = float(np.std(resid[quiet])) if quiet.sum() > 50 else 0.0
    contrast = abs(float(_luma(fg) - _luma(bg)))
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
    sharp = float(np.percentile(lap[mask], 90)) / max(contrast, 1.0) if mask.any() else 0.0
    # stroke width ~ 2 area / perimeter of the text's ink, as a fraction of the text's height
    contours, _ = cv2.findContours(text.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    stroke_w = 2 * float(text.sum()) / max(perimeter, 1.0) / max(th * h, 1.0)
    # the widest 8-connected piece of the text's ink, as a fraction of the text's width
    n2, _, st2, _ = cv2.connectedComponentsWithStats(text.astype(np.uint8), connectivity=8)
    widest = max((int(st2[i, cv2.CC_STAT_WIDTH]) for i in range(1, n2)), default=0)
    return {"bg": bg, "fg": fg, "bg_luma": float(_luma(bg)), "fg_luma": float(_luma(fg)),
            "contrast": contrast, "text_w": tw, "text_h": th,
            "text_x": x0 / max(w - (x1 - x0 + 1), 1), "text_y": y0 / max(h - (y1 - y0 + 1), 1),
            "noise": noise, "sharpness": sharp, "specks": float(len(small)),
            "ink": float(mask.mean()), "stroke": stroke_w,
            "span": min(widest / max(x1 - x0 + 1, 1.0), 1.0)}


def _span(values, lo_q=10, hi_q=90, lo=None, hi=None, digits=2):
    v = np.percentile(np.asarray(values, np.float64), [lo_q, hi_q])
    if lo is not None:
        v = np.maximum(v, lo)
    if hi is not None:
        v = np.minimum(v, hi)
    return [round(float(v[0]), digits), round(float(v[1]), digits)]


def fit_knobs(stats: list[dict], size: tuple[int, int]) -> dict:
    """Style keys spanning what `stats` measured (blur left at 0: see choose_blur)."""
    w, h = size

    def colour(key):
        """A channel range centred on the median luminance, as wide as the channels spread
        (channels are drawn independently in one range: the hue is not fitted, the grey
        level the model sees is)."""
        rgb = np.array([s[key] for s in stats])
        lo, hi = np.percentile(rgb.ravel(), [5, 95])
        mid, half = float(np.median(_luma(rgb))), max((hi - lo) / 2, 8.0)
        mid = min(max(mid, half), 255 - half)
        return [int(round(mid - half)), int(round(mid + half))]

    scale = [max(s["text_w"], s["text_h"]) for s in stats]
    noise = _span([s["noise"] for s in stats], lo=0, hi=60, digits=1)
    specks = [s["specks"] for s in stats]
    return {
        "preset": "default",
        "size": f"{w}x{h}",
        "fonts": list(BASE_FAMILIES) + ["pool"],
        "bg": colour("bg"),
        "fg": colour("fg"),
        "min_contrast": int(max(0, np.percentile([s["contrast"] for s in stats], 10) - 10)),
        "text_scale": _span(scale, lo=0.2, hi=1),
        "text_x": _span([s["text_x"] for s in stats], lo=0, hi=1),
        "text_y": _span([s["text_y"] for s in stats], lo=0, hi=1),
        "noise_dots": [int(v) for v in _span(specks, lo=0, hi=10000, digits=0)],
        "noise_dot_width": [1, 2],
        "noise_curves": [0, 1],
        "tilt": [-5.0, 5.0],
        "noise": noise,
        "blur": 0.0,
    }


def distance(real: list[dict], rendered: list[dict]) -> dict:
    """Standardised mean difference per statistic, and their mean under "mean"."""
    out = {}
    for k in STATS:
        r = np.array([s[k] for s in real])
        g = np.array([s[k] for s in rendered])
        sd = float(np.sqrt((r.var() + g.var()) / 2)) or max(abs(float(r.mean())) * 0.1, 1e-3)
        out[k] = round(abs(float(r.mean()) - float(g.mean())) / sd, 3)
    out["mean"] = round(float(np.mean([out[k] for k in STATS])), 3)
    return out


def render_style(keys: dict, count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` images of the style in `keys` (a style file's table), rendered in-process."""
    from captchalab.gen.stream import stream_recipe, stream_samples
    from captchalab.gen.style import resolve_style

    table = {k: v for k, v in keys.items() if k not in ("preset", "size")}
    style = resolve_style(keys.get("preset", "default"), None, table)
    recipe = stream_recipe(size=keys["size"], style=style, seed=seed)
    return [img for img, _ in stream_samples(recipe, "train", 0, workers=0, stop=count)]


def match_scale(keys: dict, real: list[dict], count: int, rounds: int = 2) -> list[float]:
    """text_scale rescaled until the rendered text's size (the larger of its width and height
    fractions, median) matches the real images'."""
    target = float(np.median([max(s["text_w"], s["text_h"]) for s in real]))
    scale = list(keys["text_scale"])
    for _ in range(rounds):
        imgs = render_style({**keys, "text_scale": scale}, count)
        got = float(np.median([max(m["text_w"], m["text_h"]) for m in map(measure, imgs)]))
        k = target / max(got, 1e-3)
        scale = [round(float(np.clip(v * k, 0.2, 1.0)), 2) for v in scale]
    return scale


def choose_blur(keys: dict, real: list[dict], count: int) -> dict:
    """{"smooth", "blur"}: the library's smoothing off, or on with a blur from BLURS, whichever
    renders closest to the real images' sharpness."""
    target = float(np.median([s["sharpness"] for s in real]))
    best, gap = {}, float("inf")
    for cand in [{"smooth": False, "blur": 0.0}] + [{"smooth": True, "blur": b} for b in BLURS]:
        imgs = render_style({**keys, **cand}, count)
        got = float(np.median([measure(a)["sharpness"] for a in imgs]))
        if abs(got - target) < gap:
            best, gap = cand, abs(got - target)
    return best


def candidate_families() -> list[str]:
    from captchalab.gen import fonts

    return [*BASE_FAMILIES, *(f for f in fonts.families() if f not in fonts.HELD_OUT)]


def match_fonts(keys: dict, real_images: list[np.ndarray], count: int, keep: int, features,
                candidates: list[str] | None = None) -> list[tuple[str, float]]:
    """The `keep` candidate families whose renderings of the style in `keys` are nearest the
    real images: (family, distance) nearest first. `features`: images -> (n, d) array (the
    shipped model's `Recognizer.features`). The distance is the root mean square over features
    of the difference of the two sets' means, each feature in units of its standard deviation
    over all images scored."""
    candidates = candidates or candidate_families()
    real = features(real_images)
    rendered = {c: features(render_style({**keys, "fonts": [c]}, count, seed=2))
                for c in candidates}
    sd = np.concatenate([real, *rendered.values()]).std(axis=0) + 1e-6
    dist = {c: float(np.sqrt(np.mean(((real.mean(0) - r.mean(0)) / sd) ** 2)))
            for c, r in rendered.items()}
    return [(c, round(dist[c], 3)) for c in sorted(dist, key=dist.get)[:keep]]


def _aspect(s: dict, size: tuple[int, int]) -> float:
    return s["text_w"] * size[0] / max(s["text_h"] * size[1], 1.0)


def choose_gaps(keys: dict, real: list[dict], count: int) -> dict:
    """The gaps between characters from GAPS whose renderings' text block is as wide for its
    height (median) as the real images': evenly spaced, tight, or the library's random blanks.
    Keys to add to the style ({} for the library's)."""
    from captchalab.gen.recipe import parse_size

    size = parse_size(keys["size"])
    target = float(np.median([_aspect(s, size) for s in real]))
    misses = []
    for cand in GAPS:
        imgs = render_style({**keys, **cand}, count)
        got = float(np.median([_aspect(measure(a), size) for a in imgs]))
        misses.append(abs(np.log(got / target)))
    return dict(GAPS[int(np.argmin(misses))])


def choose_stroke(keys: dict, real: list[dict], count: int) -> list[int]:
    """The stroke knob (as a one-value range) from STROKES whose renderings' stroke width
    (measure's "stroke", median) is nearest the real images'."""
    target = float(np.median([s["stroke"] for s in real]))
    gaps = {}
    for px in STROKES:
        imgs = render_style({**keys, "stroke": [px, px]}, count)
        gaps[px] = abs(float(np.median([measure(a)["stroke"] for a in imgs])) - target)
    best = min(gaps, key=gaps.get)
    return [best, best]


def choose_lines(keys: dict, real: list[dict], count: int) -> dict:
    """{"lines", "line_width"}: the count from LINES (as a one-value range) whose renderings'
    mean span (measure's "span") is nearest the real images' (the fewest within 0.01 of the
    nearest: one line already joins the text into one piece, so the span tells whether there
    are lines more than how many), drawn 1 px to as wide as the real strokes (the stroke
    statistic times the text's height, at most 4 px): a site's lines are often thinner than its
    glyphs' strokes."""
    target = float(np.mean([s["span"] for s in real]))
    h = int(str(keys["size"]).split("x")[1])
    px = float(np.median([s["stroke"] * s["text_h"] for s in real])) * h
    width = int(np.clip(round(px), 1, 4))
    gaps = {}
    for k in LINES:
        imgs = render_style({**keys, "lines": [k, k], "line_width": [1, width]}, count)
        gaps[k] = abs(float(np.mean([measure(a)["span"] for a in imgs])) - target)
    best = min(k for k in LINES if gaps[k] <= min(gaps.values()) + 0.01)
    return {"lines": [best, best], "line_width": [1, width],
            **({"line_bend": LINE_BEND} if best else {})}


@dataclass
class Fit:
    keys: dict  # the style file's table
    distance: dict  # real vs rendered with the fitted style
    baseline: dict  # real vs the library's default style at the same size
    count: int  # images measured
    real: list  # a few real images, for the sheet
    rendered: list  # as many rendered ones
    fonts: list  # [(family, distance)] that match_fonts kept; [] when not matched


def fit_style(folder: str, fonts: str | None = None, samples: int = 200,
              match: int = 0, features=None) -> Fit:
    """The fitted style of the images in `folder`. `fonts`: the site's font file or folder
    (nothing matched); else the `match` families nearest the images in `features` (see
    match_fonts; 0: every candidate)."""
    paths = image_paths(folder)
    images = load_images(paths)
    h, w = images[0].shape[:2]
    real = [measure(a) for a in images]
    keys = fit_knobs(real, (w, h))
    if fonts:
        keys["fonts"] = [fonts]
    probe = min(samples, 60)
    keys["text_scale"] = match_scale(keys, real, probe)
    keys.update(choose_blur(keys, real, probe))
    matched = []
    if not fonts and match:
        matched = match_fonts(keys, images[:200], probe, match, features)
        keys["fonts"] = [f for f, _ in matched]
    keys.update(choose_gaps(keys, real, probe))  # after the fonts: their widths count
    keys["text_scale"] = match_scale(keys, real, probe)  # and the size again, with the gaps
    keys["stroke"] = choose_stroke(keys, real, probe)  # after the fonts: their weight counts
    keys.update(choose_lines(keys, real, probe))  # after fonts and stroke: glyphs touch or not
    # again: fonts, stroke and lines change how sharp renderings look (wheezy.captcha's blurred
    # captchas were fitted unsmoothed, their sharpness the largest difference left)
    keys.update(choose_blur(keys, real, probe))
    rendered = render_style(keys, samples, seed=1)
    default = render_style({"preset": "default", "size": f"{w}x{h}"}, samples, seed=1)
    return Fit(keys, distance(real, [measure(a) for a in rendered]),
               distance(real, [measure(a) for a in default]), len(images), images[:8],
               rendered[:8], matched)


def to_toml(keys: dict, header: str) -> str:
    """A flat TOML table (strings, numbers and lists of them), `header` as comments."""
    import json

    lines = [f"# {line}" for line in header.splitlines()]
    for k, v in keys.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def contact_sheet(fit: Fit, out: str) -> None:
    """Real images (left) beside renderings of the fitted style (right), one pair per row."""
    plt = pyplot()
    n = max(len(fit.real), 1)
    h, w = fit.real[0].shape[:2]
    fig, axes = plt.subplots(n, 2, figsize=(2 * w / 50, n * (h / 50 + 0.25)), squeeze=False)
    for i in range(n):
        for j, (imgs, title) in enumerate(((fit.real, "real"), (fit.rendered, "rendered"))):
            ax = axes[i, j]
            ax.axis("off")
            if i < len(imgs):
                ax.imshow(imgs[i])
            if i == 0:
                ax.set_title(title, fontsize=10)
    fig.suptitle(f"fitted style: distance {fit.distance['mean']:.2f} "
                 f"(library default {fit.baseline['mean']:.2f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
