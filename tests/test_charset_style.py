"""Charset parsing/encoding and Style knobs, presets, files and per-sample draws."""

import json
import random

import pytest

from captchalab.core.charset import Charset, parse_charset
from captchalab.core.errors import UsageError
from captchalab.gen.style import KNOBS, Style, draw, parse_range, preset, resolve_style


def test_charset_ranges_literals_and_named():
    assert parse_charset("0-9a-z") == "0123456789abcdefghijklmnopqrstuvwxyz"
    assert parse_charset("ABC23") == "ABC23"
    assert parse_charset("hex") == "0123456789abcdef"
    assert parse_charset("a-c-") == "abc-"  # a trailing '-' is literal
    assert parse_charset("+-*") == "+-*"  # '-' between non-alphanumerics is literal


@pytest.mark.parametrize("spec,msg", [("", "empty"), ("0-9a-z0", "'0' more than once"),
                                      ("ab c", "non-space"), ("z-a", "backwards")])
def test_charset_refusals(spec, msg):
    with pytest.raises(UsageError, match=msg):
        parse_charset(spec)


def test_charset_ids_reserve_blank():
    cs = Charset.parse("abc")
    assert cs.encode("cab") == [3, 1, 2]
    assert cs.decode([0, 3, 0, 1, 2, 0]) == "cab"
    assert cs.num_classes == 4
    with pytest.raises(UsageError, match="'d'"):
        cs.encode("abd")


def test_parse_range_forms_and_bounds():
    assert parse_range("rotate", "10-40") == (10.0, 40.0)
    assert parse_range("rotate", 15) == (15.0, 15.0)
    assert parse_range("noise_dots", [0, 60]) == (0, 60)
    assert parse_range("warp_dx", "0.1-0.5") == (0.1, 0.5)
    for bad in ("40-10", "-5", "abc", "200", "nan"):
        with pytest.raises(UsageError, match="^rotate: "):  # the parameter, as Python names it
            parse_range("rotate", bad)
    with pytest.raises(UsageError, match="^noise_dots: ") as e:
        parse_range("noise_dots", "1.5")
    assert e.value.for_cli().startswith("--noise-dots: '1.5' is not")  # the CLI names the flag


def test_unknown_preset_and_key_suggest_nearest():
    with pytest.raises(UsageError, match="did you mean 'hard'"):
        preset("hrad")
    with pytest.raises(UsageError, match="did you mean 'rotate'"):
        resolve_style("default", overrides={"rotat": 3})


def test_style_file_toml_and_json_layer_over_preset(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('preset = "easy"\nrotate = "5-20"\nnoise-dots = 7\n')
    st = resolve_style("default", str(toml), {"noise_curves": "3"})
    assert st.rotate == (5.0, 20.0) and st.noise_dots == (7, 7) and st.noise_curves == (3, 3)
    assert st.space_prob == preset("easy").space_prob
    js = tmp_path / "s.json"
    js.write_text(json.dumps({"fonts": ["dejavu"], "warp_dy": [0, 0.2]}))
    assert resolve_style("hard", str(js)).fonts == ("dejavu",)
    js.write_text(json.dumps({"nosie_dots": 3}))
    with pytest.raises(UsageError, match="did you mean 'noise_dots'"):
        resolve_style("default", str(js))


def test_every_preset_is_valid_and_round_trips():
    for name in ("default", "easy", "hard", "fonts", "varied"):
        st = preset(name)
        assert Style.from_json(st.to_json()) == st


def test_draws_are_per_knob_independent():
    """Widening one knob's range must not change what any other knob draws."""
    a = draw(Style(), random.Random(7), 3)
    b = draw(Style().replace(rotate=(0.0, 60.0)), random.Random(7), 3)
    assert a.font == b.font
    assert a.values.keys() == b.values.keys() == {k for k in KNOBS if not KNOBS[k].scene}
    for name in a.values:
        if name != "rotate":
            assert a.values[name] == b.values[name], name
    assert a.values["rotate"] == 30.0 and 0 <= b.values["rotate"] <= 60


@pytest.mark.parametrize("name", ["varied", "universal"])
def test_draws_stay_in_range(name):
    st = preset(name)
    rng = random.Random(1)
    for _ in range(200):
        d = draw(st, rng, 5)
        assert 0 <= d.font < 5
        assert set(d.values) == {k for k in KNOBS if st.composed or not KNOBS[k].scene}
        for name, knob in ((k, KNOBS[k]) for k in d.values):
            lo, hi = getattr(st, name)
            vals = d.values[name] if isinstance(d.values[name], tuple) else (d.values[name],)
            assert all(lo <= v <= hi and isinstance(v, knob.kind) for v in vals), name
