"""Seeded rendering: sample (seed, split, index) -> (PNG, label, drawn style), a pure function.

captcha 0.7.1 takes every random number from the `secrets` module, which cannot be seeded.
The renderer points the library's module-level `secrets` name at a seeded stand-in for each
sample. That is process state, so parallel rendering uses processes, never threads.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
from dataclasses import dataclass

import numpy as np

from captchalab.gen.style import Draws, Style, draw, gate_effects

SEED_RULE = (
    "stream seed = first 8 bytes (big-endian) of blake2b('captchalab-v1|{seed}|{split}|{index}|"
    "{stream}', digest_size=8) for stream in label, style, render; each seeds a Python "
    "random.Random. 'label' draws the length and characters, 'style' draws one value per knob "
    "(fixed count, so knobs are independent), 'render' replaces captcha.image.secrets")
MIX_RULE = ("; a mixed style first draws u from stream 'mix': the sample uses style.mix (and the "
            "fonts marked mix) when u < style.mix.share, else the style and its own fonts; with "
            "style.mix.ramp R, train sample i < R compares u with 1 + (share - 1) * i / R")
MIXES_RULE = ("; with several mixed-in styles (style.mix.of, share = the sum of theirs) a mixed "
              "sample uses the first whose cumulative share exceeds u / share_at * share "
              "(share_at: the share compared with u), and the fonts marked with its number")
FONT_RULE = ("; the style stream's first draw u picks the font: index int(u * fonts), or with "
             "font weights the first font whose cumulative weight exceeds u")
COMPOSE_RULE = ("; a style with a scene also seeds numpy's default_rng from stream 'compose' for "
                "the scene's random positions, and another from stream 'looks' for the colours "
                "of characters and clutter and the shapes; with effects under 1, stream "
                "'effects' gives one draw per effect (style.EFFECTS, in order), which is off for "
                "the sample when the draw is >= its effects value")
SPLIT_RULE = (
    "a label belongs to exactly one split: u = blake2b('captchalab-v1|{seed}|label|{text}') / 2^64; "
    "train if u < 0.8, val if u < 0.9, else test. A sample redraws its label until it falls in "
    "its own split, so no label string appears in two splits")
SPLIT_SHARES = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}
SPLITS = tuple(SPLIT_SHARES)


def derive_seed(seed: int, split: str, index: int, stream: str) -> int:
    key = f"captchalab-v1|{seed}|{split}|{index}|{stream}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def label_share(seed: int, text: str) -> float:
    key = f"captchalab-v1|{seed}|label|{text}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64


def split_of(seed: int, text: str) -> str:
    u = label_share(seed, text)
    return next(s for s, (lo, hi) in SPLIT_SHARES.items() if lo <= u < hi)


def draw_label(seed: int, split: str, index: int, chars: str, length, rng=None) -> str:
    """The label of sample (seed, split, index): from stream 'label', redrawn until it falls in
    the split's share of the label space (SPLIT_RULE). Images and audio share this rule."""
    rng = rng or random.Random(0)
    rng.seed(derive_seed(seed, split, index, "label"))
    lo, hi = length
    lo_u, hi_u = SPLIT_SHARES[split]
    for _ in range(100_000):
        n = lo + rng.randrange(hi - lo + 1)
        text = "".join(rng.choice(chars) for _ in range(n))
        if lo_u <= label_share(seed, text) < hi_u:
            return text
    raise RuntimeError(f"no label for {split} after 100000 draws; check the label space")


class SeededSecrets:
    """The three functions captcha.image calls on `secrets`, backed by a seeded generator."""

    def __init__(self):
        self.rng = random.Random(0)

    def randbelow(self, n: int) -> int:
        return self.rng.randrange(n)

    def randbits(self, k: int) -> int:
        return self.rng.getrandbits(k)

    def choice(self, seq):
        return self.rng.choice(seq)


@dataclass(frozen=True)
class Sample:
    split: str
    index: int
    text: str
    image: object  # PIL.Image.Image, RGB
    draws: Draws
    font: str  # font name as stored in records
    style: Style  # the style it was drawn from (the mixed-in one for a mixed sample)
    mixed: int = 0  # 0: the style itself; k: its k-th mixed-in style


