"""The universal style space: font families, the scene composed around the library's glyphs,
held-out families, and byte-identical rendering with every draw recorded."""

import numpy as np
import pytest

from captchalab.gen import shards as sh
from captchalab.gen.compose import (
    BLUE_LEVELS,
    GREEN_LEVELS,
    Looks,
    draw_marks,
    hollow,
    place_text,
    push_contrast,
)
from captchalab.gen.style import EFFECTS, KNOBS, SCENE_KNOBS, Style, parse_range, preset
from conftest import cli, record_hashes


def test_universal_is_byte_identical_across_workers_and_records_every_draw(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--style", "universal", "--train", 40, "--test", 20, "--shard-size", 16, "-q"]
    cli("gen", "--out", a, *args, "--workers", 1)
    cli("gen", "--out", b, *args, "--workers", 2)
    for split in ("train", "test"):
        assert record_hashes(a, split) == record_hashes(b, split)
    m = sh.read_manifest(str(a))
    assert set(sh.SCENE_FEATURES) <= set(m["features"]) and "compose" in m["seed_rule"]
    assert len({f["name"] for f in m["fonts"]}) > 100  # the fontpkg pool, DejaVu, STIX, builtin
    style = preset("universal")
    for r in sh.iter_split(str(a), m, "train"):
        for name in KNOBS:
            lo, hi = getattr(style, name)
            v = r[f"style/{name}"]
            assert all(lo - 1e-6 <= x <= hi + 1e-6 for x in (v if isinstance(v, list) else [v]))
    cli("verify", a)
    p = cli("show", a, "--sample", "test:7", "--out", tmp_path / "s.png")
    assert "identical" in p.stdout


def test_poster_draws_flat_grounds_with_lines_and_mixes_into_universal(tmp_path):
    """poster: flat grounds (no gradient, texture, speckle, blur or noise), opaque text of a
    contrast of at least 140, large text, strike lines and confetti; it mixes into universal
    at a share, with no held-out family."""
    d = tmp_path / "d"
    cli("gen", "--out", d, "--style", "poster", "--test", 24, "-q")
    m, style = sh.read_manifest(str(d)), preset("poster")
    rows = list(sh.iter_split(str(d), m, "test"))
    for r in rows:
        assert all(r[f"style/{k}"] == 0 for k in ("gradient", "bg_gradient", "texture",
                                                  "speckle", "blur", "noise", "grid"))
        assert r["style/fg_alpha"] == 255 and 140 <= r["style/min_contrast"] <= 220
        assert 0.75 - 1e-6 <= r["style/text_scale"] <= 1.1 + 1e-6
    assert sum(r["style/lines"] > 0 for r in rows) >= 12
    assert max(r["style/shapes"] for r in rows) > 6
    mixed = tmp_path / "mixed"
    cli("gen", "--out", mixed, "--style", "universal", "--mix",
        "poster:0.2,default:0.2,fonts:0.3", "--train", 30, "-q")
    st = Style.from_json(sh.read_manifest(str(mixed))["style"])
    assert st.mixes[0] == style and st.mix_shares == (0.2, 0.2, 0.3)
    p = cli("gen", "--out", tmp_path / "x", "--style", "poster", "--fonts", "pool,kalam",
            "--train", 10, check=False)
    assert p.returncode == 2 and "held-out" in p.stderr


def test_styles_without_a_scene_render_and_store_as_before():
    assert not Style().composed and not preset("varied").composed and preset("universal").composed
    assert not set(SCENE_KNOBS) & set(Style().to_json())  # stored as before the scene existed
    assert Style.from_json(preset("universal").to_json()) == preset("universal")


def test_signed_ranges_parse():
    assert parse_range("tilt", "-10-10") == (-10.0, 10.0)
    assert parse_range("tilt", "-20--5") == (-20.0, -5.0)
    assert parse_range("tilt", "7") == (7.0, 7.0)


def test_contrast_push_and_text_placement_hand_worked():
    # bg luminance 110 (< 128): text at 100 is pushed up to 110 + 50 on every channel
    assert push_contrast((100, 100, 100), (110, 110, 110), 50) == (160, 160, 160)
    assert push_contrast((0, 0, 0), (110, 110, 110), 50) == (0, 0, 0)  # already far enough
    assert push_contrast((200, 200, 200), (180, 180, 180), 60) == (120, 120, 120)  # pushed down
    # a saturated channel cannot rise: mixing towards white still reaches the luminance
    r, g, b = push_contrast((255, 60, 120), (200, 50, 100), 110)  # bg luminance 100.5
    assert 0.299 * r + 0.587 * g + 0.114 * b >= 210
    # a 20x10 block of text: the largest fit in 160x60 is 6x (120x60); half of it is 60x30,
    # placed at the left (text_x 0) and bottom (text_y 1)
    mask = np.zeros((60, 160), np.uint8)
    mask[5:15, 40:60] = 255
    v = dict(shear=0.0, tilt=0.0, wave=0.0, wave_period=80.0, text_scale=0.5, text_x=0.0,
             text_y=1.0)
    out = place_text(mask, v, (160, 60))
    assert out.shape == (60, 160)
    assert out[30:60, 0:60].min() > 0.99 and out[:30].max() == 0 and out[:, 60:].max() == 0


def test_overflow_cuts_the_text_at_the_top_or_bottom_and_keeps_its_width():
    # a 20x10 block (top half 255, bottom half 128) fits 160x60 at 6x (120x60); overflow 0.5
    # makes it 120 tall: enlarged to the full width (160 < 240), then only taller
    mask = np.zeros((60, 160), np.uint8)
    mask[5:10, 40:60], mask[10:15, 40:60] = 255, 128
    v = dict(shear=0.0, tilt=0.0, wave=0.0, wave_period=80.0, text_scale=1.0, text_x=0.5,
             text_y=0.0, overflow=0.5)
    top = place_text(mask, v, (160, 60))  # text_y 0: the bottom half is cut
    assert top[:48].min() > 0.99 and top[:48, [0, 159]].min() > 0.99  # bilinear: 12 px blend
    bottom = place_text(mask, {**v, "text_y": 1.0}, (160, 60))  # text_y 1: the top half is cut
    assert np.allclose(bottom[12:], 128 / 255, atol=0.01)
    assert np.array_equal(place_text(mask, {**v, "overflow": 0.0}, (160, 60))[:, 20:140] > 0,
                          np.ones((60, 120), bool))  # no overflow: 120x60, centred, as before


def test_scribbles_and_rings_hand_worked():
    """A scribble whose ends are drawn at 1/12 and 11/12 runs from the left edge to the right
    one (ends span a tenth past each edge); a ring of size 0.5 and aspect 0.2 on 60 px is a
    circle of radius 0.08 * 60 + 0.42 * 60 * 0.5 = 17.4 px."""
    from PIL import Image

    looks = Looks.draw(np.random.default_rng(0))
    looks.scribbles[0] = [1 / 12, 0.5, 11 / 12, 0.5, 0.0]  # 1 px wide: line_width 1
    looks.rings[0] = [0.5, 0.5, 0.5, 0.2, 0.0]
    im = Image.new("L", (160, 60), 0)
    draw_marks(im, {"scribble": 1, "rings": 0, "line_width": 1}, looks, 255)
    a = np.asarray(im)
    assert a[30].min() == 255 and a.sum() == 160 * 255  # one row, edge to edge
    im = Image.new("L", (160, 60), 0)
    draw_marks(im, {"scribble": 0, "rings": 1, "line_width": 1}, looks, 255)
    ys, xs = np.nonzero(np.asarray(im))
    r = np.hypot(xs - 80, ys - 30)
    assert len(r) > 80 and 15.5 < r.min() and r.max() < 18.5
    assert np.asarray(im)[30, 80] == 0  # an outline, not filled


def test_hollow_keeps_the_outline_of_the_chosen_characters_hand_worked():
    """Two 20x20 squares, characters 0 and 1 (their id inks); only character 0's draw is under
    the share 0.5, and the width draw 0.5 makes px = 1 + int(1.5) = 2: its inside (the square
    eroded by 5x5) is emptied, leaving a ring 2 px wide, and character 1 stays filled."""
    mask = np.zeros((40, 60), np.uint8)
    green, blue = mask.copy(), mask.copy()
    mask[10:30, 5:25] = mask[10:30, 35:55] = 255
    green[10:30, 5:25], blue[10:30, 5:25] = GREEN_LEVELS[0], BLUE_LEVELS[0]
    green[10:30, 35:55], blue[10:30, 35:55] = GREEN_LEVELS[0], BLUE_LEVELS[1]
    looks = Looks.draw(np.random.default_rng(0))
    looks.hollow[:] = 0.9
    looks.hollow[0], looks.hollow[-1] = 0.1, 0.5
    m, g, b = hollow(mask, [green, blue], 0.5, looks)
    ring = mask[:, :30].astype(bool)
    ring[12:28, 7:23] = False  # a 2 px border of the left square
    assert np.array_equal(m[:, :30] > 0, ring) and m[:, :30][ring].min() == 255
    assert np.array_equal(m[:, 30:], mask[:, 30:])  # character 1: whole
    assert np.array_equal(g[m > 0], green[m > 0]) and np.array_equal(b[m > 0], blue[m > 0])
    assert np.array_equal(hollow(mask, [green, blue], 0.0, looks)[0], mask)


def test_bent_lines_hand_worked():
    """A cubic from (0, 30) to (90, 30) with both inner control points 20 px down passes its
    middle 0.375 * 20 + 0.375 * 20 = 15 px down, and keeps its ends; no offsets: the chord.
    Drawn by scene(), a bent line leaves the straight one's rows."""
    from captchalab.gen.compose import bent, scene

    p = np.array(bent((0, 30), (90, 30), (20, 20), points=33))
    assert np.allclose(p[[0, -1]], [[0, 30], [90, 30]]) and np.allclose(p[16], [45, 45])
    chord = np.array(bent((0, 0), (90, 30), (0, 0)))
    assert np.allclose(chord[:, 1], chord[:, 0] / 3)
    mask = np.zeros((80, 160), np.uint8)
    v = {**{k: getattr(Style(), k)[0] for k in KNOBS}, "bg": (255, 255, 255), "fg": (0, 0, 0),
         "fg2": (0, 0, 0), "bg2": (255, 255, 255), "fg_alpha": 255, "lines": 1,
         "line_width": 1}
    looks = Looks.draw(np.random.default_rng(0))
    looks.bends[0] = [1.0, 1.0]  # both points down by the whole bend
    straight, curved = (np.asarray(scene(mask, {**v, "line_bend": b}, np.random.default_rng(0),
                                         (80, 40), (), looks)).min(-1) < 128 for b in (0, 0.5))
    assert straight.sum() > 40 and curved.sum() > 40
    assert np.nonzero(curved)[0].max() > np.nonzero(straight)[0].max() + 5  # bows 15 px down


def test_scribbles_rings_hollow_are_drawn_recorded_and_rerendered_identically(tmp_path):
    d = tmp_path / "d"
    cli("gen", "--out", d, "--style", "poster", "--scribble", "2-5", "--rings", 1,
        "--hollow", "0.3-0.6", "--lines", 2, "--line-bend", "0.2-0.5", "--test", 8, "-q")
    rows = list(sh.iter_split(str(d), sh.read_manifest(str(d)), "test"))
    assert all(2 <= r["style/scribble"] <= 5 and r["style/rings"] == 1 for r in rows)
    assert all(0.3 <= r["style/hollow"] <= 0.6 for r in rows)
    assert all(0.2 <= r["style/line_bend"] <= 0.5 for r in rows)
    assert "identical" in cli("show", d, "--sample", "test:5", "--out", tmp_path / "s.png").stdout


def test_typeset_keeps_each_glyph_at_its_size_on_the_baseline(tmp_path):
    import captcha.image as ci
    from PIL import Image, ImageDraw

    from captchalab.gen.render import _glyph_captcha

    cap = _glyph_captcha(ci)(160, 60)
    cap.character_rotate = cap.character_warp_dx = cap.character_warp_dy = (0, 0)
    cap.character_offset_dx = cap.character_offset_dy = (0, 0)
    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))

    def rows(c):  # first and last row of the glyph's ink, and the box height
        a = np.asarray(cap._draw_character(c, draw, (255, 255, 255, 255)))[..., 3] > 0
        ink = np.nonzero(a.any(1))[0]
        return ink[0], ink[-1], a.shape[0]

    library = [rows(c) for c in "o0p"]
    cap.typeset = True
    (o0, o1, bo_h), (z0, z1, bz_h), (_, p1, _) = rows("o"), rows("0"), rows("p")
    assert all(end == h - 1 for _, end, h in library)  # the library: every glyph fills its box
    assert bo_h == bz_h  # typeset: one line height for all
    assert o1 - o0 < 0.8 * (z1 - z0) and o0 > z0  # an o is shorter than a 0, below its top
    assert abs(o1 - z1) <= 2 and p1 > o1 + 5  # both on the baseline; p's tail below it
    d = tmp_path / "d"
    cli("gen", "--out", d, "--text-scale", 0.8, "--typeset", "0-1", "--test", 12, "-q")
    got = {r["style/typeset"] for r in sh.iter_split(str(d), sh.read_manifest(str(d)), "test")}
    assert got == {0, 1}
    assert "identical" in cli("show", d, "--sample", "test:3", "--out", tmp_path / "s.png").stdout


