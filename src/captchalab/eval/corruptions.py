"""Image corruptions at severities 1-5, in the manner of ImageNet-C (Hendrycks & Dietterich
2019), scaled for small captcha images. Pure numpy + Pillow; deterministic given the rng.

Each function maps uint8 RGB [H,W,3] -> uint8 RGB [H,W,3] of the same shape.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image, ImageFilter

from captchalab.core.errors import UsageError, suggest


def _f(x):
    return x.astype(np.float32) / 255.0


def _u8(x):
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _convolve(x, kernel):
    """Same-size 2-D convolution of [H,W,C] float with a small kernel (edge padding)."""
    kh, kw = kernel.shape
    pad = np.pad(x, ((kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), (0, 0)), mode="edge")
    out = np.zeros_like(x)
    h, w = x.shape[:2]
    for i in range(kh):
        for j in range(kw):
            if kernel[i, j]:
                out += kernel[i, j] * pad[i:i + h, j:j + w]
    return out


def gaussian_noise(img, s, rng):
    sigma = (0.04, 0.08, 0.12, 0.18, 0.26)[s - 1]
    return _u8(_f(img) + rng.normal(0, sigma, img.shape))


def shot_noise(img, s, rng):
    photons = (60, 25, 12, 5, 3)[s - 1]
    return _u8(rng.poisson(_f(img) * photons) / photons)


def impulse_noise(img, s, rng):
    amount = (0.01, 0.02, 0.04, 0.07, 0.12)[s - 1]
    out = img.copy()
    hit = rng.random(img.shape[:2]) < amount
    out[hit] = np.where(rng.random(int(hit.sum())) < 0.5, 0, 255)[:, None]
    return out


def defocus_blur(img, s, rng):
    r = (1.0, 1.5, 2.0, 2.5, 3.0)[s - 1]
    n = int(np.ceil(r))
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
    disk = (xx ** 2 + yy ** 2 <= r * r).astype(np.float32)
    return _u8(_convolve(_f(img), disk / disk.sum()))


def motion_blur(img, s, rng):
    length = (3, 5, 7, 9, 11)[s - 1]
    angle = rng.uniform(0, np.pi)
    k = np.zeros((length, length), np.float32)
    c = length // 2
    for t in np.linspace(-c, c, 4 * length):
        k[int(round(c + t * np.sin(angle))), int(round(c + t * np.cos(angle)))] = 1.0
    return _u8(_convolve(_f(img), k / k.sum()))


def gaussian_blur(img, s, rng):
    radius = (0.6, 1.0, 1.5, 2.0, 2.6)[s - 1]
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))


def jpeg(img, s, rng):
    quality = (30, 18, 10, 6, 3)[s - 1]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def pixelate(img, s, rng):
    factor = (0.7, 0.5, 0.4, 0.3, 0.22)[s - 1]
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((max(1, int(w * factor)), max(1, int(h * factor))),
                                        Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST))


def contrast(img, s, rng):
    c = (0.6, 0.45, 0.3, 0.2, 0.12)[s - 1]
    x = _f(img)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return _u8((x - mean) * c + mean)


def brightness(img, s, rng):
    shift = (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1]
    return _u8(_f(img) + shift)


def elastic(img, s, rng):
    """Smooth random displacement field (Gaussian-blurred noise), `alpha` px at most."""
    alpha = (1.5, 2.5, 3.5, 4.5, 6.0)[s - 1]
    h, w = img.shape[:2]
    field = rng.uniform(-1, 1, (h, w, 2)).astype(np.float32)
    g = np.exp(-0.5 * (np.arange(-8, 9) / 3.0) ** 2)
    kernel = np.outer(g, g)
    field = _convolve(field, (kernel / kernel.sum()).astype(np.float32))
    field *= alpha / max(1e-6, float(np.abs(field).max()))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y = np.clip(yy + field[..., 0], 0, h - 1)
    x = np.clip(xx + field[..., 1], 0, w - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    f = _f(img)
    out = ((1 - wy) * (1 - wx) * f[y0, x0] + (1 - wy) * wx * f[y0, x1]
           + wy * (1 - wx) * f[y1, x0] + wy * wx * f[y1, x1])
    return _u8(out)


def occlusion(img, s, rng):
    """One random grey rectangle covering a share of the image."""
    share = (0.04, 0.08, 0.12, 0.17, 0.23)[s - 1]
    h, w = img.shape[:2]
    rh = int(round(h * rng.uniform(0.5, 0.9)))
    rw = max(1, int(round(share * h * w / rh)))
    y, x = rng.integers(0, h - rh + 1), rng.integers(0, max(1, w - rw + 1))
    out = img.copy()
    out[y:y + rh, x:x + rw] = rng.integers(90, 170)
    return out


CORRUPTIONS = {f.__name__.replace("_", "-"): f for f in [
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, motion_blur, gaussian_blur,
    jpeg, pixelate, contrast, brightness, elastic, occlusion]}


def parse_corruptions(text: str) -> list[str]:
    """'all', 'none' or a comma list of names; unknown names are refused with a suggestion."""
    if text in ("", "none"):
        return []
    if text == "all":
        return list(CORRUPTIONS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    for n in names:
        if n not in CORRUPTIONS:
            raise UsageError(f"corruptions: unknown '{n}'{suggest(n, CORRUPTIONS)} "
                             f"(allowed: all, none, {', '.join(CORRUPTIONS)})", param="corruptions")
    return names


def parse_severities(text: str) -> list[int]:
    """'1-5', '3' or '1,3,5' -> sorted severities, each 1..5."""
    try:
        if "-" in text:
            lo, hi = (int(p) for p in text.split("-", 1))
            out = list(range(lo, hi + 1))
        else:
            out = [int(p) for p in text.split(",")]
    except ValueError:
        raise UsageError(f"severities: {text!r}; give 1-5, 3 or 1,3,5",
                         param="severities") from None
    if not out or any(not 1 <= s <= 5 for s in out):
        raise UsageError(f"severities: {text!r}; severities run from 1 to 5", param="severities")
    return sorted(set(out))


def corrupt(img: np.ndarray, name: str, severity: int, seed: int, index: int) -> np.ndarray:
    """Corruption `name` at `severity` of sample `index`: the same output on every run."""
    rng = np.random.default_rng([seed, index, zlib.crc32(name.encode()), severity])
    return CORRUPTIONS[name](img, severity, rng)
