"""The scene around the library's glyphs: background, text colour and geometry, clutter, and
degradations, for styles that set a scene knob (style.SCENE_KNOBS).

The captcha library still draws every glyph (fonts, rotation, warp, spacing): it renders the
text white on black, and that image is the text's coverage mask. Everything here is drawn from
the sample's knob values (recorded in its record) and a numpy generator seeded from the sample
(for positions: lines, grid phase, texture, speckle, noise), so a sample is a pure function of
(seed, split, index) as before.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

_LUMA = np.array([0.299, 0.587, 0.114])


def push_contrast(fg, bg, least: int) -> tuple[int, int, int]:
    """`fg` mixed towards white (on a dark background) or black (on a light one) until its
    luminance differs from `bg`'s by at least `least` (as far as white or black allow)."""
    fg = np.asarray(fg, float)
    lf, lb = float(_LUMA @ fg), float(_LUMA @ np.asarray(bg, float))
    if abs(lf - lb) >= least:
        return tuple(int(c) for c in fg)
    if lb < 128:  # L(t) = lf + t (255 - lf)
        target = min(255.0, lb + least)
        t = (target - lf) / max(255.0 - lf, 1e-6)
        out = fg + min(max(t, 0.0), 1.0) * (255.0 - fg)
    else:  # L(t) = lf (1 - t)
        target = max(0.0, lb - least)
        t = 1.0 - target / max(lf, 1e-6)
        out = fg * (1.0 - min(max(t, 0.0), 1.0))
    return tuple(int(c) for c in np.clip(out, 0, 255).round())


def place_text(mask: np.ndarray, v: dict, size: tuple[int, int]) -> np.ndarray:
    """The library's text mask (uint8 HxW) cropped to the text, tilted, sheared and waved, then
    scaled by text_scale into the canvas at (text_x, text_y): float32 HxW in [0, 1]."""
    w, h = size
    im = Image.fromarray(mask)
    box = im.getbbox()
    if box is None:  # nothing drawn (cannot happen for a non-empty label; kept safe)
        return np.zeros((h, w), np.float32)
    im = im.crop(box)
    if v["shear"]:
        bw, bh = im.size
        pad = int(abs(v["shear"]) * bh) + 1  # a wider canvas keeps the sheared text whole
        im = im.transform((bw + pad, bh), Image.Transform.AFFINE,
                          (1, v["shear"], -pad if v["shear"] > 0 else 0, 0, 1, 0),
                          Image.Resampling.BILINEAR)
    if v["tilt"]:
        im = im.rotate(v["tilt"], Image.Resampling.BILINEAR, expand=True)
    a = np.asarray(im, np.float32) / 255.0
    if v["wave"]:
        a = _wave(a, v["wave"], v["wave_period"])
    bh, bw = a.shape
    fit = min(w / bw, h / bh) * v["text_scale"]
    nw, nh = max(1, min(w, round(bw * fit))), max(1, min(h, round(bh * fit)))
    small = np.asarray(Image.fromarray(a).resize((nw, nh), Image.Resampling.BILINEAR))
    x = int(round(v["text_x"] * (w - nw)))
    y = int(round(v["text_y"] * (h - nh)))
    out = np.zeros((h, w), np.float32)
    out[y:y + nh, x:x + nw] = np.clip(small, 0, 1)
    return out


def _wave(a: np.ndarray, amplitude: float, period: float) -> np.ndarray:
    """Shift each column down by amplitude * sin(2 pi x / period), padding the height."""
    pad = int(np.ceil(amplitude)) + 1
    h, w = a.shape
    out = np.zeros((h + 2 * pad, w), np.float32)
    shifts = np.round(amplitude * np.sin(2 * np.pi * np.arange(w) / period)).astype(int)
    for x, s in enumerate(shifts):
        out[pad + s:pad + s + h, x] = a[:, x]
    return out


