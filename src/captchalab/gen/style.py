"""Style: every rendering knob of the captcha library, as fixed values or per-sample ranges."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field

from captchalab.core.errors import UsageError, suggest


@dataclass(frozen=True)
class Knob:
    """One numeric knob: how it is parsed, its allowed bounds, and what it means."""

    name: str
    kind: type  # int or float
    lo: float  # smallest allowed value
    hi: float  # largest allowed value
    help: str
    per_channel: int = 0  # colour knobs: the range is drawn independently for this many channels
    scene: bool = False  # drawn by captchalab around the library's glyphs (compose.py)


# Library defaults (captcha 0.7.1 ImageCaptcha) are the `default` preset. Each knob is a range
# (lo, hi); lo == hi is a fixed value. A range is drawn once per sample (per channel for colours).
KNOBS: dict[str, Knob] = {k.name: k for k in [
    Knob("rotate", float, 0, 180,
         "max character rotation, degrees; the library rotates each character within +-value"),
    Knob("warp_dx", float, 0, 1,
         "horizontal warp as a fraction of glyph width; library range (value/3, value)"),
    Knob("warp_dy", float, 0, 1,
         "vertical warp as a fraction of glyph height; library range (2*value/3, value)"),
    Knob("offset_dx", int, 0, 50, "max horizontal jitter of a glyph in its box, px"),
    Knob("offset_dy", int, 0, 50, "max vertical jitter of a glyph in its box, px"),
    Knob("space_prob", float, 0, 1,
         "probability of a blank glyph before each character (library: 1 - word_space_probability)"),
    Knob("word_offset", float, 0, 1,
         "max overlap of neighbouring characters, fraction of the mean glyph width"),
    Knob("noise_dots", int, 0, 10000, "number of noise dots"),
    Knob("noise_dot_width", int, 1, 20, "width of each noise dot, px"),
    Knob("noise_curves", int, 0, 50, "number of noise arcs"),
    Knob("bg", int, 0, 255, "background colour, per RGB channel (0-255)", per_channel=3),
    Knob("fg", int, 0, 255, "text and noise colour, per RGB channel (0-255)", per_channel=3),
    Knob("fg_alpha", int, 0, 255, "text opacity (0-255)", per_channel=1),
    # The scene: captchalab takes the library's glyphs as a mask and composes the image around
    # them (compose.py). Only styles that change one of these from its default use it; others
    # render exactly as the library does.
    *[Knob(*k, scene=True) for k in [
        ("text_scale", float, 0.2, 1.5,
         "size of the text block, fraction of the largest that fits (over 1: cut by the edges)"),
        ("text_x", float, 0, 1, "horizontal place of the text block: 0 left .. 1 right"),
        ("text_y", float, 0, 1, "vertical place of the text block: 0 top .. 1 bottom"),
        ("tilt", float, -45, 45, "rotation of the whole text, degrees (signed range: -10-10)"),
        ("shear", float, -0.8, 0.8, "horizontal shear of the text, dx per px of height"),
        ("wave", float, 0, 20, "amplitude of a sine wave along the baseline, px"),
        ("wave_period", float, 10, 400, "period of that wave, px"),
        ("min_contrast", int, 0, 255,
         "least luminance difference of text and background; text colours closer are pushed away"),
        ("gradient", float, 0, 1, "blend of the text colour towards fg2 from left to right"),
        ("fg2", int, 0, 255, "second text colour, per RGB channel", 3),
        ("bg_gradient", float, 0, 1, "blend of the background towards bg2 across the image"),
        ("bg2", int, 0, 255, "second background colour, per RGB channel", 3),
        ("texture", float, 0, 1, "strength of a smooth random texture on the background"),
        ("speckle", float, 0, 0.5, "share of background pixels given a random colour"),
        ("lines", int, 0, 10, "lines struck through the text (straight unless line_bend)"),
        ("line_width", int, 1, 8, "width of those lines, px"),
        ("line_bend", float, 0, 1,
         "how far each struck line bows from straight: its two inner control points (a "
         "cubic curve) move up or down by up to this times the image height"),
        ("typeset", int, 0, 1,
         "1: glyphs keep their size (one per captcha) and sit on a common baseline, as typeset "
         "text (o shorter than 0, p below the line); 0: the library stretches each one to "
         "the line's height (0-1: half the samples each)"),
        ("grid", int, 0, 60, "spacing of a background grid, px (under 8: no grid)"),
        ("blur", float, 0, 4, "Gaussian blur after rendering, sigma in px"),
        ("downscale", float, 1, 4, "shrink by this factor and scale back up (lost detail)"),
        ("noise", float, 0, 60, "Gaussian pixel noise, standard deviation (0-255 scale)"),
        ("jpeg", int, 0, 95, "JPEG quality the image is saved at (under 10: not saved as JPEG)"),
        ("glyph_colour", float, 0, 1,
         "how far each character's colour is drawn from fg towards one of its own (1: its own)"),
        ("spacing", float, 0, 1.5, "extra gap after each character, fraction of its width"),
        ("stroke", int, -3, 3, "thicker (+) or thinner (-) strokes, px at twice the size"),
        ("shapes", int, 0, 40, "filled shapes in random colours, under or over the text"),
        ("clutter_colour", float, 0, 1,
         "how far lines, scribbles, rings, dots and arcs are drawn from fg towards a colour "
         "of their own"),
        ("aspect", float, 0.3, 3,
         "the text's width times this before it is fitted (over 1: wider glyphs and gaps)"),
        ("effects", float, 0, 1,
         "chance each background, clutter and degradation effect is on for a sample "
         "(1: all the style draws; under 1 the others are off for it)"),
        ("overflow", float, 0, 0.5,
         "share of the text's height past the top or bottom edge (text_y picks which): "
         "the text is enlarged as far as the width fits, then stretched taller"),
        ("scribble", int, 0, 20,
         "straight lines at any angle anywhere, over everything, 1 to line_width px wide"),
        ("rings", int, 0, 10,
         "outlined ellipses anywhere, over everything, 1 to line_width px wide"),
        ("hollow", float, 0, 1,
         "share of the characters drawn as outlines only (hollow glyphs), 1 to 3 px wide"),
    ]],
]}
SCENE_KNOBS = tuple(k for k, knob in KNOBS.items() if knob.scene)

STYLE_KEYS = ("fonts", "font_sizes", "smooth", *KNOBS, "mix")


@dataclass(frozen=True)
class Style:
    """Resolved rendering style. Knob fields are (lo, hi) ranges; see KNOBS for units."""

    fonts: tuple[str, ...] = ("builtin",)  # font specs: builtin, dejavu, stix, files, dirs, globs
    font_sizes: tuple[int, ...] = (42, 50, 56)  # px; the library picks one per character
    smooth: bool = True  # the library's final SMOOTH filter
    rotate: tuple[float, float] = (30.0, 30.0)
    warp_dx: tuple[float, float] = (0.3, 0.3)
    warp_dy: tuple[float, float] = (0.3, 0.3)
    offset_dx: tuple[int, int] = (4, 4)
    offset_dy: tuple[int, int] = (6, 6)
    space_prob: tuple[float, float] = (0.5, 0.5)
    word_offset: tuple[float, float] = (0.25, 0.25)
    noise_dots: tuple[int, int] = (30, 30)
    noise_dot_width: tuple[int, int] = (3, 3)
    noise_curves: tuple[int, int] = (1, 1)
    bg: tuple[int, int] = (238, 255)
    fg: tuple[int, int] = (10, 200)
    fg_alpha: tuple[int, int] = (220, 255)
    # scene knobs (see KNOBS); these defaults leave the image as the library renders it
    text_scale: tuple[float, float] = (1.0, 1.0)
    text_x: tuple[float, float] = (0.5, 0.5)
    text_y: tuple[float, float] = (0.5, 0.5)
    tilt: tuple[float, float] = (0.0, 0.0)
    shear: tuple[float, float] = (0.0, 0.0)
    wave: tuple[float, float] = (0.0, 0.0)
    wave_period: tuple[float, float] = (80.0, 80.0)
    min_contrast: tuple[int, int] = (0, 0)
    gradient: tuple[float, float] = (0.0, 0.0)
    fg2: tuple[int, int] = (0, 0)
    bg_gradient: tuple[float, float] = (0.0, 0.0)
    bg2: tuple[int, int] = (255, 255)
    texture: tuple[float, float] = (0.0, 0.0)
    speckle: tuple[float, float] = (0.0, 0.0)
    lines: tuple[int, int] = (0, 0)
    line_width: tuple[int, int] = (1, 1)
    grid: tuple[int, int] = (0, 0)
    blur: tuple[float, float] = (0.0, 0.0)
    downscale: tuple[float, float] = (1.0, 1.0)
    noise: tuple[float, float] = (0.0, 0.0)
    jpeg: tuple[int, int] = (0, 0)
    glyph_colour: tuple[float, float] = (0.0, 0.0)
    spacing: tuple[float, float] = (0.0, 0.0)
    stroke: tuple[int, int] = (0, 0)
    shapes: tuple[int, int] = (0, 0)
    clutter_colour: tuple[float, float] = (0.0, 0.0)
    aspect: tuple[float, float] = (1.0, 1.0)
    effects: tuple[float, float] = (1.0, 1.0)
    overflow: tuple[float, float] = (0.0, 0.0)
    scribble: tuple[int, int] = (0, 0)
    rings: tuple[int, int] = (0, 0)
    hollow: tuple[float, float] = (0.0, 0.0)
    line_bend: tuple[float, float] = (0.0, 0.0)
    typeset: tuple[int, int] = (0, 0)
    # mixing: these shares of the samples are drawn from other styles (presets) instead
    mixes: tuple[Style, ...] = ()
    mix_shares: tuple[float, ...] = ()
    # a curriculum: the share of train-split samples drawn from the mixes moves linearly from 1
    # (at index 0) to mix_share (at index mix_ramp); 0: the share is constant
    mix_ramp: int = 0

    @property
    def mix(self) -> Style | None:
        """The first mixed-in style, or None: the style is not mixed."""
        return self.mixes[0] if self.mixes else None

    @property
    def mix_share(self) -> float:
        """The share of the samples drawn from the mixes, all together."""
        return sum(self.mix_shares)

    @property
    def composed(self) -> bool:
        """Whether any scene knob differs from its default (then compose.py draws the image)."""
        return any(getattr(self, k) != getattr(_DEFAULT, k) for k in SCENE_KNOBS)

    @property
    def has_scene(self) -> bool:
        """Whether the style or its mixed-in one composes a scene (compose.py)."""
        return self.composed or any(m.composed for m in self.mixes)

    def to_json(self) -> dict:
        """Scene knobs at their defaults are left out, so styles without a scene are stored
        as they were before the scene existed."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in ("mixes", "mix_shares", "mix_ramp")}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()
               if not (k in SCENE_KNOBS and v == getattr(_DEFAULT, k))}
        ramp = {"ramp": self.mix_ramp} if self.mix_ramp else {}
        if len(self.mixes) == 1:  # stored as before mixes of several presets existed
            out["mix"] = {"share": self.mix_share, "style": self.mix.to_json(), **ramp}
        elif self.mixes:
            out["mix"] = {"of": [{"share": s, "style": m.to_json()}
                                 for m, s in zip(self.mixes, self.mix_shares, strict=True)],
                          **ramp}
        return out

    @classmethod
    def from_json(cls, d: dict) -> Style:
        return apply_overrides(cls(), d, source="style")

    def replace(self, **kw) -> Style:
        return dataclasses.replace(self, **kw)

    def mix_share_at(self, split: str, index: int) -> float:
        """The share of samples drawn from the mixes at this place of the data (see mix_ramp)."""
        if split != "train" or not self.mix_ramp or index >= self.mix_ramp:
            return self.mix_share
        return 1.0 + (self.mix_share - 1.0) * index / self.mix_ramp

    def mix_pick(self, split: str, index: int, u: float) -> int:
        """Which style a sample whose 'mix' draw is u uses: 0 the style itself, k its k-th
        mix. u below the share at this place picks a mix, in proportion to the mixes' shares
        (u / share against their cumulative fractions)."""
        share = self.mix_share_at(split, index)
        if u >= share:
            return 0
        if len(self.mixes) == 1:
            return 1
        return 1 + bisect.bisect_right(list(itertools.accumulate(self.mix_shares[:-1])),
                                       u / share * self.mix_share)

    def with_curriculum(self, samples: int, warmup: str = "default") -> Style:
        """This style behind a warm-up: train samples start from preset `warmup` (or the
        style's own mix, when it has one) and reach the style's own mix after `samples`."""
        if self.mixes:
            return dataclasses.replace(self, mix_ramp=samples)
        return dataclasses.replace(self, mixes=(preset(warmup),), mix_shares=(0.0,),
                                   mix_ramp=samples)


