"""Image files and bytes as 8-bit RGB, for every command that reads images from users."""

from __future__ import annotations

import io
import os
import stat

import numpy as np

from captchalab.core.errors import UsageError

MAX_PIXELS = 25_000_000  # larger images are refused from their header, before decoding
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def open_rgb(src, name: str | None = None):
    """A path or bytes -> PIL image in RGB. 16- and 32-bit grey pixels are scaled to 8 bits
    (a plain convert would clip them to white). One UsageError line naming the file for what
    cannot be read: not a regular file (a FIFO would block), not an image, or more than
    MAX_PIXELS pixels."""
    from PIL import Image, UnidentifiedImageError

    is_path = isinstance(src, (str, os.PathLike))
    name = name or (str(src) if is_path else "image")
    if is_path:
        try:
            mode = os.stat(src).st_mode
        except OSError as e:
            raise UsageError(f"{name}: cannot be read ({e.strerror})") from None
        if not stat.S_ISREG(mode):
            raise UsageError(f"{name}: not a regular file; give image files")
    else:
        src = io.BytesIO(bytes(src))
    try:
        with Image.open(src) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise UsageError(f"{name}: {w}x{h}, more than the {MAX_PIXELS:,} pixels this "
                                 "reads; captchas are small images")
            return _to_rgb(im)
    except Image.DecompressionBombError:  # Pillow refuses far larger ones at open
        raise UsageError(f"{name}: more than the {MAX_PIXELS:,} pixels this reads; captchas "
                         "are small images") from None
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UsageError(f"{name}: not a readable image ({e.__class__.__name__})") from None


def _to_rgb(im):
    from PIL import Image

    if im.mode in SIXTEEN_BIT or im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = a.max() if a.size else 0.0
        if im.mode == "F" and top <= 1.0:
            a = a * 255.0  # float pixels in [0, 1]
        elif im.mode in SIXTEEN_BIT or top > 255:
            a = a / 257.0  # 0..65535 -> 0..255 (a 32-bit container holding 8-bit values stays)
        return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")