def background(v: dict, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """bg blended towards bg2 along a random direction, plus texture and speckle: HxWx3 float."""
    w, h = size
    bg = np.asarray(v["bg"], np.float32)
    img = np.broadcast_to(bg, (h, w, 3)).copy()
    angle = rng.uniform(0, 2 * np.pi)
    if v["bg_gradient"]:
        yy, xx = np.mgrid[0:h, 0:w]
        t = (np.cos(angle) * xx / max(w - 1, 1) + np.sin(angle) * yy / max(h - 1, 1))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6) * v["bg_gradient"]
        img += t[..., None] * (np.asarray(v["bg2"], np.float32) - bg)
    cells = rng.normal(size=(4, 8, 3)).astype(np.float32)  # drawn always: fixed rng use
    if v["texture"]:
        smooth = np.stack([np.asarray(Image.fromarray(cells[..., c]).resize(
            (w, h), Image.Resampling.BICUBIC)) for c in range(3)], -1)
        img += smooth * 40 * v["texture"]
    spots = rng.random((h, w))
    colours = rng.integers(0, 256, (h, w, 3)).astype(np.float32)
    if v["speckle"]:
        hit = spots < v["speckle"]
        img[hit] = colours[hit]
    return img


def text_fill(fg, fg2, gradient: float, size: tuple[int, int]) -> np.ndarray:
    """The text's colour at every pixel: fg blended towards fg2 from left to right."""
    w, h = size
    t = np.linspace(0, gradient, w, dtype=np.float32)[None, :, None]
    fg, fg2 = np.asarray(fg, np.float32), np.asarray(fg2, np.float32)
    return np.broadcast_to(fg + t * (fg2 - fg), (h, w, 3))


def scene(mask: np.ndarray, v: dict, rng: np.random.Generator, size: tuple[int, int]) -> Image:
    """Compose one captcha: background, placed text, struck lines and grid. RGB PIL image."""
    w, h = size
    fg = push_contrast(v["fg"], v["bg"], v["min_contrast"])
    fg2 = push_contrast(v["fg2"], v["bg"], v["min_contrast"])
    img = background(v, rng, size)
    alpha = place_text(mask, v, size)[..., None] * (v["fg_alpha"] / 255.0)
    img = img * (1 - alpha) + text_fill(fg, fg2, v["gradient"], size) * alpha
    im = Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    grid, phase = v["grid"], rng.integers(0, 60, 2)
    if grid >= 8:
        mid = tuple(int(round((a + b) / 2)) for a, b in zip(fg, v["bg"], strict=True))
        for x in range(int(phase[0]) % grid, w, grid):
            draw.line([(x, 0), (x, h)], fill=mid, width=1)
        for y in range(int(phase[1]) % grid, h, grid):
            draw.line([(0, y), (w, y)], fill=mid, width=1)
    ends = rng.random((10, 4))
    for x0, y0, x1, y1 in ends[:v["lines"]]:
        draw.line([(x0 * w * 0.3, h * (0.2 + 0.6 * y0)), (w * (0.7 + 0.3 * x1), h * (0.2 + 0.6 * y1))],
                  fill=fg, width=v["line_width"])
    return im


def degrade(im: Image, v: dict, rng: np.random.Generator) -> Image:
    """Blur, down-and-up scaling, pixel noise and JPEG, in that order."""
    w, h = im.size
    if v["blur"] > 0:
        im = im.filter(ImageFilter.GaussianBlur(v["blur"]))
    if v["downscale"] > 1:
        small = (max(1, round(w / v["downscale"])), max(1, round(h / v["downscale"])))
        im = im.resize(small, Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR)
    noise = rng.normal(size=(h, w, 3))  # drawn always: fixed rng use
    if v["noise"] > 0:
        a = np.asarray(im, np.float32) + noise * v["noise"]
        im = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), "RGB")
    if v["jpeg"] >= 10:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(v["jpeg"]))
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return im
