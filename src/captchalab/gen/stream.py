"""On-the-fly samples: an endless iterator over the same seeded renderer, fed by worker processes."""

from __future__ import annotations

import collections
import itertools
from concurrent.futures import ProcessPoolExecutor

from captchalab.gen.engines import pool_context, renderer_for
from captchalab.gen.recipe import GenRequest, Recipe, build_recipe
from captchalab.gen.render import png_bytes
from captchalab.gen.style import Style, resolve_style


def stream_recipe(charset: str = GenRequest.charset, length: str = GenRequest.length,
                  size: str = GenRequest.size,
                  style: Style | str = "default", seed: int = 0, mix: str = "",
                  name: str | None = None) -> Recipe:
    """A recipe for streaming (validated exactly as `captchalab gen` validates its options).
    mix: 'PRESET:SHARE' draws that share of the samples from another preset."""
    st = (resolve_style(style, None, {"mix": mix} if mix else None) if isinstance(style, str)
          else style)
    name = name or (style if isinstance(style, str) else "custom")
    return build_recipe(GenRequest(charset=charset, length=length, size=size, style=st,
                                   style_name=name, counts={"train": 1}, seed=seed),
                        warn=lambda _msg: None)


def _render_chunk(recipe: Recipe, split: str, start: int, n: int, encoded: bool):
    import numpy as np

    r = renderer_for(recipe)
    out = []
    for index in range(start, start + n):
        s = r.render(split, index)
        if recipe.kind == "audio":
            from captchalab.gen.audio import wav_bytes
            out.append((wav_bytes(s.pcm) if encoded else s.pcm, s.text))
        else:
            out.append((png_bytes(s.image) if encoded else np.asarray(s.image), s.text))
    return out


def stream_samples(recipe: Recipe, split: str = "train", start: int = 0, workers: int = 2,
                   encoded: bool = False, chunk: int = 64, stop: int | None = None):
    """Yield (image, label) for indices start, start+1, … of `split`, in order, without end.

    `image` is an HxWx3 uint8 array, or PNG bytes when `encoded`. Samples are identical to
    those `captchalab gen` writes with the same recipe and seed, and labels keep to the split's
    share of the label space, so a stream of `train` never shows a val/test label. With
    `workers` > 0 rendering runs in that many processes (the consumer's GIL stays free);
    `stop` ends the stream at that index (for tests and finite runs).
    """
    starts = itertools.count(start, chunk) if stop is None else range(start, stop, chunk)

    def size_of(s):
        return chunk if stop is None else min(chunk, stop - s)

    if workers <= 0:
        for s in starts:
            yield from _render_chunk(recipe, split, s, size_of(s), encoded)
        return
    ex = ProcessPoolExecutor(workers, mp_context=pool_context())
    try:
        inflight = collections.deque()
        for s in starts:
            inflight.append(ex.submit(_render_chunk, recipe, split, s, size_of(s), encoded))
            if len(inflight) >= 2 * workers:
                yield from inflight.popleft().result()
        while inflight:
            yield from inflight.popleft().result()
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