class Renderer:
    """Renders samples of one dataset recipe. Build one per process; it caches loaded fonts."""

    def __init__(self, chars: str, length: tuple[int, int], size: tuple[int, int],
                 style: Style, font_paths: list[str], font_names: list[str], seed: int,
                 font_mixed: list[int] | None = None,
                 font_weights: list[float | None] | None = None):
        import captcha.image as ci
        self._ci = ci
        self.chars, self.length, self.size = chars, tuple(length), tuple(size)
        self.style, self.seed = style, seed
        self.font_paths, self.font_names = list(font_paths), list(font_names)
        mixed = font_mixed or [0] * len(font_paths)
        # font indices of the style itself (0) and of each mixed-in style (1, 2, ...)
        self._fonts = {m: [i for i, f in enumerate(mixed) if f == m]
                       for m in range(len(style.mixes) + 1)}
        # their chances within each style (fonts given a share), or None: uniform
        weights = font_weights or [None] * len(font_paths)
        self._weights = {m: None if any(weights[i] is None for i in idx)
                         else [weights[i] for i in idx] for m, idx in self._fonts.items()}
        self._secrets = SeededSecrets()
        self._captchas: dict[tuple[int, int], object] = {}
        self._label_rng = random.Random(0)
        self._style_rng = random.Random(0)

    @classmethod
    def from_recipe(cls, recipe) -> Renderer:
        """Build from a `recipe.Recipe`."""
        return cls(recipe.charset["chars"], recipe.length, recipe.size,
                   Style.from_json(recipe.style), [f["path"] for f in recipe.fonts],
                   [f["name"] for f in recipe.fonts], recipe.seed,
                   [int(f.get("mix", 0)) for f in recipe.fonts],
                   [f.get("weight") for f in recipe.fonts])

    def label(self, split: str, index: int) -> str:
        return draw_label(self.seed, split, index, self.chars, self.length, self._label_rng)

    def _captcha(self, font: int, style: Style, mixed: int):
        cap = self._captchas.get((font, mixed))
        if cap is None:
            w, h = self.size
            if style.composed:  # room for the whole text: the scene scales it to fit
                w, h = 2 * w, 2 * h
            cap = _glyph_captcha(self._ci)(w, h, fonts=[self.font_paths[font]],
                                           font_sizes=style.font_sizes)
            self._captchas[(font, mixed)] = cap
        return cap

    def render(self, split: str, index: int) -> Sample:
        text = self.label(split, index)
        mixed = 0
        if self.style.mixes:  # its own stream: unmixed samples stay as they were
            self._style_rng.seed(derive_seed(self.seed, split, index, "mix"))
            mixed = self.style.mix_pick(split, index, self._style_rng.random())
        style = self.style.mixes[mixed - 1] if mixed else self.style
        fonts = self._fonts[mixed]
        self._style_rng.seed(derive_seed(self.seed, split, index, "style"))
        d = draw(style, self._style_rng, len(fonts), self._weights[mixed])
        d.font = fonts[d.font]
        v = d.values
        if style.composed and v["effects"] < 1:  # its own stream: the knobs' draws stay put
            self._style_rng.seed(derive_seed(self.seed, split, index, "effects"))
            gate_effects(v, self._style_rng)
        cap = self._captcha(d.font, style, mixed)
        cap.character_rotate = (-v["rotate"], v["rotate"])
        cap.character_warp_dx = (v["warp_dx"] / 3, v["warp_dx"])
        cap.character_warp_dy = (2 * v["warp_dy"] / 3, v["warp_dy"])
        cap.character_offset_dx = (0, v["offset_dx"])
        cap.character_offset_dy = (0, v["offset_dy"])
        cap.word_space_probability = 1.0 - v["space_prob"]  # the library adds a space when u > p
        cap.word_offset_dx = v["word_offset"]
        fg = (*v["fg"], v["fg_alpha"])

        self._secrets.rng.seed(derive_seed(self.seed, split, index, "render"))
        saved, self._ci.secrets = self._ci.secrets, self._secrets
        try:
            if style.composed:  # the library's glyphs as a mask; compose.py draws the rest
                from captchalab.gen import compose

                # the style's, not the sample's
                cap.glyph_ids = style.glyph_colour[1] > 0 or style.hollow[1] > 0
                cap.spacing, cap.drawn = v["spacing"], 0
                cap.typeset, cap.line_font = bool(v["typeset"]), None
                mask = np.asarray(cap.create_captcha_image(text, (255, 255, 255), (0, 0, 0)))
                rng = np.random.default_rng(derive_seed(self.seed, split, index, "compose"))
                looks = compose.Looks.draw(np.random.default_rng(
                    derive_seed(self.seed, split, index, "looks")))
                im = compose.scene(mask[..., 0], v, rng, self.size,
                                   (mask[..., 1], mask[..., 2]) if cap.glyph_ids else (), looks)
                fg = compose.clutter_colour(
                    v, compose.push_contrast(v["fg"], v["bg"], v["min_contrast"]), looks)
            else:
                im = cap.create_captcha_image(text, fg, v["bg"])
            cap.create_noise_dots(im, fg, width=v["noise_dot_width"], number=v["noise_dots"])
            for _ in range(v["noise_curves"]):
                cap.create_noise_curve(im, fg)
        finally:
            self._ci.secrets = saved
        if style.smooth:
            from PIL.ImageFilter import SMOOTH
            im = im.filter(SMOOTH)
        if style.composed:
            im = compose.degrade(im, v, rng)
        return Sample(split, index, text, im, d, self.font_names[d.font], style, mixed)