_DEFAULT = Style()

PRESETS: dict[str, dict] = {
    "default": {},  # the captcha library's own defaults
    "easy": {"rotate": 10, "warp_dx": 0.1, "warp_dy": 0.1, "offset_dx": 2, "offset_dy": 2,
             "space_prob": 0, "word_offset": 0.1, "noise_dots": 0, "noise_curves": 0},
    "hard": {"fonts": ["builtin", "dejavu"], "rotate": 45, "warp_dx": 0.5, "warp_dy": 0.5,
             "word_offset": 0.35, "noise_dots": "60-120", "noise_curves": "2-4",
             "bg": "200-255", "fg": "0-160"},
    # the library's default look: half of the samples in its own font, half in the other
    # training font families (none held out), at sizes every family fits in 60 px
    "fonts": {"fonts": ["builtin:0.5", "dejavu", "stix", "pool"], "font_sizes": [34, 38, 42, 46]},
    # randomised: every knob drawn per sample over a wide range, several font families
    "varied": {"fonts": ["builtin", "dejavu", "stix"], "font_sizes": [36, 42, 50, 56],
               "rotate": "0-45", "warp_dx": "0-0.5", "warp_dy": "0-0.5", "offset_dx": "0-8",
               "offset_dy": "0-8", "space_prob": "0-0.8", "word_offset": "0-0.4",
               "noise_dots": "0-100", "noise_dot_width": "1-4", "noise_curves": "0-3",
               "bg": "180-255", "fg": "0-200", "fg_alpha": "180-255"},
    # the universal style space: every font family but the held-out ones, colours over the
    # whole range, text of any size anywhere, clutter, and degradations at training strength
    "universal": {"fonts": ["builtin", "dejavu", "stix", "pool"],
                  "font_sizes": [36, 42, 50, 56], "rotate": "0-40", "warp_dx": "0-0.5",
                  "warp_dy": "0-0.5", "offset_dx": "0-8", "offset_dy": "0-8",
                  "space_prob": "0-0.6", "word_offset": "0-0.4", "noise_dots": "0-60",
                  "noise_dot_width": "1-4", "noise_curves": "0-2", "bg": "0-255", "fg": "0-255",
                  "fg_alpha": "220-255", "text_scale": "0.55-1", "text_x": "0-1",
                  "text_y": "0-1", "tilt": [-10, 10], "shear": [-0.35, 0.35], "wave": "0-3",
                  "wave_period": "40-160", "min_contrast": "110-190", "gradient": "0-1",
                  "fg2": "0-255", "bg_gradient": "0-1", "bg2": "0-255", "texture": "0-0.4",
                  "speckle": "0-0.04", "lines": "0-2", "line_width": "1-3", "grid": "0-40",
                  "blur": "0-1", "downscale": "1-1.8", "noise": "0-10", "jpeg": "0-95"},
    # a poster look: flat grounds, large text that may touch the edges, strike lines, arcs and
    # confetti (of the text's colour or not), per-character colours, thin or bold strokes;
    # no blur or noise, some JPEG. Mixed into the shipped recipe (docs/transfer.md)
    "poster": {"fonts": ["builtin", "dejavu", "stix", "pool"],
               "font_sizes": [36, 42, 50, 56], "rotate": "0-30", "warp_dx": "0-0.4",
               "warp_dy": "0-0.4", "offset_dx": "0-6", "offset_dy": "0-6",
               "space_prob": "0-0.5", "word_offset": "0-0.3", "noise_dots": "0-40",
               "noise_dot_width": "1-6", "noise_curves": "0-3", "bg": "0-255", "fg": "0-255",
               "fg_alpha": 255, "min_contrast": "140-220", "text_scale": "0.75-1.1",
               "text_x": "0.3-0.7", "text_y": "0.3-0.7", "tilt": [-8, 8],
               "shear": [-0.3, 0.3], "glyph_colour": "0-1", "stroke": [-1, 1], "lines": "0-6",
               "line_width": "1-3", "clutter_colour": "0-1", "shapes": "0-12",
               "spacing": "0-0.3", "jpeg": "0-95"},
}


