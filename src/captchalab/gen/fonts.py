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
    weight: float | None = None  # chance a sample uses it; None: uniform over the list

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "sha256": self.sha256,
                **({"weight": self.weight} if self.weight is not None else {})}


def split_share(spec: str) -> tuple[str, float | None]:
    """'builtin:0.3' -> ('builtin', 0.3): the spec and the share of samples its files take;
    (spec, None) without one (a colon followed by no number is part of a path)."""
    head, sep, tail = spec.rpartition(":")
    if not (sep and head):
        return spec, None
    try:
        share = float(tail)
    except ValueError:
        return spec, None
    if not 0 < share < 1:  # also refuses nan
        raise UsageError(f"fonts: '{spec}'; a share after ':' is between 0 and 1 exclusive, "
                         "e.g. builtin:0.3", param="fonts")
    return head, share


def _weights(groups: list[tuple[list[int], float | None]], n: int, specs) -> list[float] | None:
    """Per-file chances: a spec with a share splits it evenly over its files, the files of
    specs without one split the rest evenly; None when no spec has a share."""
    if all(share is None for _, share in groups):
        return None
    total = sum(share for _, share in groups if share is not None)
    rest = [i for idx, share in groups if share is None for i in idx]
    if total > 1 + 1e-9 or (rest and total > 1 - 1e-9) or (not rest and abs(total - 1) > 1e-9):
        raise UsageError(f"fonts: {','.join(specs)}; the shares sum to {total:g}: they must "
                         "leave some of 1 to the specs without a share, or sum to 1 when every "
                         "spec has one", param="fonts")
    w = [0.0] * n
    for idx, share in groups:
        for i in idx:
            w[i] = share / len(idx) if share is not None else (1 - total) / len(rest)
    return w


def resolve_fonts(specs, charset: str) -> list[Font]:
    """Expand font specs (named sets, files, folders, globs, each optionally SPEC:SHARE) into
    checked fonts, in a stable order; a file listed twice counts for its first spec."""
    fontpkg_families = families()
    owner: dict[str, int] = {}  # path -> the spec it counts for, in first-listed order
    shares = []
    for k, full in enumerate(specs):
        spec, share = split_share(full)
        shares.append(share)
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
        for p in found:
            owner.setdefault(os.path.abspath(p), k)
    paths = list(owner)
    groups = [([i for i, p in enumerate(paths) if owner[p] == k], share)
              for k, share in enumerate(shares)]
    for (idx, share), spec in zip(groups, specs, strict=True):
        if share is not None and not idx:
            raise UsageError(f"fonts: '{spec}' adds no font the specs before it did not list; "
                             "give its share to that earlier spec", param="fonts")
    weights = _weights(groups, len(paths), specs)
    fonts = []
    names: set[str] = set()
    for i, p in enumerate(paths):
        _check_font(p, charset)
        name = os.path.basename(p)
        if name in names:  # same file name in two folders: keep the folder in the name
            name = os.path.join(os.path.basename(os.path.dirname(p)), name)
        names.add(name)
        fonts.append(Font(name, p, file_sha256(p), weights[i] if weights else None))
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
