"""Text normalisation: invisible characters removed (zero-width spaces and joiners, soft
hyphens, bidi controls, variation selectors, tag characters), NFKC (fullwidth and other
compatibility forms become ASCII), and UTF-16 (little or big endian) read as text, whole (a BOM,
or NUL bytes in every other place) or in runs inside other bytes."""

from __future__ import annotations

import re
import unicodedata

import re2

from ._common import non_ascii

NAME = "text"
CANDIDATES = [rb"(?:[\x09\x0a\x0d\x20-\x7e]\x00){6}", rb"(?:\x00[\x09\x0a\x0d\x20-\x7e]){6}"]

_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e0fff]"
)
# The same characters for re2 over the UTF-8 bytes: a test before decoding anything.
_INVISIBLE_UTF8 = re2.compile(_INVISIBLE.pattern.encode("utf-8"))
_LE = re2.compile(rb"(?:[\x09\x0a\x0d\x20-\x7e]\x00){6,}")
_BE = re2.compile(rb"(?:\x00[\x09\x0a\x0d\x20-\x7e]){6,}")


_STABLE: dict[str, bool] = {}  # a character's verdict, computed once per process


def _stable(c: str) -> bool:
    """Whether ``c`` is left as it is by normalise wherever it stands: not invisible, its own
    NFKC form, and not one that composes with what precedes it (combining and other marks,
    Hangul vowel and trailing jamo)."""
    v = _STABLE.get(c)
    if v is None:
        v = not (
            _INVISIBLE.match(c)
            or unicodedata.normalize("NFKC", c) != c
            or unicodedata.category(c).startswith("M")
            or 0x1160 <= ord(c) <= 0x11FF
            or 0xD7B0 <= ord(c) <= 0xD7FF
        )
        if len(_STABLE) < 65536:
            _STABLE[c] = v
    return v


def normalise(data: bytes, rest: bytes | None = None) -> bytes | None:
    """The text without invisible characters and in NFKC, or None when that changes nothing.
    ``rest``: ``non_ascii(data)``, when the caller has it."""
    if data.isascii():
        return None
    # ASCII is NFKC and visible; the non-ASCII characters alone (the ASCII bytes deleted, which
    # leaves every UTF-8 sequence whole) say whether there is anything to do: in most text there
    # is not, and a few distinct characters are checked instead of the whole text.
    rest = non_ascii(data) if rest is None else rest
    if all(_stable(c) for c in set(rest.decode("utf-8", "replace"))):
        return None
    s = data.decode("utf-8", "replace")
    t = _INVISIBLE.sub("", s) if _INVISIBLE_UTF8.search(data) is not None else s
    if not unicodedata.is_normalized("NFKC", t):
        t = unicodedata.normalize("NFKC", t)
    if t == s:
        return None
    return t.encode("utf-8", "surrogatepass")


def utf16_whole(data: bytes) -> bytes | None:
    """``data`` read as UTF-16 when it says so (a BOM) or looks so (NULs in every other byte)."""
    if len(data) < 4:
        return None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        enc = "utf-16"
    else:
        head = data[:4096]
        odd, even = head[1::2].count(0), head[0::2].count(0)
        if max(odd, even) < len(head) // 4 or min(odd, even) > max(odd, even) // 4:
            return None
        enc = "utf-16-le" if odd > even else "utf-16-be"
    return data.decode(enc, "replace").encode("utf-8", "surrogatepass")


def pieces(text: bytes) -> list[tuple[int, bytes]]:
    """UTF-16 runs of ASCII inside other bytes, as text."""
    out = []
    for rx, enc in ((_LE, "utf-16-le"), (_BE, "utf-16-be")):
        for m in rx.finditer(text):
            out.append((m.start(), m.group(0).decode(enc, "replace").encode() + b"\n"))
    return out