@pytest.mark.parametrize("args,msg", [
    (["--train", 10, "--fonts", "kalam"], "held-out families"),
    (["--train", 10, "--style", "universal", "--fonts", "pool,lora"], "Lora"),
    (["--test", 10, "--fonts", "robotoslab"], "did you mean 'roboto-slab'"),
    (["--test", 10, "--tilt", "-50-10"], "--tilt"),
    (["--test", 10, "--stroke", "5"], "--stroke"),
    (["--test", 10, "--glyph-colour", "2"], "--glyph-colour"),
    (["--test", 10, "--aspect", "0.1-1"], "--aspect"),
    (["--test", 10, "--effects", "2"], "--effects"),
    (["--test", 10, "--overflow", "0.8"], "--overflow"),
    (["--test", 10, "--scribble", "30"], "--scribble"),
    (["--test", 10, "--rings", "1-11"], "--rings"),
    (["--test", 10, "--hollow", "2"], "--hollow"),
    (["--test", 10, "--line-bend", "1.5"], "--line-bend"),
    (["--test", 10, "--typeset", "2"], "--typeset"),
])
def test_font_families_and_scene_knobs_bad_input(tmp_path, args, msg):
    p = cli("gen", "--out", tmp_path / "d", *args, check=False)
    assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_a_font_share_sets_how_often_its_files_are_drawn():
    import random

    from captchalab.gen.fonts import resolve_fonts
    from captchalab.gen.style import draw

    chars = "0123456789abcdefghijklmnopqrstuvwxyz"
    fonts = resolve_fonts(["builtin:0.6", "dejavu-sans"], chars)
    w = [f.weight for f in fonts]
    assert fonts[0].name == "DroidSansMono.ttf" and w[0] == 0.6
    assert len(w) > 2 and all(x == pytest.approx(0.4 / (len(w) - 1)) for x in w[1:])
    assert all(f.weight is None for f in resolve_fonts(["builtin", "dejavu-sans"], chars))
    rng = random.Random(3)
    picks = [draw(Style(), rng, len(w), w).font for _ in range(4000)]
    assert abs(picks.count(0) / 4000 - 0.6) < 0.03 and set(picks) == set(range(len(w)))
    # equal shares pick what the unweighted draw picks, and every other knob draws the same
    a, b = random.Random(5), random.Random(5)
    for _ in range(200):
        da, db = draw(Style(), a, 7), draw(Style(), b, 7, [1 / 7] * 7)
        assert da.font == db.font and da.values == db.values


