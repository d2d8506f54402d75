"""Hex in its common forms: plain runs (either case, odd length decoded as far as it goes),
bytes separated by colons, spaces or dashes (``de:ad:be:ef``), ``\\xde\\xad`` escapes and
``0xde, 0xad`` lists. Decoded bytes need not be text."""

from __future__ import annotations

import re2

from ._common import emit, worth_scanning
from .gitleaks import find_all

NAME = "hex"
CANDIDATES = [
    rb"[0-9A-Fa-f]{16}",
    rb"[0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}",
    rb"[0-9A-Fa-f]{2} [0-9A-Fa-f]{2} [0-9A-Fa-f]{2} [0-9A-Fa-f]{2} ",
    rb"(?:\\x[0-9A-Fa-f]{2}){4}",
    rb"(?:0[xX][0-9A-Fa-f]{2}[, ]*){4}",
]

_RUNS = re2.compile(
    rb"(?:\\x[0-9A-Fa-f]{2}){4,}"
    rb"|(?:0[xX][0-9A-Fa-f]{2}[, ]*){4,}"
    rb"|[0-9A-Fa-f]{2}(?:[: -][0-9A-Fa-f]{2}){7,}"
    rb"|[0-9A-Fa-f]{16,}"
)
_NOT_HEX = bytes(sorted(set(range(256)) - set(b"0123456789abcdefABCDEF")))


def decode(run: bytes) -> bytes:
    # the prefixes (\x, 0x) and separators dropped with bytes methods: a regex substitution
    # per run cost more than all the rest on text full of checksums
    if b"x" in run or b"X" in run:
        run = run.replace(b"\\x", b"").replace(b"0x", b"").replace(b"0X", b"")
    digits = run.translate(None, _NOT_HEX)
    if len(digits) % 2:
        digits = digits[:-1]
    try:
        return bytes.fromhex(digits.decode("ascii"))
    except ValueError:
        return b""


def pieces(text: bytes) -> list[tuple[int, bytes]]:
    out = []
    for (start, end), *_ in find_all(_RUNS, text):
        run = text[start:end]
        dec = decode(run)
        if len(run) > 16 and len(run) % 2 and run[0] in b"0123456789abcdefABCDEF":
            # an odd plain run: the other pairing (a hex digit glued before the run) too
            alt = decode(run[1:])
            if worth_scanning(alt) and not worth_scanning(dec):
                dec = alt
        if worth_scanning(dec):
            out.append(emit(text, start, dec))
    return out
