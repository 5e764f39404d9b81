"""Charset: the one text <-> id encoding everywhere; ids are 1..K and 0 is the CTC blank/padding."""

from __future__ import annotations

from dataclasses import dataclass

from captchalab.core.errors import UsageError

BLANK_ID = 0  # CTC blank and label padding; never a character

NAMED = {
    "digits": "0-9",
    "lower": "a-z",
    "upper": "A-Z",
    "alnum": "0-9a-zA-Z",
    "hex": "0-9a-f",
}


def parse_charset(spec: str) -> str:
    """Expand a charset spec into its characters, in order.

    `spec` is a named set (digits, lower, upper, alnum, hex), or a string of literal
    characters and ranges such as "0-9a-z" or "ABCDEFGHJKLMNPQRSTUVWXYZ23456789". A '-' is
    a range between two letters or digits of the same kind; anywhere else it is literal.
    Duplicates, whitespace and an empty result are refused.
    """
    spec = NAMED.get(spec, spec)
    chars: list[str] = []
    i = 0
    while i < len(spec):
        a = spec[i]
        if i + 2 < len(spec) and spec[i + 1] == "-" and _same_kind(a, spec[i + 2]):
            b = spec[i + 2]
            if ord(b) < ord(a):
                raise UsageError(f"charset: range '{a}-{b}' runs backwards; write '{b}-{a}'",
                                 param="charset")
            chars.extend(chr(c) for c in range(ord(a), ord(b) + 1))
            i += 3
        else:
            chars.append(a)
            i += 1
    if not chars:
        raise UsageError("charset is empty; give characters or ranges such as '0-9a-z'",
                         param="charset")
    for c in chars:
        if c.isspace() or not c.isprintable():
            raise UsageError(f"charset contains {c!r}; only printable, non-space characters are allowed",
                             param="charset")
    seen: set[str] = set()
    for c in chars:
        if c in seen:
            raise UsageError(f"charset has '{c}' more than once; each character may appear once",
                             param="charset")
        seen.add(c)
    return "".join(chars)


def _same_kind(a: str, b: str) -> bool:
    return (a.isdigit() and b.isdigit()) or (a.islower() and b.islower()) or (
        a.isupper() and b.isupper())


@dataclass(frozen=True)
class Charset:
    """An ordered set of characters; character chars[i] has id i + 1."""

    chars: str

    @classmethod
    def parse(cls, spec: str) -> Charset:
        return cls(parse_charset(spec))

    def __post_init__(self):
        object.__setattr__(self, "_ids", {c: i + 1 for i, c in enumerate(self.chars)})

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def num_classes(self) -> int:
        """Output classes of a CTC model: K characters + the blank."""
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError as e:
            raise UsageError(
                f"label {text!r} has {e.args[0]!r}, which is not in the charset {self.chars!r}"
            ) from None

    def decode(self, ids) -> str:
        """Ids -> text; blanks/padding (0) are skipped."""
        return "".join(self.chars[i - 1] for i in ids if i != BLANK_ID)

    def missing(self, text: str) -> str:
        """Characters of `text` that are not in the charset, in order of first appearance."""
        return "".join(dict.fromkeys(c for c in text if c not in self._ids))

    def to_json(self) -> dict:
        return {
            "chars": self.chars,
            "size": len(self.chars),
            "blank_id": BLANK_ID,
            "padding_id": BLANK_ID,
            "rule": "chars[i] has label id i+1; id 0 is the CTC blank and the label padding",
        }

    @classmethod
    def from_json(cls, d: dict) -> Charset:
        return cls(d["chars"])
