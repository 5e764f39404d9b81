"""`captchalab show`: contact sheets of samples, and re-rendering one sample from its seed."""

from __future__ import annotations

import io
import itertools
import os

from captchalab.core import storage
from captchalab.core.errors import UsageError
from captchalab.core.plot import pyplot
from captchalab.gen import shards as sh


def _image(png: bytes):
    from PIL import Image
    return Image.open(io.BytesIO(png)).convert("RGB")


def contact_sheet(data_dir: str, out: str | None, count: int, split: str | None) -> str:
    m = sh.read_manifest(data_dir)
    split = split or next(iter(m["splits"]), None)
    if split is None:
        raise UsageError(f"{data_dir} has no splits to show")
    records = list(itertools.islice(sh.iter_split(data_dir, m, split), count))
    if not records:
        raise UsageError(f"split {split} holds no records", param="split")
    out = out or storage.join(data_dir, "preview.png")
    if m.get("kind") == "audio":
        return _audio_sheet(data_dir, m, records, split, out)
    plt = pyplot()
    cols = min(6, len(records))
    rows = -(-len(records) // cols)
    w, h = m["image"]["width"], m["image"]["height"]
    show_font = len(records) <= 12 and any(r.get("style/font") for r in records)
    title_h = 0.55 if show_font else 0.35  # inches above each image for its caption
    fig, axes = plt.subplots(rows, cols, figsize=(cols * w / 60, rows * (h / 60 + title_h)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, rec in zip(axes.flat, records, strict=False):
        ax.imshow(_image(rec["image/png"]))
        font = rec.get("style/font") if show_font else None
        ax.set_title(rec["label/text"] + (f"\n{font}" if font else ""), family="monospace",
                     fontsize=10 if not font else 8)
    style = m.get("style_name", m.get("source"))
    fig.suptitle(f"{os.path.basename(os.path.abspath(data_dir))}: {split}, first {len(records)} "
                 f"(style {style}, seed {m.get('seed')})", fontsize=10)
    return _save(plt, fig, out)


def _audio_sheet(data_dir: str, m: dict, records: list, split: str, out: str) -> str:
    """One spectrogram per row, with its label, duration and effects."""
    from captchalab.gen.audio import RATE, parse_wav, spectrogram

    plt = pyplot()
    fig, axes = plt.subplots(len(records), 1, figsize=(10, 1.25 * len(records) + 0.4),
                             squeeze=False)
    longest = max(r["audio/samples"] for r in records) / RATE
    for ax, rec in zip(axes[:, 0], records, strict=True):
        pcm = parse_wav(rec["audio/wav"], f"{split}:{rec['sample/index']}")
        spec = spectrogram(pcm)
        ax.imshow(spec, origin="lower", aspect="auto", cmap="magma",
                  vmin=spec.max() - 60, vmax=spec.max(),
                  extent=(0, len(pcm) / RATE, 0, RATE / 2000))
        ax.set_xlim(0, longest)
        fx = [f"{k} {rec[f'style/{k}']:.2g}" for k, off in (("reverb", 0), ("snr", 100))
              if f"style/{k}" in rec and rec[f"style/{k}"] != off]
        if rec.get("style/bandpass"):
            fx.append("band-pass")
        ax.set_title(f"{rec['label/text']}   ({len(pcm) / RATE:.1f} s{'; ' if fx else ''}"
                     f"{', '.join(fx)})", family="monospace", fontsize=9, loc="left")
        ax.set_ylabel("kHz", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("seconds", fontsize=8)
    fig.suptitle(f"{os.path.basename(os.path.abspath(data_dir))}: {split}, first {len(records)} "
                 f"(audio, style {m.get('style_name')}, seed {m.get('seed')})", fontsize=10)
    return _save(plt, fig, out)


def _save(plt, fig, out: str) -> str:
    fig.tight_layout()
    with storage.open_file(out, "wb") as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)
    return out


def parse_sample(spec: str, m: dict) -> tuple[str, int]:
    split, _, index = spec.partition(":")
    if split not in m["splits"] or not index.isdigit():
        have = ", ".join(m["splits"])
        raise UsageError(f"sample {spec!r}: give SPLIT:INDEX with SPLIT one of {have}",
                         param="sample")
    index = int(index)
    if index >= m["splits"][split]["count"]:
        raise UsageError(f"sample {spec!r}: {split} has {m['splits'][split]['count']} samples "
                         f"(0..{m['splits'][split]['count'] - 1})", param="sample")
    return split, index


def find_record(data_dir: str, m: dict, split: str, index: int) -> dict:
    start = 0
    for entry in m["splits"][split]["shards"]:
        if index < start + entry["count"]:
            path = storage.join(data_dir, entry["file"])
            return next(itertools.islice(sh.iter_shard(path), index - start, None))
        start += entry["count"]
    raise UsageError(f"{split}[{index}] is not in the dataset's shards")


def rerender_check(data_dir: str, spec: str, out: str | None):
    """Re-render SPLIT:INDEX from the manifest's recipe and compare it with the stored record."""
    import numpy as np
    from PIL import Image

    from captchalab.gen.fonts import file_sha256
    from captchalab.gen.recipe import Recipe
    from captchalab.gen.render import Renderer, png_bytes

    m = sh.read_manifest(data_dir)
    if m.get("source") != "generated":
        raise UsageError(f"sample: {data_dir} was imported, so it cannot be re-rendered",
                         param="sample")
    split, index = parse_sample(spec, m)
    if m.get("kind") == "audio":
        return _rerender_audio(data_dir, m, split, index, out)
    for f in m["fonts"]:
        if not os.path.exists(f["path"]) or file_sha256(f["path"]) != f["sha256"]:
            raise UsageError(f"sample: font {f['path']} is missing or changed on this machine; "
                             "re-rendering needs the same font files", param="sample")
    stored = find_record(data_dir, m, split, index)
    sample = Renderer.from_recipe(Recipe.from_json(m)).render(split, index)
    a = np.asarray(_image(stored["image/png"]))
    b = np.asarray(sample.image.convert("RGB"))
    same_png = png_bytes(sample.image) == stored["image/png"]
    same_pixels = a.shape == b.shape and bool((a == b).all())
    same_label = sample.text == stored["label/text"]
    ok = same_pixels and same_label
    out = out or storage.join(data_dir, f"rerender-{split}-{index}.png")
    diff = np.abs(a.astype(int) - b.astype(int)).clip(0, 255).astype(np.uint8) if a.shape == b.shape \
        else np.zeros_like(a)
    gap = np.full((a.shape[0], 4, 3), 255, np.uint8)
    with storage.open_file(out, "wb") as f:
        Image.fromarray(np.concatenate([a, gap, b, gap, 255 - diff], axis=1)).save(f, "PNG")
    if ok:
        msg = (f"{split}[{index}] '{sample.text}': re-rendered image matches the stored record "
               f"({'byte-identical PNG' if same_png else 'identical pixels'})")
    else:
        n = int((a != b).any(axis=-1).sum()) if a.shape == b.shape else -1
        msg = (f"{split}[{index}]: MISMATCH (stored '{stored['label/text']}', re-rendered "
               f"'{sample.text}', {n} pixels differ)")
    return ok, out, msg


def _rerender_audio(data_dir: str, m: dict, split: str, index: int, out: str | None):
    """Audio: re-render, compare the WAV bytes, and write both spectrograms one above the other."""
    import numpy as np
    from PIL import Image

    from captchalab.gen.audio import (
        AudioRenderer,
        find_voice,
        parse_wav,
        spectrogram_image,
        wav_bytes,
    )
    from captchalab.gen.recipe import Recipe

    for v in m["voices"]:
        spec = "builtin" if v["name"] == "builtin" else v["path"]
        if not os.path.isdir(v["path"]) or find_voice(spec).sha256() != v["sha256"]:
            raise UsageError(f"sample: voice {v['path']} is missing or changed on this machine; "
                             "re-rendering needs the same recordings", param="sample")
    stored = find_record(data_dir, m, split, index)
    sample = AudioRenderer.from_recipe(Recipe.from_json(m)).render(split, index)
    ok = wav_bytes(sample.pcm) == stored["audio/wav"] and sample.text == stored["label/text"]
    out = out or storage.join(data_dir, f"rerender-{split}-{index}.png")
    a = spectrogram_image(parse_wav(stored["audio/wav"], "stored"))
    b = spectrogram_image(sample.pcm)
    w = max(a.shape[1], b.shape[1])
    pad = [np.pad(x, ((0, 0), (0, w - x.shape[1]), (0, 0)), constant_values=255) for x in (a, b)]
    gap = np.full((4, w, 3), 255, np.uint8)
    with storage.open_file(out, "wb") as f:
        Image.fromarray(np.concatenate([pad[0], gap, pad[1]])).save(f, "PNG")
    if ok:
        msg = f"{split}[{index}] '{sample.text}': re-rendered audio matches the stored record (byte-identical WAV)"
    else:
        msg = (f"{split}[{index}]: MISMATCH (stored '{stored['label/text']}', re-rendered "
               f"'{sample.text}')")
    return ok, out, msg