def test_fonts_with_shares_render_byte_identical_and_record_the_weights(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--fonts", "builtin:0.7,dejavu-serif", "--train", 40, "--shard-size", 16, "-q"]
    cli("gen", "--out", a, *args, "--workers", 1)
    cli("gen", "--out", b, *args, "--workers", 2)
    assert record_hashes(a, "train") == record_hashes(b, "train")
    m = sh.read_manifest(str(a))
    assert m["fonts"][0]["weight"] == 0.7 and sum(f["weight"] for f in m["fonts"]) == pytest.approx(1)
    assert "cumulative weight" in m["seed_rule"]
    fonts = [r["style/font"] for r in sh.iter_split(str(a), m, "train")]
    assert 20 <= fonts.count("DroidSansMono.ttf") < 40
    cli("verify", a)


@pytest.mark.parametrize("fonts,msg", [
    ("builtin:1.5,dejavu", "between 0 and 1"),
    ("builtin:0.6,dejavu:0.5", "the shares sum to 1.1"),
    ("builtin:0.6,dejavu-sans:0.3", "sum to 1 when every spec has one"),
    ("dejavu,dejavu-sans:0.3", "adds no font"),
])
def test_font_shares_bad_input(tmp_path, fonts, msg):
    p = cli("gen", "--out", tmp_path / "d", "--train", 10, "--fonts", fonts, check=False)
    assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_held_out_families_render_into_test_sets(tmp_path):
    cli("gen", "--out", tmp_path / "d", "--test", 12, "--fonts", "held-out", "-q")
    m = sh.read_manifest(str(tmp_path / "d"))
    assert {f["name"].split("[")[0].split("-")[0] for f in m["fonts"]} >= {"Kalam", "Lora"}
    p = cli("fonts")
    assert "held-out kalam" in p.stdout and "set     pool" in p.stdout


def test_mix_draws_a_share_from_another_preset_and_leaves_the_rest_as_they_were(tmp_path):
    mixed, plain = tmp_path / "mixed", tmp_path / "plain"
    cli("gen", "--out", mixed, "--mix", "universal:0.4", "--train", 40, "--workers", 2, "-q")
    cli("gen", "--out", plain, "--train", 40, "--workers", 1, "-q")
    m, p = sh.read_manifest(str(mixed)), sh.read_manifest(str(plain))
    assert m["style"]["mix"]["share"] == 0.4 and "style/mixed" in m["features"]
    assert sum(f.get("mix", False) for f in m["fonts"]) > 100  # universal's fonts, marked
    a, b = list(sh.iter_split(str(mixed), m, "train")), list(sh.iter_split(str(plain), p, "train"))
    flags = [r["style/mixed"] for r in a]
    assert 5 <= sum(flags) <= 30  # ~40 % of 40
    for ra, rb in zip(a, b, strict=True):
        assert ra["label/text"] == rb["label/text"]
        if not ra["style/mixed"]:  # an unmixed sample is the plain dataset's, byte for byte
            assert ra["image/png"] == rb["image/png"] and "style/text_scale" not in ra
        else:
            assert "style/text_scale" in ra
    cli("verify", mixed)
    assert "identical" in cli("show", mixed, "--sample", f"train:{flags.index(1)}",
                              "--out", tmp_path / "s.png").stdout


def test_curriculum_ramps_train_samples_from_the_warmup_preset_to_the_style():
    """With a ramp of 40, train sample i comes from the warm-up preset with probability
    1 - i/40, then never; val and test samples are the style's from the first one."""
    from captchalab.gen.engines import renderer_for
    from captchalab.gen.stream import stream_recipe

    style = preset("universal").with_curriculum(40)
    assert style.mix == preset("default") and style.mix_share == 0
    assert Style.from_json(style.to_json()) == style and style.to_json()["mix"]["ramp"] == 40
    assert [style.mix_share_at("train", i) for i in (0, 10, 40, 99)] == [1, 0.75, 0, 0]
    assert style.mix_share_at("val", 0) == 0
    r = renderer_for(stream_recipe(style=style, seed=3))
    early = [r.render("train", i).mixed for i in range(10)]
    assert sum(early) >= 7  # expected 9.4 of 10
    assert not any(r.render("train", i).mixed for i in range(40, 50))
    assert not any(r.render("val", i).mixed for i in range(10))
    mixed = preset("universal").replace(mixes=(preset("easy"),), mix_shares=(0.3,)).with_curriculum(40)
    assert mixed.mix == preset("easy") and mixed.mix_share_at("train", 40) == 0.3


def test_mix_of_two_presets_keeps_the_samples_one_preset_would_draw(tmp_path):
    """u < 0.3 picks easy both in 'easy:0.3' and in 'easy:0.3,hard:0.3', u >= 0.6 the style
    itself: those samples are byte for byte the single mix's, across worker counts."""
    two, one = tmp_path / "two", tmp_path / "one"
    cli("gen", "--out", two, "--mix", "easy:0.3,hard:0.3", "--train", 60, "--workers", 2, "-q")
    cli("gen", "--out", one, "--mix", "easy:0.3", "--train", 60, "--workers", 1, "-q")
    m, m1 = sh.read_manifest(str(two)), sh.read_manifest(str(one))
    assert [p["share"] for p in m["style"]["mix"]["of"]] == [0.3, 0.3]
    assert "k-th style" in m["features"]["style/mixed"] and "several mixed-in" in m["seed_rule"]
    assert {f.get("mix", 0) for f in m["fonts"]} == {0, True, 2}
    a, b = list(sh.iter_split(str(two), m, "train")), list(sh.iter_split(str(one), m1, "train"))
    flags = [r["style/mixed"] for r in a]
    assert all(8 <= flags.count(k) <= 32 for k in (0, 1, 2))  # ~40 % / 30 % / 30 % of 60
    for ra, rb in zip(a, b, strict=True):
        if ra["style/mixed"] != 2:  # not the hard preset's: as the single mix drew it
            assert ra["style/mixed"] == rb["style/mixed"] and ra["image/png"] == rb["image/png"]
        else:
            assert rb["style/mixed"] == 0 and ra["image/png"] != rb["image/png"]
    cli("verify", two)
    st = Style.from_json(m["style"])
    assert st.mixes == (preset("easy"), preset("hard")) and Style.from_json(st.to_json()) == st
    ramp = st.with_curriculum(10)
    assert [ramp.mix_pick("train", 0, u) for u in (0.2, 0.55, 0.99)] == [1, 2, 2]
    assert [ramp.mix_pick("train", 10, u) for u in (0.2, 0.55, 0.99)] == [1, 2, 0]


@pytest.mark.parametrize("mix,msg", [("universal:2", "share in (0, 1]"),
                                     ("universel:0.5", "did you mean 'universal'"),
                                     ("easy:0.6,hard:0.5", "add up to 1.1"),
                                     ("easy:0.2,easy:0.2", "given twice"),
                                     ("easy:0.2,", "write PRESET:SHARE")])
def test_mix_bad_input(tmp_path, mix, msg):
    p = cli("gen", "--out", tmp_path / "d", "--train", 10, "--mix", mix, check=False)
    assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1


MIX_FILE = """preset = "universal"
typeset = "0-1"
[mix]
of = [{share = 0.2, preset = "poster", typeset = "0-1"}, {share = 0.3, preset = "default"}]
"""


def test_style_file_mix_names_presets_and_changes_their_knobs(tmp_path):
    """A style file's mix part may be a preset plus knobs: the knobs change that part only,
    and the manifest stores the whole style, which reads back equal."""
    f = tmp_path / "r.toml"
    f.write_text(MIX_FILE)
    cli("gen", "--out", tmp_path / "d", "--style-file", f, "--train", 40, "--shard-size", 20, "-q")
    m = sh.read_manifest(str(tmp_path / "d"))
    st = Style.from_json(m["style"])
    assert st.mixes == (preset("poster").replace(typeset=(0, 1)), preset("default"))
    assert st.mix_shares == (0.2, 0.3) and st.typeset == (0, 1)
    rows = sh.iter_split(str(tmp_path / "d"), m, "train")
    seen = {(r["style/mixed"], r.get("style/typeset", 0)) for r in rows}  # default: no scene
    assert {(0, 0), (0, 1), (1, 0), (1, 1)} <= seen and (2, 1) not in seen


@pytest.mark.parametrize("part,msg", [('{share = 0.2, preset = "postr"}', "did you mean 'poster'"),
                                      ('{share = 0.2, preset = "poster", typset = 1}', "unknown style key 'typset'"),
                                      ('{share = 1.5, preset = "poster"}', "each in [0, 1]"),
                                      ('{share = 0.2, preset = "poster", typeset = 3}', "typeset"),
                                      ('{preset = "poster"}', "is not {share, style}")])
def test_style_file_mix_bad_part(tmp_path, part, msg):
    f = tmp_path / "r.toml"
    f.write_text(f"[mix]\nof = [{part}]\n")
    p = cli("gen", "--out", tmp_path / "d", "--style-file", f, "--train", 10, check=False)
    assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def _library_mask(text, glyph_ids=False, spacing=0.0, seed=3):
    """The library's glyphs as render.py asks for them (white or id inks on black), seeded."""
    import captcha.image as ci

    from captchalab.gen.render import SeededSecrets, _glyph_captcha

    cap = _glyph_captcha(ci)(320, 120)
    cap.glyph_ids, cap.spacing, cap.drawn = glyph_ids, spacing, 0
    secrets = SeededSecrets()
    secrets.rng.seed(seed)
    saved, ci.secrets = ci.secrets, secrets
    try:
        return np.asarray(cap.create_captcha_image(text, (255, 255, 255), (0, 0, 0)))
    finally:
        ci.secrets = saved


def test_glyph_captcha_draws_as_the_library_until_asked_and_its_ids_read_back():
    import captcha.image as ci

    from captchalab.gen.compose import MAX_GLYPHS, glyph_ids, glyph_ink
    from captchalab.gen.render import SeededSecrets

    plain = ci.ImageCaptcha(320, 120)
    secrets = SeededSecrets()
    secrets.rng.seed(3)
    saved, ci.secrets = ci.secrets, secrets
    try:
        library = np.asarray(plain.create_captcha_image("k7pw2", (255, 255, 255), (0, 0, 0)))
    finally:
        ci.secrets = saved
    assert np.array_equal(_library_mask("k7pw2"), library)  # ids off, no spacing: the library
    # every id ink counts as fully drawn in the library's mask lookup (luminance >= 130)
    inks = np.array([glyph_ink(k) for k in range(MAX_GLYPHS)])
    assert len({tuple(i) for i in inks}) == MAX_GLYPHS and (inks @ [0.299, 0.587, 0.114]).min() >= 130
    raw = _library_mask("k7pw2", glyph_ids=True)
    # the coverage stays the library's, but for a few edge pixels whose darker colour the
    # library's mask lookup (luminance x 1.97) no longer counts as fully drawn
    changed = (raw[..., 0] != library[..., 0]).sum()
    assert changed <= 0.005 * (library[..., 0] > 0).sum()
    ided = raw.astype(np.float32) / 255
    ids = glyph_ids(*np.moveaxis(ided, -1, 0))
    drawn = ided[..., 0] > 0.1
    found, counts = np.unique(ids[drawn], return_counts=True)
    assert list(found[counts > 50]) == [0, 1, 2, 3, 4]  # stray edge pixels aside, five glyphs
    xs = [np.nonzero(drawn & (ids == k))[1].mean() for k in range(5)]
    assert xs == sorted(xs)  # read back left to right, in the order they were drawn


def test_spacing_widens_the_text_and_stroke_thickens_or_thins_it():
    from captchalab.gen.compose import stroke

    def width(m):
        cols = np.nonzero(m[..., 0].max(0))[0]
        return cols[-1] - cols[0]

    # a gap of a glyph's width after "a" (the library's own overlap, which grows with the
    # mean glyph width, takes some of it back)
    assert width(_library_mask("a1", spacing=1.0)) > 1.2 * width(_library_mask("a1"))
    m = _library_mask("ab12")[..., 0]
    assert (stroke(m, 2) > 0).sum() > (m > 0).sum() > (stroke(m, -1) > 0).sum() > 0
    assert stroke(m, 0) is m


def test_glyph_colours_shapes_and_clutter_colour_hand_worked():
    from captchalab.gen.compose import (
        BLUE_LEVELS,
        GREEN_LEVELS,
        Looks,
        clutter_colour,
        push_contrast_array,
        scene,
    )

    # two 20x20 glyphs drawn in the inks of characters 0 and 1 (twice the 80x40 canvas)
    mask = np.zeros((80, 160), np.uint8)
    green, blue = mask.copy(), mask.copy()
    mask[20:60, 20:60] = mask[20:60, 100:140] = 255
    green[20:60, 20:60], blue[20:60, 20:60] = GREEN_LEVELS[0], BLUE_LEVELS[0]
    green[20:60, 100:140], blue[20:60, 100:140] = GREEN_LEVELS[0], BLUE_LEVELS[1]
    v = {**{k: getattr(Style(), k)[0] for k in KNOBS}, "bg": (255, 255, 255), "fg": (0, 0, 0),
         "fg2": (0, 0, 0), "bg2": (255, 255, 255), "fg_alpha": 255, "glyph_colour": 1.0}
    looks = Looks.draw(np.random.default_rng(0))
    looks = Looks(np.array([[200, 0, 0], [0, 0, 200]] + [[0, 0, 0]] * 10), np.array([0, 90, 0]),
                  looks.shapes, looks.shape_colours, looks.scribbles, looks.rings, looks.hollow,
                  looks.bends)
    im = np.asarray(scene(mask, v, np.random.default_rng(0), (80, 40), (green, blue), looks))
    # the block of 40x40 text glyphs, fitted into 80x40: each glyph keeps its own colour
    left, right = im[20, 15], im[20, 65]
    assert tuple(left) == (200, 0, 0) and tuple(right) == (0, 0, 200)
    assert tuple(im[2, 40]) == (255, 255, 255)  # the background between them
    half = {**v, "glyph_colour": 0.5}
    im = np.asarray(scene(mask, half, np.random.default_rng(0), (80, 40), (green, blue), looks))
    assert tuple(im[20, 15]) == (100, 0, 0)  # halfway from fg (black) to its own colour
    # shapes: all 40 drawn, half under the text and half over it, in their own colours
    many = {**v, "shapes": 40}
    im2 = np.asarray(scene(mask, many, np.random.default_rng(0), (80, 40), (green, blue), looks))
    assert (np.abs(im2.astype(int) - im).sum(-1) > 0).mean() > 0.1
    # clutter: fg unless the knob moves it towards the clutter's own colour
    assert clutter_colour({"clutter_colour": 0.0}, (10, 20, 30), looks) == (10, 20, 30)
    assert clutter_colour({"clutter_colour": 1.0}, (10, 20, 30), looks) == (0, 90, 0)
    # the per-pixel contrast push is push_contrast's, pixel by pixel
    rng = np.random.default_rng(1)
    fills, bgs = rng.integers(0, 256, (50, 3)), rng.integers(0, 256, (50, 3))
    for f, b in zip(fills, bgs, strict=True):
        arr = push_contrast_array(f[None, None].astype(float), b, 120)[0, 0]
        assert np.abs(arr - push_contrast(f, b, 120)).max() <= 1


def test_text_larger_than_the_canvas_is_cut_by_its_edges():
    mask = np.zeros((60, 160), np.uint8)
    mask[5:15, 40:80] = 255  # a 40x10 block: the largest fit in 160x60 is 4x (160x40)
    v = dict(shear=0.0, tilt=0.0, wave=0.0, wave_period=80.0, text_scale=1.25, text_x=0.5,
             text_y=0.5)
    out = place_text(mask, v, (160, 60))  # 200x50, centred: 20 px cut off on either side
    assert out.shape == (60, 160) and out[5:55].min() > 0.99 and out[:4].max() == 0


def test_aspect_stretches_the_text_before_it_is_fitted():
    mask = np.zeros((60, 160), np.uint8)
    mask[5:15, 40:60] = 255  # a 20x10 block
    v = dict(shear=0.0, tilt=0.0, wave=0.0, wave_period=80.0, text_scale=1.0, text_x=0.0,
             text_y=0.5)
    wide = place_text(mask, {**v, "aspect": 2.0}, (160, 60))  # 40x10, fitted 4x: 160x40
    assert wide[10:50].min() > 0.99 and wide[:10].max() == 0 and wide[50:].max() == 0
    narrow = place_text(mask, {**v, "aspect": 0.5}, (160, 60))  # 10x10, fitted 6x: 60x60
    assert narrow[:, :60].min() > 0.99 and narrow[:, 60:].max() == 0
    assert np.array_equal(place_text(mask, {**v, "aspect": 1.0}, (160, 60)),
                          place_text(mask, v, (160, 60)))  # 1: as before the knob existed


def test_effects_switch_clutter_and_degradations_off_per_sample_and_leave_the_rest(tmp_path):
    args = ["--style", "universal", "--test", 60, "--seed", 5, "-q"]
    cli("gen", "--out", tmp_path / "all", *args)
    cli("gen", "--out", tmp_path / "some", *args, "--effects", "0.3")
    cli("gen", "--out", tmp_path / "none", *args, "--effects", "0")
    recs = {}
    for name in ("all", "some", "none"):
        m = sh.read_manifest(str(tmp_path / name))
        recs[name] = list(sh.iter_split(str(tmp_path / name), m, "test"))
    assert "effects" in m["seed_rule"]
    on = off = 0
    for a, s, n in zip(recs["all"], recs["some"], recs["none"], strict=True):
        assert a["label/text"] == s["label/text"] == n["label/text"]
        assert (a["style/effects"], s["style/effects"], n["style/effects"]) == pytest.approx(
            (1.0, 0.3, 0.0))
        for k in KNOBS:  # everything but the effects is drawn as without them
            if k not in EFFECTS and k != "effects":
                assert a[f"style/{k}"] == s[f"style/{k}"] == n[f"style/{k}"], k
        for k, gone in EFFECTS.items():
            assert n[f"style/{k}"] == pytest.approx(gone), k
            if a[f"style/{k}"] != pytest.approx(gone):  # drawn on: kept, or switched off
                kept = s[f"style/{k}"] == a[f"style/{k}"]
                assert kept or s[f"style/{k}"] == pytest.approx(gone), k
                on, off = on + kept, off + (not kept)
    assert 0.2 < on / (on + off) < 0.4  # ~30 % of the effects universal draws stay on
    cli("verify", tmp_path / "some")
    p = cli("show", tmp_path / "some", "--sample", "test:9", "--out", tmp_path / "s.png")
    assert "identical" in p.stdout
