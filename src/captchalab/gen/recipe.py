"""What to render: a user's request validated into the recipe stored in the manifest, and the
plan of shards it makes."""

from __future__ import annotations

import math
import os
import platform
import sys
from dataclasses import dataclass, fields
from typing import NamedTuple

from captchalab.core import __version__
from captchalab.core.charset import Charset
from captchalab.core.errors import UsageError
from captchalab.gen.render import SPLITS, label_space, split_pools
from captchalab.gen.style import Style

MAX_SAMPLES = 10**9  # per split: a larger count is a typo, and its shard plan would not fit
DEFAULT_SHARD_SIZE = 1000  # records per shard: ~5 MB at 160x60, enough files to interleave


@dataclass
class GenRequest:
    """What the user asked for, before validation."""

    charset: str = "0-9a-z"
    length: str = "4"  # "4" or "4-6"
    size: str = "160x60"  # WIDTHxHEIGHT, px
    style: Style = Style()
    style_name: str = "default"
    counts: dict | None = None  # split -> number of samples
    seed: int = 0
    shard_size: int = DEFAULT_SHARD_SIZE


def parse_length(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in str(text).split("-", 1)]
    except ValueError:
        raise UsageError(f"length: {text!r} is not a length like 4 or a range like 4-6",
                         param="length") from None
    lo, hi = parts[0], parts[-1]
    if lo <= 0:
        raise UsageError(f"length: {text!r}; lengths must be at least 1", param="length")
    if lo > hi:
        raise UsageError(f"length: {text!r} has min > max; write it as min-max, e.g. 4-6",
                         param="length")
    if hi > 64:
        raise UsageError(f"length: {text!r}; at most 64 characters are supported", param="length")
    return lo, hi


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(p) for p in str(text).lower().split("x"))
    except ValueError:
        raise UsageError(f"size: {text!r} is not WIDTHxHEIGHT in px, e.g. 160x60",
                         param="size") from None
    if not (8 <= w <= 4096 and 8 <= h <= 4096):
        raise UsageError(f"size: {text!r}; width and height must be 8..4096 px", param="size")
    return w, h


def check_text_fits(fonts, style: Style, size, length, chars: str) -> None:
    """Refuse sizes where glyphs would be clipped (too low) or squeezed >2x (too narrow)."""
    from PIL import ImageFont
    w, h = size
    tallest = widest_mean = 0.0
    for f in fonts:
        big = ImageFont.truetype(f.path, max(style.font_sizes))
        small = ImageFont.truetype(f.path, min(style.font_sizes))
        tallest = max(tallest, max(big.getbbox(c)[3] - big.getbbox(c)[1] for c in chars))
        mean_w = sum(small.getbbox(c)[2] - small.getbbox(c)[0] for c in chars) / len(chars)
        widest_mean = max(widest_mean, mean_w)
    if h < tallest:
        raise UsageError(
            f"size {w}x{h} is too small for the text: glyphs at font size {max(style.font_sizes)} "
            f"are up to {tallest:.0f} px tall; use a height >= {math.ceil(tallest)} or smaller --font-sizes",
                         param="size")
    need = math.ceil(length[1] * widest_mean / 2)
    if w < need:
        raise UsageError(
            f"size {w}x{h} is too small for the text: {length[1]} characters at font size "
            f"{min(style.font_sizes)} would be squeezed more than 2x; use a width >= {need}",
                         param="size")


@dataclass(frozen=True)
class Recipe:
    """A validated request: everything that decides every sample's pixels and label. The
    manifest stores it under the same keys (`to_json`), and `from_json` reads it back."""

    charset: dict  # Charset.to_json()
    length: tuple[int, int]  # min, max characters
    size: tuple[int, int]  # width, height in px
    style_name: str | None
    style: dict  # Style.to_json()
    fonts: tuple[dict, ...]  # FontSpec.to_json(): name, path, sha256, …
    seed: int
    shard_size: int
    counts: dict  # split -> samples, in SPLITS order
    kind: str = "image"  # or "audio": then size and fonts are unused, voices say what speaks
    voices: tuple[dict, ...] = ()  # audio: Voice.to_json(): name, path, chars, files, sha256

    def to_json(self) -> dict:
        if self.kind == "audio":
            return {"kind": "audio", "charset": self.charset, "length": list(self.length),
                    "style_name": self.style_name, "style": self.style,
                    "voices": list(self.voices), "seed": self.seed,
                    "shard_size": self.shard_size, "counts": dict(self.counts)}
        return {"charset": self.charset, "length": list(self.length), "size": list(self.size),
                "style_name": self.style_name, "style": self.style, "fonts": list(self.fonts),
                "seed": self.seed, "shard_size": self.shard_size, "counts": dict(self.counts)}

    @classmethod
    def from_json(cls, d: dict) -> Recipe:
        """From a manifest (or any dict with the recipe's keys)."""
        if d.get("kind") == "audio":
            return cls(d["charset"], tuple(d["length"]), (0, 0), d["style_name"], d["style"], (),
                       d["seed"], d["shard_size"], dict(d["counts"]), "audio",
                       tuple(d["voices"]))
        return cls(d["charset"], tuple(d["length"]), tuple(d["size"]), d["style_name"],
                   d["style"], tuple(d["fonts"]), d["seed"], d["shard_size"], dict(d["counts"]))


RECIPE_KEYS = tuple(f.name for f in fields(Recipe) if f.name not in ("kind", "voices"))
AUDIO_RECIPE_KEYS = ("kind", "charset", "length", "style_name", "style", "voices", "seed",
                     "shard_size", "counts")


