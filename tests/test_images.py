"""Hostile and unusual image files: 16-bit PNGs, FIFOs, decompression bombs."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from captchalab.core.errors import UsageError
from captchalab.core.images import open_rgb
from conftest import cli

RUN = os.path.join(os.path.dirname(__file__), "fixtures", "0ce7b0d", "run")


def _png_header_only(path, w, h):
    """A PNG whose header claims w x h pixels (the pixel data is never reached)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_16_bit_grey_is_scaled_not_clipped_to_white(tmp_path):
    a = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(a).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = np.asarray(open_rgb(tmp_path / "deep.png"))
    assert rgb.shape == (4, 4, 3) and rgb[0].tolist() == [[v] * 3 for v in (0, 64, 128, 255)]


def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(UsageError, match="pipe.png: not a regular file"):
        open_rgb(tmp_path / "pipe.png")


@pytest.mark.parametrize("w, h", [(6000, 5000), (20000, 20000)])
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, w, h):
    """30 MP: our limit; 400 MP: Pillow's own, which it raises at open."""
    _png_header_only(tmp_path / "bomb.png", w, h)
    with pytest.raises(UsageError, match=r"bomb.png: .*more than the 25,000,000 pixels"):
        open_rgb(tmp_path / "bomb.png")


def test_predict_and_import_give_one_line_for_hostile_files(tmp_path):
    good = tmp_path / "ok" / "ab12.png"
    good.parent.mkdir()
    Image.new("RGB", (160, 60), "white").save(good)
    os.mkfifo(tmp_path / "ok" / "zz99.png")
    p = cli("predict", "--model", RUN, "--skip-bad", tmp_path / "ok", timeout=120)
    assert "skipped" in p.stderr and "not a regular file" in p.stderr
    assert len(p.stdout.strip().splitlines()) == 1  # the readable image was read
    _png_header_only(tmp_path / "ok" / "bomb_cd34.png", 20000, 20000)
    os.remove(tmp_path / "ok" / "zz99.png")
    p = cli("import", tmp_path / "ok", "--out", tmp_path / "ds", check=False, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "bomb_cd34.png: more than the 25,000,000 pixels" in p.stderr
