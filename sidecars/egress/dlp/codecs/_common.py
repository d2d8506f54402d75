"""What egress's decoders share: the shape of their answer and the test for "worth scanning"."""

from __future__ import annotations

import re

# A decoded piece is worth scanning if it holds a run of text as long as the shortest secret a
# rule reports, or starts like compressed data (which the pipeline then inflates).
_TEXT_RUN = re.compile(rb"[\t\n\r\x20-\x7e]{8}")
MAGICS = (
    b"\x1f\x8b",
    b"\x78\x01",
    b"\x78\x5e",
    b"\x78\x9c",
    b"\x78\xda",
    b"\x28\xb5\x2f\xfd",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"PK\x03\x04",
)
CONTEXT = 96  # bytes of the line before a decoded run kept in front of it: "api_key=" stays with its value


_ASCII = bytes(range(128))


def non_ascii(data: bytes) -> bytes:
    """``data`` with its ASCII bytes deleted (every UTF-8 sequence stays whole): what the checks
    for non-ASCII characters and magics read instead of the whole text, which is mostly ASCII.
    A caller that asks several checks about one text computes it once and hands it on."""
    return data.translate(None, _ASCII)


def worth_scanning(b: bytes) -> bool:
    return bool(b) and (b.startswith(MAGICS) or _TEXT_RUN.search(b) is not None)


_NOT_TEXT = re.compile(rb"[^\t\n\r\x20-\x7e]+")


def textual(b: bytes) -> bytes:
    """Decoded bytes as a rule reads them: UTF-8 text as it is; other bytes cut into their text
    runs, a line each (a secret inside binary then ends at a line end, as gitleaks' rules want)."""
    try:
        b.decode("utf-8")
        return b
    except UnicodeDecodeError:
        return _NOT_TEXT.sub(b"\n", b)


def emit(text: bytes, start: int, dec: bytes) -> tuple[int, bytes]:
    """The view of a run decoded at ``start``: compressed data alone (the pipeline inflates it
    next), anything else after the line before it (so "key=" stays with its value)."""
    if dec.startswith(MAGICS):
        return start, dec
    return start, line_before(text, start) + textual(dec) + b"\n"


def line_before(text: bytes, start: int) -> bytes:
    """Up to CONTEXT bytes of ``text``'s line before ``start``."""
    lo = max(0, start - CONTEXT)
    nl = text.rfind(b"\n", lo, start)
    return text[(nl + 1 if nl >= 0 else lo) : start]


def line_bounds(text: bytes, start: int, end: int) -> tuple[int, int]:
    s = text.rfind(b"\n", 0, start) + 1
    e = text.find(b"\n", end)
    return s, len(text) if e < 0 else e


def magic_tail(dec: bytes) -> bytes:
    """Compressed data that starts inside ``dec`` (after a prefix), or b""."""
    if dec.isascii() and b"BZh" not in dec:
        return b""
    at = min((i for i in (dec.find(m) for m in MAGICS) if i >= 0), default=-1)
    return dec[at:] if at >= 0 else b""


def line_pieces(text: bytes, rx, decode, *decodes) -> list[tuple[int, bytes]]:
    """For codecs that decode the line a unit is on: each line holding a match of ``rx``,
    decoded whole (so "key=" stays with its value), when decoding changes it; binary in it
    as text runs, and compressed data in it alone. ``decodes``: other readings to try too."""
    out, done = [], -1
    for m in rx.finditer(text):
        if m.start() < done:
            continue
        s, e = line_bounds(text, m.start(), m.end())
        done = e
        line = text[s:e]
        for d in (decode,) + decodes:
            dec = d(line)
            if dec == line:
                continue
            out.append((s, textual(dec) + b"\n"))
            tail = magic_tail(dec)
            if tail:
                out.append((s, tail))
    return out