def recipe_keys(m: dict) -> tuple[str, ...]:
    """The keys that hold the recipe in manifest `m` (by its kind)."""
    return AUDIO_RECIPE_KEYS if m.get("kind") == "audio" else RECIPE_KEYS


def check_counts(req: GenRequest) -> dict:
    counts = {s: n for s, n in (req.counts or {}).items() if n is not None}
    for split, n in counts.items():
        if n > MAX_SAMPLES:
            raise UsageError(f"--{split}: {n}; at most {MAX_SAMPLES:,} samples per split")
        if n <= 0:
            raise UsageError(f"--{split}: {n}; a split count must be a positive number of samples "
                             "(leave the option out to skip the split)")
    if not counts:
        raise UsageError("no samples asked for; give --train N, --val N and/or --test N")
    if req.shard_size <= 0:
        raise UsageError(f"shard_size: {req.shard_size}; must be a positive number of records",
                         param="shard_size")
    if req.seed < 0 or req.seed >= 2**63:
        raise UsageError(f"seed: {req.seed}; must be between 0 and 2^63-1", param="seed")
    return counts


def check_label_space(chars: str, length, seed: int, counts: dict, length_text: str,
                      warn) -> None:
    pools, exact = split_pools(chars, length, seed)
    space = label_space(chars, length)
    for split, n in counts.items():
        if pools[split] == 0:
            raise UsageError(
                f"the label space is too small for the splits: charset {chars!r} with "
                f"length {length_text} has {space} labels and none falls in {split}'s share "
                "(labels are kept disjoint across splits); use a longer length or a larger charset")
        if n > pools[split]:
            warn(f"note: {split} asks for {n} samples but its share of the label space holds "
                 f"{'' if exact else 'about '}{pools[split]} distinct labels; labels repeat "
                 "within the split (never across splits)")


def build_audio_recipe(req: GenRequest, style, voices, warn=None) -> Recipe:
    """An audio recipe: `style` an AudioStyle, `voices` voice folder specs (builtin or paths)."""
    from captchalab.gen.audio import resolve_voices

    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    charset = Charset.parse(req.charset)
    length = parse_length(req.length)
    counts = check_counts(req)
    found = resolve_voices(voices, charset.chars)
    check_label_space(charset.chars, length, req.seed, counts, req.length, warn)
    return Recipe(charset.to_json(), length, (0, 0), req.style_name, style.to_json(), (),
                  req.seed, req.shard_size, {s: counts[s] for s in SPLITS if s in counts},
                  "audio", tuple(v.to_json() for v in found))


def build_recipe(req: GenRequest, warn=None) -> Recipe:
    """Validate a request and resolve it into the recipe stored in the manifest.

    Nothing is written. Raises UsageError on the first invalid value.
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    charset = Charset.parse(req.charset)
    length = parse_length(req.length)
    size = parse_size(req.size)
    counts = check_counts(req)
    fonts = style_fonts(req.style, charset.chars, size, length, "train" in counts)
    check_label_space(charset.chars, length, req.seed, counts, req.length, warn)
    return Recipe(charset.to_json(), length, size, req.style_name, req.style.to_json(),
                  tuple(fonts), req.seed, req.shard_size,
                  {s: counts[s] for s in SPLITS if s in counts})


def style_fonts(style: Style, chars: str, size, length, training: bool) -> list[dict]:
    """The font files of `style`, then those of each mixed-in style marked "mix" (true for the
    first, its number for the others: manifests of one mix read as before), checked: no
    held-out family in `training` data, text that fits `size` unless a scene scales it."""
    from captchalab.gen.fonts import HELD_OUT, held_out_paths, resolve_fonts

    held = held_out_paths()
    fonts = []
    for mixed, st in enumerate([style, *style.mixes]):
        found = resolve_fonts(st.fonts, chars)
        if training and any(f.path in held for f in found):
            names = sorted({os.path.basename(f.path) for f in found if f.path in held})
            raise UsageError(
                f"fonts: {', '.join(names)} belong to the held-out families "
                f"({', '.join(HELD_OUT)}), which no training data may use; render them into "
                "--val/--test sets only", param="fonts")
        if not st.composed:  # a scene scales the text to fit the canvas
            check_text_fits(found, st, size, length, chars)
        mark = {"mix": True if mixed == 1 else mixed} if mixed else {}
        fonts += [{**f.to_json(), **mark} for f in found]
    return fonts


def restyle(recipe: Recipe, style: Style) -> Recipe:
    """`recipe` rendering `style` instead, its fonts resolved and checked for training."""
    import dataclasses

    fonts = style_fonts(style, Charset.from_json(recipe.charset).chars, recipe.size,
                        recipe.length, training=True)
    return dataclasses.replace(recipe, style=style.to_json(), fonts=tuple(fonts))


class ShardTask(NamedTuple):
    """One shard to render: samples [start, stop) of `split` into shard `index` of `count`."""

    split: str
    index: int
    count: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_shards(recipe: Recipe) -> list[ShardTask]:
    """Every shard of the dataset, split by split."""
    out = []
    ss = recipe.shard_size
    for split, count in recipe.counts.items():
        n = math.ceil(count / ss)
        out.extend(ShardTask(split, i, n, i * ss, min(count, (i + 1) * ss)) for i in range(n))
    return out


def versions() -> dict:
    import importlib.metadata as md

    import cv2
    import numpy
    import PIL
    from PIL import features

    return {
        "captchalab": __version__,
        "captcha": md.version("captcha"),
        "pillow": PIL.__version__,
        "freetype": features.version("freetype2"),
        "opencv": cv2.__version__,  # PNG encoding (its wheel bundles libpng and zlib)
        "numpy": numpy.__version__,
        "protobuf": md.version("protobuf"),
        "python": platform.python_version(),
    }