def parse_range(name: str, value, source: str = "option", knobs: dict | None = None) -> tuple:
    """Parse a knob value: a number, "lo-hi", or a [lo, hi] list, checked against its bounds.
    knobs: the table `name` belongs to (default: the image knobs, KNOBS)."""
    knob = (knobs or KNOBS)[name]
    label, param = (name, name) if source == "option" else (f"{source} key '{name}'", None)
    allowed = f"a number or range lo-hi within {_fmt(knob.lo)}..{_fmt(knob.hi)} ({knob.help})"
    try:
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError
            lo, hi = (_as(knob, v) for v in value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            lo = hi = _as(knob, value)
        elif isinstance(value, str):  # "v", "lo-hi"; signed: "-10-10", "-20--5"
            m = re.fullmatch(r"\s*(-?[^-\s]+)\s*(?:-\s*(-?[^-\s]+)\s*)?", value)
            if not m:
                raise ValueError
            lo, hi = (_as(knob, p) for p in (m.group(1), m.group(2) or m.group(1)))
        else:
            raise ValueError
    except (ValueError, TypeError):
        raise UsageError(f"{label}: {value!r} is not {allowed}", param) from None
    if lo > hi:
        raise UsageError(f"{label}: range {value!r} has lo > hi; write it as lo-hi", param)
    if lo < knob.lo or hi > knob.hi:
        raise UsageError(f"{label}: {value!r} is out of range; allowed is {allowed}", param)
    return (lo, hi)


def _as(knob: Knob, v):
    x = _num(v)
    if knob.kind is int and float(x) != int(x):
        raise ValueError  # whole numbers only
    return knob.kind(x)


def _num(v):
    if isinstance(v, str):
        v = v.strip()
        f = float(v)
        if not math.isfinite(f):
            raise ValueError
        return int(v) if v.lstrip("+").isdigit() else f
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError
    return v


def _fmt(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def parse_font_sizes(value, source: str = "option") -> tuple[int, ...]:
    label = "--font-sizes" if source == "option" else f"{source} key 'font_sizes'"
    items = value.split(",") if isinstance(value, str) else value
    try:
        sizes = tuple(int(str(s).strip()) for s in items)
    except (ValueError, TypeError):
        raise UsageError(f"{label}: {value!r} is not a comma-separated list of sizes in px") from None
    if not sizes or any(s < 6 or s > 400 for s in sizes):
        raise UsageError(f"{label}: {value!r}; give one or more sizes between 6 and 400 px")
    return tuple(sorted(set(sizes)))


def apply_overrides(style: Style, overrides: dict, source: str = "option") -> Style:
    """Return `style` with `overrides` (knob name -> raw value) applied and validated."""
    changes = {}
    for raw_key, value in overrides.items():
        key = raw_key.replace("-", "_")
        if key not in STYLE_KEYS:
            what = "style key" if source != "option" else "style option"
            raise UsageError(
                f"unknown {what} '{raw_key}' in {source}{suggest(key, STYLE_KEYS)} "
                f"(allowed: {', '.join(STYLE_KEYS)})")
        if key == "fonts":
            fonts = value.split(",") if isinstance(value, str) else value
            fonts = tuple(str(f).strip() for f in fonts if str(f).strip())
            if not fonts:
                raise UsageError(f"{source}: fonts is empty; give builtin, dejavu, stix or font files")
            changes[key] = fonts
        elif key == "font_sizes":
            changes[key] = parse_font_sizes(value, source)
        elif key == "mix":
            changes["mixes"], changes["mix_shares"] = parse_mix(value, source)
            changes["mix_ramp"] = int(value.get("ramp", 0)) if isinstance(value, dict) else 0
        elif key == "smooth":
            if not isinstance(value, bool):
                raise UsageError(f"{source}: smooth must be true or false, not {value!r}")
            changes[key] = value
        else:
            changes[key] = parse_range(key, value, source)
    return dataclasses.replace(style, **changes)


def parse_mix(value, source: str = "option") -> tuple[tuple[Style, ...], tuple[float, ...]]:
    """'universal:0.5' (a preset and the share of samples drawn from it), several of them
    ('default:0.3,fonts:0.3'), or the stored forms {"share": 0.5, "style": {...}} and
    {"of": [{"share", "style"}, ...]} -> (styles, shares); 'none' -> no mixing. In a style
    file, a part may name a preset and change its knobs instead of giving a whole style:
    {"share": 0.2, "preset": "poster", "typeset": "0-1"}."""
    label, param = ("mix", "mix") if source == "option" else (f"{source} key 'mix'", None)
    if isinstance(value, dict):
        try:
            parts = value["of"] if "of" in value else [value]
            styles = tuple(_mix_part(p, label, param) for p in parts)
            shares = tuple(float(p["share"]) for p in parts)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UsageError(f"{label}: {value!r} is not {{share, style}}, {{share, preset, "
                             "knobs…}} or {of: [...]}", param) from None
        if not all(0 <= s <= 1 for s in shares) or sum(shares) > 1 + 1e-9:
            raise UsageError(f"{label}: shares {', '.join(map(_fmt, shares))}: each in [0, 1], "
                             "together at most 1", param)
        return styles, shares
    text = str(value).strip()
    if text in ("", "none"):
        return (), ()
    styles, shares, names = [], [], []
    for part in text.split(","):
        name, _, share_text = part.strip().partition(":")
        try:
            share = float(share_text) if share_text else 0.5
        except ValueError:
            share = -1.0
        if not name or not 0 < share <= 1:
            raise UsageError(f"{label}: {part.strip()!r}; write PRESET:SHARE with a share in "
                             "(0, 1], e.g. universal:0.5 (several: default:0.3,fonts:0.3)",
                             param)
        if name in names:
            raise UsageError(f"{label}: preset '{name}' is given twice; give it once with "
                             "the sum of its shares", param)
        styles.append(_plain_preset(name, label, param))
        shares.append(share)
        names.append(name)
    if sum(shares) > 1 + 1e-9:
        raise UsageError(f"{label}: {text!r}: the shares add up to {sum(shares):g}; together "
                         "they must be at most 1", param)
    return tuple(styles), tuple(shares)


def _mix_part(part: dict, label: str, param) -> Style:
    """One part of a stored or written mix: its whole style, or a preset and knobs."""
    if "preset" not in part:
        return Style.from_json(part["style"])
    knobs = {k: v for k, v in part.items() if k not in ("share", "preset")}
    if "style" in knobs or "mix" in knobs:
        raise UsageError(f"{label}: a part names preset '{part['preset']}' and also "
                         f"{'style' if 'style' in knobs else 'mix'}; give one or the other, "
                         "without a mix of its own", param)
    return apply_overrides(_plain_preset(str(part["preset"]), label, param), knobs, source=label)


def _plain_preset(name: str, label: str, param) -> Style:
    """A preset that can be mixed in: one without a mix of its own."""
    style = preset(name)
    if style.mixes:
        raise UsageError(f"{label}: preset '{name}' mixes itself; mix with a plain preset", param)
    return style


def preset(name: str) -> Style:
    if name not in PRESETS:
        raise UsageError(
            f"style: unknown style '{name}'{suggest(name, PRESETS)} (allowed: {', '.join(PRESETS)})",
                         param="style")
    return apply_overrides(Style(), PRESETS[name], source=f"preset '{name}'")


def load_style_file(path: str) -> dict:
    """Read a TOML or JSON style file: knob keys, optionally `preset = "hard"` and
    `size = "WxH"` (used by gen unless --size is given)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UsageError(f"style_file: cannot read {path}: {e.strerror}",
                         param="style_file") from None
    try:
        if path.endswith(".json"):
            data = json.loads(raw)
        else:
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(raw.decode())
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise UsageError(f"style_file: {path} is not valid {'JSON' if path.endswith('.json') else 'TOML'}: {e}",
                         param="style_file") from None
    if not isinstance(data, dict):
        raise UsageError(f"style_file: {path} must hold a table of style keys", param="style_file")
    return data


def style_file_size(file: str | None) -> str | None:
    """The image size a style file asks for (`size = "WxH"`, as fit-style writes), or None."""
    size = load_style_file(file).get("size") if file else None
    if size is not None and not isinstance(size, str):
        raise UsageError(f"style_file: {file}: size must be a string like \"160x60\"",
                         param="style_file")
    return size


def style_label(name: str, file: str | None = None) -> str:
    """The style's name in the manifest: the preset, and the style file's name when one is given
    (`universal+wide.toml`: the file's own `preset` wins over --style, as in resolve_style)."""
    if not file:
        return name
    return f"{load_style_file(file).get('preset', name)}+{os.path.basename(file)}"


def resolve_style(name: str = "default", file: str | None = None,
                  overrides: dict | None = None) -> Style:
    """Preset, then style file, then command-line knobs: later ones win."""
    file_data = load_style_file(file) if file else {}
    file_data.pop("size", None)  # a recipe key (see style_file_size), not a style knob
    name = file_data.pop("preset", name) if file else name
    style = preset(name)
    if file_data:
        style = apply_overrides(style, file_data, source=f"style file {file}")
    if overrides:
        style = apply_overrides(style, overrides, source="option")
    return style


@dataclass
class Draws:
    """The style values drawn for one sample (recorded in its TFRecord)."""

    font: int = 0  # index into the resolved font list
    values: dict = field(default_factory=dict)


# What `effects` switches on and off, each with its value when off: the background's gradient,
# texture and speckle, the text's colour gradient, every kind of clutter, every degradation.
EFFECTS = {"gradient": 0.0, "bg_gradient": 0.0, "texture": 0.0, "speckle": 0.0, "grid": 0,
           "lines": 0, "shapes": 0, "noise_dots": 0, "noise_curves": 0, "blur": 0.0,
           "downscale": 1.0, "noise": 0.0, "jpeg": 0, "scribble": 0, "rings": 0}


def gate_effects(values: dict, rng) -> None:
    """Switch each of EFFECTS off (to its value when off) unless a draw falls under the sample's
    `effects` chance: one draw per effect in a fixed order, so a sample's set of effects depends
    on its own stream only. Clean captchas with one or two kinds of clutter, as most generators
    draw them, then occur as often as busy ones."""
    rate = values.get("effects", 1.0)
    for name, off in EFFECTS.items():
        if rng.random() >= rate:
            values[name] = off


def draw(style: Style, rng, n_fonts: int, font_weights=None) -> Draws:
    """Draw one sample's knob values. Each knob consumes a fixed number of draws, so changing one
    knob's range never changes what another knob draws for the same sample. Scene knobs are
    drawn only for a composed style. The font is uniform over `n_fonts`, or drawn with
    `font_weights` (chances summing to 1) from the same single draw."""
    u = rng.random()
    if font_weights is None:
        out = Draws(font=int(u * n_fonts))
    else:
        cum = list(itertools.accumulate(font_weights))
        out = Draws(font=min(bisect.bisect_right(cum, u * cum[-1]), n_fonts - 1))
    composed = style.composed
    for name, knob in KNOBS.items():
        if knob.scene and not composed:  # drawn last, so the library's knobs draw as before
            continue
        lo, hi = getattr(style, name)
        vals = []
        for _ in range(knob.per_channel or 1):
            u = rng.random()
            if knob.kind is int:
                vals.append(min(hi, lo + int(u * (hi - lo + 1))))
            else:
                vals.append(lo + u * (hi - lo))
        out.values[name] = tuple(vals) if knob.per_channel > 1 else vals[0]
    return out
