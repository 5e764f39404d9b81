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
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

_LUMA = np.array([0.299, 0.587, 0.114])


def push_contrast(fg, bg, least: int) -> tuple[int, int, int]:
    """`fg` mixed towards white (on a dark background) or black (on a light one) until its
    luminance differs from `bg`'s by at least `least` (as far as white or black allow)."""
    out = push_contrast_array(np.asarray(fg, float)[None, None], bg, least)[0, 0]
    return tuple(int(c) for c in out.round())


def place_text(mask: np.ndarray, v: dict, size: tuple[int, int], extra=()):
    """The library's text mask (uint8 HxW) cropped to the text, tilted, sheared and waved,
    stretched to `aspect` times its width, then scaled by text_scale into the canvas at
    (text_x, text_y) (text larger than the canvas is cut by its edges); with `overflow`,
    enlarged (as far as the width fits, then only taller) until that share of its height
    falls past the top or bottom edge (text_y 0: the bottom is cut, 1: the top). Returns
    float32 HxW in [0, 1]. With `extra` layers (uint8 HxW: the glyph id layers,
    see glyph_ids) the same is done to each and (mask, *extra) is returned."""
    w, h = size
    im = Image.fromarray(mask)
    box = im.getbbox()
    if box is None:  # nothing drawn (cannot happen for a non-empty label; kept safe)
        out = np.zeros((h, w), np.float32)
        return (out, *(out.copy() for _ in extra)) if len(extra) else out
    layers = [im.crop(box), *(Image.fromarray(e).crop(box) for e in extra)]
    if v["shear"]:
        bw, bh = layers[0].size
        pad = int(abs(v["shear"]) * bh) + 1  # a wider canvas keeps the sheared text whole
        layers = [la.transform((bw + pad, bh), Image.Transform.AFFINE,
                               (1, v["shear"], -pad if v["shear"] > 0 else 0, 0, 1, 0),
                               Image.Resampling.BILINEAR) for la in layers]
    if v["tilt"]:
        layers = [la.rotate(v["tilt"], Image.Resampling.BILINEAR, expand=True) for la in layers]
    arrays = [np.asarray(la, np.float32) / 255.0 for la in layers]
    if v["wave"]:
        arrays = [_wave(a, v["wave"], v["wave_period"]) for a in arrays]
    bh, bw = arrays[0].shape
    bw = bw * v.get("aspect", 1.0)  # the block as stretched: fitted and resized to this width
    fit = min(w / bw, h / bh) * v["text_scale"]
    nw, nh = max(1, round(bw * fit)), max(1, round(bh * fit))
    if v["text_scale"] <= 1:  # as before text could be larger than the canvas
        nw, nh = min(w, nw), min(h, nh)
    if v.get("overflow", 0.0) > 0:  # larger, as far as the width allows, then only taller
        tall = round(h / (1 - v["overflow"]))
        if tall > nh:
            nw, nh = min(w, max(nw, round(nw * tall / nh))), tall
    x = int(round(v["text_x"] * (w - nw)))
    y = int(round(v["text_y"] * (h - nh)))
    outs = []
    for a in arrays:
        small = np.asarray(Image.fromarray(a).resize((nw, nh), Image.Resampling.BILINEAR))
        out = np.zeros((h, w), np.float32)
        x0, y0 = max(x, 0), max(y, 0)  # the part of the block inside the canvas
        x1, y1 = min(x + nw, w), min(y + nh, h)
        out[y0:y1, x0:x1] = np.clip(small[y0 - y:y1 - y, x0 - x:x1 - x], 0, 1)
        outs.append(out)
    return tuple(outs) if len(extra) else outs[0]


# Glyph ids: with glyph colours the library draws character k (0, 1, ...; blanks excluded) in
# ink (255, G, B) on black, G from GREEN_LEVELS and B from BLUE_LEVELS, so its coverage is the
# red channel and k is read back from the green/red and blue/red ratios, also after placement
# (all three scale alike). Levels lie far apart because the library's glyph edges come out with
# noisy colour; every ink keeps a luminance the library's mask lookup counts as fully drawn.
GREEN_LEVELS = (255, 175, 100)
BLUE_LEVELS = (255, 170, 85, 0)
MAX_GLYPHS = len(GREEN_LEVELS) * len(BLUE_LEVELS)  # characters this far apart share a colour