@functools.cache
def _glyph_captcha(ci):
    """ImageCaptcha that can draw each character in its own id colour (compose.glyph_ink), leave
    a gap after it (the spacing knob) and keep glyphs at their size on a common baseline (the
    typeset knob). Off (the defaults), it draws as ImageCaptcha does."""
    from PIL import Image, ImageDraw

    from captchalab.gen import compose

    def uniform(lo, hi):  # as the library draws a float, from its (seeded) secrets
        return lo + ci.secrets.randbits(32) / 2**32 * (hi - lo)

    class GlyphCaptcha(ci.ImageCaptcha):
        glyph_ids, spacing, drawn, typeset, line_font = False, 0.0, 0, False, None

        def _typeset_character(self, c, draw, color):
            """A glyph as the library draws it (offset, rotated, warped), but in a box as tall
            as the font's line: the library crops each glyph to its ink and stretches it to
            the line's height, so an o comes out as tall as a 0. Here only the sides are
            cropped, and the glyph keeps its size and place on the baseline; every glyph of
            a captcha is set in the size its first one drew (the library draws one for each)."""
            font = ci.secrets.choice(self.truefonts)
            font = self.line_font = self.line_font or font
            _, _, w, _ = draw.multiline_textbbox((1, 1), c, font=font)
            ascent, descent = font.getmetrics()
            h = ascent + descent
            ox, oy = self.character_offset_dx, self.character_offset_dy
            dx1 = ci.secrets.randbelow(ox[1] - ox[0] + 1) + ox[0]
            dy1 = ci.secrets.randbelow(oy[1] - oy[0] + 1) + oy[0]
            im = Image.new("RGBA", (int(w) + dx1, h + dy1))
            ImageDraw.Draw(im).text((dx1, dy1), c, font=font, fill=color)
            box = im.getbbox()
            if box:
                im = im.crop((box[0], 0, box[2], im.size[1]))
            im = im.rotate(uniform(*self.character_rotate), Image.Resampling.BILINEAR,
                           expand=True)
            wx, wy = self.character_warp_dx, self.character_warp_dy
            dx2 = w * uniform(0, 1) * (wx[1] - wx[0]) + wx[0]
            dy2 = h * uniform(0, 1) * (wy[1] - wy[0]) + wy[0]
            x1, y1 = int(uniform(-dx2, dx2)), int(uniform(-dy2, dy2))
            x2, y2 = int(uniform(-dx2, dx2)), int(uniform(-dy2, dy2))
            w2, h2 = int(w) + abs(x1) + abs(x2), h + abs(y1) + abs(y2)
            im = im.resize((w2, h2))
            return im.transform((int(w), h), Image.Transform.QUAD,
                                (x1, y1, -x1, h2 - y2, w2 + x2, h2 + y2, w2 - x2, -y1))

        def _draw_character(self, c, draw, color):
            if c != " ":
                if self.glyph_ids:
                    color = compose.glyph_ink(self.drawn)
                self.drawn += 1
            if self.typeset:
                im = self._typeset_character(c, draw, color)
            else:
                im = super()._draw_character(c, draw, color)
            pad = int(self.spacing * im.size[0]) if c != " " else 0
            if pad:
                wide = Image.new("RGBA", (im.size[0] + pad, im.size[1]))
                wide.paste(im, (0, 0))
                im = wide
            return im

    return GlyphCaptcha


def png_bytes(image, compress_level: int = 1) -> bytes:
    """PNG-encode an RGB image (PIL or HxWx3 uint8) with OpenCV: zlib level 1, no row filter.

    Pillow picks a filter per row (mostly Paeth) and cannot be told otherwise. On these images
    unfiltered rows compress to the same size (~8.5 KB at 160x60), encode ~1.5x faster and
    decode ~1.4x faster, and decoding is what the training input pipeline spends its time on
    (docs/training.md, "Input pipeline"). Level 1 is ~2x faster than level 6, files ~10 % larger.
    """
    import cv2
    import numpy as np

    if not isinstance(image, np.ndarray):
        image = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]), [  # OpenCV wants BGR
        cv2.IMWRITE_PNG_COMPRESSION, compress_level,
        cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE,
        cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_DEFAULT])  # stated, not left to defaults
    if not ok:
        raise RuntimeError(f"OpenCV could not PNG-encode a {image.shape} {image.dtype} image")
    return buf.tobytes()


def label_space(chars: str, length: tuple[int, int]) -> int:
    return sum(len(chars) ** n for n in range(length[0], length[1] + 1))


def split_pools(chars: str, length: tuple[int, int], seed: int, limit: int = 200_000):
    """Distinct labels each split can draw from: exact when the space is small, else estimated."""
    total = label_space(chars, length)
    if total > limit:
        return {s: int(total * (hi - lo)) for s, (lo, hi) in SPLIT_SHARES.items()}, False
    pools = dict.fromkeys(SPLITS, 0)
    for n in range(length[0], length[1] + 1):
        for t in itertools.product(chars, repeat=n):
            pools[split_of(seed, "".join(t))] += 1
    return pools, True
