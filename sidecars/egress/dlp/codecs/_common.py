"""What egress's decoders share: the shape of their answer and the test for "worth scanning"."""

from __future__ import annotations

import re

# A decoded piece is worth scanning if it holds a run of text as long as the shortest secret a
# rule reports, or starts like compressed data (which the pipeline then inflates).
_TEXT_RUN = re.compile(rb"[\t\n\r\x20-\x7e]{8}")
MAGICS = (b"\x1f\x8b", b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x28\xb5\x2f\xfd",
          b"BZh", b"\xfd7zXZ\x00", b"PK\x03\x04")
CONTEXT = 96  # bytes of the line before a decoded run kept in front of it: "api_key=" stays with its value


def worth_scanning(b: bytes) -> bool:
    return bool(b) and (b.startswith(MAGICS) or _TEXT_RUN.search(b) is not None)


def line_before(text: bytes, start: int) -> bytes:
    """Up to CONTEXT bytes of ``text``'s line before ``start``."""
    lo = max(0, start - CONTEXT)
    nl = text.rfind(b"\n", lo, start)
    return text[(nl + 1 if nl >= 0 else lo):start]


def line_bounds(text: bytes, start: int, end: int) -> tuple[int, int]:
    s = text.rfind(b"\n", 0, start) + 1
    e = text.find(b"\n", end)
    return s, len(text) if e < 0 else e


def line_pieces(text: bytes, rx, decode) -> list[tuple[int, bytes]]:
    """For codecs that decode the line a unit is on: each line holding a match of ``rx``,
    decoded whole (so "key=" stays with its value), when decoding changes it."""
    out, done = [], -1
    for m in rx.finditer(text):
        if m.start() < done:
            continue
        s, e = line_bounds(text, m.start(), m.end())
        done = e
        dec = decode(text[s:e])
        if dec != text[s:e]:
            out.append((s, dec + b"\n"))
    return out
