"""JSON and JavaScript string escapes: ``\\uXXXX`` (surrogate pairs joined), ``\\u{X...}``,
``\\xXX``, octal ``\\101``, and the one-letter ones (``\\n``, ``\\/``, ...), on the line where they
are: a secret cut by ``\\n`` into wrapped lines, or spelled in escapes, is whole again."""

from __future__ import annotations

import re

from ._common import line_pieces

NAME = "escapes"
CANDIDATES = [
    rb"\\[uU][0-9A-Fa-f]{4}",
    rb"\\u\{[0-9A-Fa-f]{1,6}\}",
    rb"\\x[0-9A-Fa-f]{2}",
    rb"\\[0-7]{3}",
    rb"\\[nrtbfv/\x22'\\]",
]

_ANY = re.compile(rb"\\(?:[uU][0-9A-Fa-f]{4}|u\{[0-9A-Fa-f]{1,6}\}|x[0-9A-Fa-f]{2}|[0-7]{3}|[nrtbfv/\x22'\\])")
_UNIT = re.compile(
    rb"\\[uU]([dD][89abAB][0-9A-Fa-f]{2})\\[uU]([dD][c-fC-F][0-9A-Fa-f]{2})"
    rb"|\\[uU]([0-9A-Fa-f]{4})|\\u\{([0-9A-Fa-f]{1,6})\}|\\x([0-9A-Fa-f]{2})|\\([0-7]{3})|\\(.)"
)
_ONE = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f", b"v": b"\v"}


def _cp(cp: int) -> bytes:
    if 0xD800 <= cp <= 0xDFFF or cp > 0x10FFFF:
        cp = 0xFFFD
    return chr(cp).encode()


def decode(line: bytes) -> bytes:
    def one(m) -> bytes:
        hi, lo, u4, ub, x2, octal, ch = m.groups()
        if hi:
            return _cp(0x10000 + ((int(hi, 16) - 0xD800) << 10) + int(lo, 16) - 0xDC00)
        if u4 or ub:
            return _cp(int(u4 or ub, 16))
        if x2:
            return bytes([int(x2, 16)])
        if octal:
            return bytes([int(octal, 8) & 0xFF])
        return _ONE.get(ch, ch)

    return _UNIT.sub(one, line)


_LATIN1 = re.compile(rb"\\[uU]00([0-9A-Fa-f]{2})")


def decode_bytes(line: bytes) -> bytes:
    """The other reading: a u00XX escape as the byte XX (binary written as a JS string)."""
    return decode(_LATIN1.sub(lambda m: b"\\x" + m.group(1), line))


def pieces(text: bytes) -> list[tuple[int, bytes]]:
    return line_pieces(text, _ANY, decode, decode_bytes)
