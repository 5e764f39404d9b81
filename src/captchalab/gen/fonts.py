"""Font sets: resolve `--fonts` specs to files, check they are readable and cover the charset."""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass

from captchalab.core.errors import UsageError, suggest


def _captcha_data() -> str:
    import captcha.image
    return captcha.image.DATA_DIR


def _mpl_fonts() -> str:
    import matplotlib
    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")


# Font families of the `fontpkg-*` packages captchalab depends on (pyproject.toml). HELD_OUT ones
# are never trained on: the transfer benchmark tests on them, so training with one is refused.
HELD_OUT = ("barlow-condensed", "bitter", "ibm-plex-sans", "jetbrains-mono", "kalam", "lora",
            "quicksand", "righteous")


def family_files(slug: str) -> list[str]:
    """A fontpkg family's regular, bold and italic files (variable fonts at their default
    instance); other weights add little a captcha can show."""
    import fontpkg

    fam = fontpkg.families()[slug]
    return sorted(str(f.path) for f in fam.files if f.weight in (None, 400, 700))


def families() -> list[str]:
    """Slugs of the installed fontpkg families, sorted."""
    import fontpkg

    return sorted(fontpkg.families())


def _pool() -> list[str]:
    return [p for slug in families() if slug not in HELD_OUT for p in family_files(slug)]


def _held_out() -> list[str]:
    return [p for slug in HELD_OUT for p in family_files(slug)]


# Named sets. DejaVu "Display" faces hold only a few glyphs, so they are left out. Each fontpkg
# family is a set of its own under its slug (e.g. roboto-slab).
NAMED_SETS = {
    "builtin": lambda: [os.path.join(_captcha_data(), "DroidSansMono.ttf")],
    "dejavu": lambda: _pick(_mpl_fonts(), "DejaVu", exclude="Display"),
    "dejavu-sans": lambda: _pick(_mpl_fonts(), "DejaVuSans-", also="DejaVuSans.ttf"),
    "dejavu-serif": lambda: _pick(_mpl_fonts(), "DejaVuSerif", exclude="Display"),
    "dejavu-mono": lambda: _pick(_mpl_fonts(), "DejaVuSansMono"),
    "stix": lambda: _pick(_mpl_fonts(), "STIXGeneral"),
    "pool": _pool,  # every fontpkg family except the held-out ones
    "held-out": _held_out,
}


def held_out_paths() -> set[str]:
    return {os.path.abspath(p) for p in _held_out()}


def named_sets() -> list[str]:
    return [*NAMED_SETS, *families()]

FONT_EXTS = (".ttf", ".otf", ".ttc")


def _pick(folder: str, prefix: str, exclude: str | None = None, also: str | None = None):
    names = sorted(n for n in os.listdir(folder)
                   if (n.startswith(prefix) or n == also) and n.endswith(".ttf")
                   and not (exclude and exclude in n))
    return [os.path.join(folder, n) for n in names]


@dataclass(frozen=True)
class Font:
    name: str  # short name stored in each record (file name, made unique)
    path: str
    sha256: str

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "sha256": self.sha256}


def resolve_fonts(specs, charset: str) -> list[Font]:
    """Expand font specs (named sets, files, folders, globs) into checked fonts, in a stable order."""
    paths: list[str] = []
    fontpkg_families = families()
    for spec in specs:
        if spec in NAMED_SETS:
            found = NAMED_SETS[spec]()
        elif spec in fontpkg_families:
            found = family_files(spec)
        elif os.path.isdir(spec):
            found = sorted(os.path.join(spec, n) for n in os.listdir(spec)
                           if n.lower().endswith(FONT_EXTS))
            if not found:
                raise UsageError(f"fonts: folder {spec} holds no .ttf/.otf files", param="fonts")
        elif any(ch in spec for ch in "*?["):
            found = sorted(p for p in glob.glob(spec) if p.lower().endswith(FONT_EXTS))
            if not found:
                raise UsageError(f"fonts: glob {spec!r} matches no .ttf/.otf files", param="fonts")
        elif os.path.isfile(spec):
            found = [spec]
        else:
            raise UsageError(
                f"fonts: '{spec}' is not a font family, set, file, folder or glob"
                f"{suggest(spec, named_sets())} (sets: {', '.join(NAMED_SETS)}; families: "
                "`captchalab fonts` lists them)", param="fonts")
        paths.extend(os.path.abspath(p) for p in found)
    paths = list(dict.fromkeys(paths))
    fonts = []
    names: set[str] = set()
    for p in paths:
        _check_font(p, charset)
        name = os.path.basename(p)
        if name in names:  # same file name in two folders: keep the folder in the name
            name = os.path.join(os.path.basename(os.path.dirname(p)), name)
        names.add(name)
        fonts.append(Font(name, p, file_sha256(p)))
    return fonts


def _check_font(path: str, charset: str) -> None:
    from PIL import ImageFont
    try:
        font = ImageFont.truetype(path, 32)
    except OSError as e:
        raise UsageError(f"fonts: cannot read font file {path}: {e}", param="fonts") from None
    missing = missing_glyphs(font, charset)
    if missing:
        raise UsageError(
            f"fonts: {path} has no glyph for {missing!r}; choose fonts that cover the charset",
                         param="fonts")


def missing_glyphs(font, chars: str) -> str:
    """Characters that render as the font's 'missing glyph' box (or nothing at all)."""
    def shape(c):
        m = font.getmask(c)
        return (m.size, bytes(m))
    notdef = shape("\U0010fffd")  # a private-use code point no captcha font maps
    return "".join(c for c in chars if shape(c) == notdef or shape(c)[0][0] == 0)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