def glyph_ink(k: int) -> tuple[int, int, int]:
    """The colour character k (0-based) is drawn in when glyph ids are asked for."""
    g, b = divmod(k % MAX_GLYPHS, len(BLUE_LEVELS))
    return (255, GREEN_LEVELS[g], BLUE_LEVELS[b])


def glyph_ids(cover: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """Character index (mod MAX_GLYPHS) of every pixel from the placed coverage and id layers
    (0 where nothing is drawn)."""
    ids = np.zeros(cover.shape, np.intp)
    drawn = cover > 0.01
    c = cover[drawn]
    g = np.abs(green[drawn][:, None] / c[:, None] - _GREEN).argmin(-1)
    b = np.abs(blue[drawn][:, None] / c[:, None] - _BLUE).argmin(-1)
    ids[drawn] = g * len(BLUE_LEVELS) + b
    return ids


_GREEN, _BLUE = np.asarray(GREEN_LEVELS) / 255.0, np.asarray(BLUE_LEVELS) / 255.0


def stroke(layer: np.ndarray, px: int) -> np.ndarray:
    """Thicken (px > 0, a dilation) or thin (px < 0, an erosion) a uint8 layer by a square of
    2|px|+1 pixels."""
    if not px:
        return layer
    import cv2

    kernel = np.ones((2 * abs(px) + 1,) * 2, np.uint8)
    return (cv2.dilate if px > 0 else cv2.erode)(np.ascontiguousarray(layer), kernel)


def hollow(mask: np.ndarray, ids, share: float, looks: Looks) -> tuple:
    """Keep only the outline of the characters whose draw (looks.hollow, by glyph id) falls
    under `share`: their ink is scaled by 1 - (the mask eroded by a square of 2 px + 1, px 1
    to 3 from the last draw), so a stroke narrower than 2 px stays whole. The id layers are
    scaled alike, which keeps their ratios to the mask. uint8 (mask, *ids) in and out."""
    import cv2

    px = 1 + int(looks.hollow[-1] * 3)
    f = mask.astype(np.float32) / 255.0
    chosen = looks.hollow[:MAX_GLYPHS] < share
    picked = chosen[glyph_ids(f, ids[0] / 255.0, ids[1] / 255.0)] & (mask > 0)
    inner = cv2.erode(np.ascontiguousarray(mask), np.ones((2 * px + 1,) * 2, np.uint8))
    keep = np.where(picked, 1.0 - inner.astype(np.float32) / 255.0, 1.0)
    return tuple(np.round(a * keep).astype(np.uint8) for a in (mask, *ids))


def _wave(a: np.ndarray, amplitude: float, period: float) -> np.ndarray:
    """Shift each column down by amplitude * sin(2 pi x / period), padding the height."""
    pad = int(np.ceil(amplitude)) + 1
    h, w = a.shape
    out = np.zeros((h + 2 * pad, w), np.float32)
    shifts = np.round(amplitude * np.sin(2 * np.pi * np.arange(w) / period)).astype(int)
    rows = pad + shifts[None, :] + np.arange(h)[:, None]  # where each pixel of `a` lands
    out[rows, np.broadcast_to(np.arange(w), (h, w))] = a
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


def push_contrast_array(fill: np.ndarray, bg, least: int) -> np.ndarray:
    """push_contrast for every pixel of an HxWx3 float fill (without the rounding)."""
    lb = float(_LUMA @ np.asarray(bg, float))
    lf = fill @ _LUMA
    if lb < 128:  # L(t) = lf + t (255 - lf)
        target = min(255.0, lb + least)
        t = (target - lf) / np.maximum(255.0 - lf, 1e-6)
    else:  # L(t) = lf (1 - t)
        target = max(0.0, lb - least)
        t = 1.0 - target / np.maximum(lf, 1e-6)
    t = np.where(np.abs(lf - lb) >= least, 0.0, np.clip(t, 0.0, 1.0))[..., None]
    out = fill + t * (255.0 - fill) if lb < 128 else fill * (1.0 - t)
    return np.clip(out, 0, 255)


@dataclass(frozen=True)
class Looks:
    """The random draws of the character-colour, shape and clutter-colour knobs, from their own
    stream ('looks'): a fixed amount per sample, so they leave the scene's other draws alone."""

    glyphs: np.ndarray  # MAX_GLYPHS x 3: each character's own colour
    clutter: np.ndarray  # 3: the clutter's own colour
    shapes: np.ndarray  # MAX_SHAPES x 8 in [0, 1): kind, x, y, size, aspect, layer, angle, -
    shape_colours: np.ndarray  # MAX_SHAPES x 3
    scribbles: np.ndarray  # MAX_SCRIBBLES x 5 in [0, 1): x0, y0, x1, y1, width
    rings: np.ndarray  # MAX_RINGS x 5 in [0, 1): x, y, size, aspect, width
    hollow: np.ndarray  # MAX_GLYPHS + 1 in [0, 1): each character's draw, then the outline width
    bends: np.ndarray  # MAX_LINES x 2 in [0, 1): each struck line's two control point offsets

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Looks:
        # appended draws come last, so what the earlier fields draw never changes
        return cls(rng.integers(0, 256, (MAX_GLYPHS, 3)), rng.integers(0, 256, 3),
                   rng.random((MAX_SHAPES, 8)), rng.integers(0, 256, (MAX_SHAPES, 3)),
                   rng.random((MAX_SCRIBBLES, 5)), rng.random((MAX_RINGS, 5)),
                   rng.random(MAX_GLYPHS + 1), rng.random((MAX_LINES, 2)))


MAX_LINES = 10
MAX_SHAPES = 40
MAX_SCRIBBLES = 20
MAX_RINGS = 10


def clutter_colour(v: dict, fg, looks: Looks | None) -> tuple[int, int, int]:
    """The colour of lines, noise dots and arcs: fg blended towards the clutter's own colour."""
    t = v.get("clutter_colour", 0.0)
    if not t or looks is None:
        return tuple(int(c) for c in fg)
    c = np.asarray(fg, float) + t * (looks.clutter - np.asarray(fg, float))
    return tuple(int(x) for x in np.clip(c, 0, 255).round())


def draw_shapes(im: Image, v: dict, looks: Looks, layer: int) -> None:
    """Draw the sample's filled shapes of one layer (0 under the text, 1 over it) into `im`:
    rectangles, ellipses and triangles, up to a quarter of the height across."""
    w, h = im.size
    draw = ImageDraw.Draw(im)
    for (kind, x, y, size, aspect, over, angle, _), col in zip(
            looks.shapes[:v["shapes"]], looks.shape_colours, strict=False):
        if int(over < 0.5) == layer:  # half of them under the text, half over it
            continue
        ry = h * (0.03 + 0.12 * size)
        rx = ry * (0.4 + 1.6 * aspect)
        cx, cy, fill = x * w, y * h, tuple(int(c) for c in col)
        k = int(kind * 3)
        if k == 0:
            draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
        elif k == 1:
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
        else:
            a = angle * 2 * np.pi + np.array([0.0, 2.1, 4.2])
            draw.polygon(list(zip(cx + rx * np.cos(a), cy + ry * np.sin(a), strict=True)),
                         fill=fill)


def bent(a, b, offsets, points: int = 33) -> list[tuple[float, float]]:
    """A cubic curve from `a` to `b` as a polyline of `points` points: its inner control points
    lie a third and two thirds along the chord, moved down by `offsets` (px; negative: up)."""
    (ax, ay), (bx, by) = a, b
    c1 = (ax + (bx - ax) / 3, ay + (by - ay) / 3 + offsets[0])
    c2 = (ax + 2 * (bx - ax) / 3, ay + 2 * (by - ay) / 3 + offsets[1])
    t = np.linspace(0.0, 1.0, points)[:, None]
    p = ((1 - t) ** 3 * np.array(a) + 3 * (1 - t) ** 2 * t * np.array(c1)
         + 3 * (1 - t) * t ** 2 * np.array(c2) + t ** 3 * np.array(b))
    return [(float(x), float(y)) for x, y in p]


def draw_marks(im: Image, v: dict, looks: Looks, colour) -> None:
    """Draw the sample's scribbles (straight lines at any angle, ends anywhere up to a tenth
    past the edges) and rings (outlined ellipses anywhere, up to the height across) over
    everything, each 1 to line_width px wide, in `colour`."""
    w, h = im.size
    draw = ImageDraw.Draw(im)
    most = v["line_width"]
    for x0, y0, x1, y1, width in looks.scribbles[:v.get("scribble", 0)]:
        draw.line([(w * (1.2 * x0 - 0.1), h * (1.2 * y0 - 0.1)),
                   (w * (1.2 * x1 - 0.1), h * (1.2 * y1 - 0.1))],
                  fill=colour, width=1 + int(width * most))
    for x, y, size, aspect, width in looks.rings[:v.get("rings", 0)]:
        ry = h * (0.08 + 0.42 * size)
        rx = ry * (0.5 + 2.5 * aspect)
        draw.ellipse([w * x - rx, h * y - ry, w * x + rx, h * y + ry], outline=colour,
                     width=1 + int(width * most))


def text_fill(fg, fg2, gradient: float, size: tuple[int, int]) -> np.ndarray:
    """The text's colour at every pixel: fg blended towards fg2 from left to right."""
    w, h = size
    t = np.linspace(0, gradient, w, dtype=np.float32)[None, :, None]
    fg, fg2 = np.asarray(fg, np.float32), np.asarray(fg2, np.float32)
    return np.broadcast_to(fg + t * (fg2 - fg), (h, w, 3))


def scene(mask: np.ndarray, v: dict, rng: np.random.Generator, size: tuple[int, int],
          ids=(), looks: Looks | None = None) -> Image:
    """Compose one captcha: background, placed text, struck lines and grid. RGB PIL image.
    `ids`: the green and blue glyph id layers (needed for glyph_colour, see glyph_ids);
    `looks`: the draws of the knobs that have them (glyph_colour, shapes, clutter_colour,
    scribble, rings, hollow)."""
    w, h = size
    fg = push_contrast(v["fg"], v["bg"], v["min_contrast"])
    fg2 = push_contrast(v["fg2"], v["bg"], v["min_contrast"])
    img = background(v, rng, size)
    shapes = v.get("shapes", 0) and looks is not None
    if shapes:
        under = Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), "RGB")
        draw_shapes(under, v, looks, 0)
        img = np.asarray(under, np.float32)
    px = v.get("stroke", 0)
    mask, ids = stroke(mask, px), [stroke(i, px) for i in ids]
    if v.get("hollow", 0.0) and len(ids) and looks is not None:
        mask, *ids = hollow(mask, ids, v["hollow"], looks)
    placed = place_text(mask, v, size, ids)
    cover = placed[0] if len(ids) else placed
    alpha = cover[..., None] * (v["fg_alpha"] / 255.0)
    fill = text_fill(fg, fg2, v["gradient"], size)
    t = v.get("glyph_colour", 0.0)
    if t and len(ids) and looks is not None:
        own = looks.glyphs[glyph_ids(*placed)].astype(np.float32)  # each character's colour
        fill = push_contrast_array(fill + t * (own - fill), v["bg"], v["min_contrast"])
    img = img * (1 - alpha) + fill * alpha
    im = Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    grid, phase = v["grid"], rng.integers(0, 60, 2)
    if grid >= 8:
        mid = tuple(int(round((a + b) / 2)) for a, b in zip(fg, v["bg"], strict=True))
        for x in range(int(phase[0]) % grid, w, grid):
            draw.line([(x, 0), (x, h)], fill=mid, width=1)
        for y in range(int(phase[1]) % grid, h, grid):
            draw.line([(0, y), (w, y)], fill=mid, width=1)
    ends = rng.random((MAX_LINES, 4))
    line = clutter_colour(v, fg, looks)
    bend = v.get("line_bend", 0.0) if looks is not None else 0.0
    for i, (x0, y0, x1, y1) in enumerate(ends[:v["lines"]]):
        a, b = (x0 * w * 0.3, h * (0.2 + 0.6 * y0)), (w * (0.7 + 0.3 * x1), h * (0.2 + 0.6 * y1))
        if bend:
            draw.line(bent(a, b, (2 * looks.bends[i] - 1) * bend * h), fill=line,
                      width=v["line_width"], joint="curve")
        else:
            draw.line([a, b], fill=line, width=v["line_width"])
    if shapes:
        draw_shapes(im, v, looks, 1)
    if looks is not None and (v.get("scribble", 0) or v.get("rings", 0)):
        draw_marks(im, v, looks, line)
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
