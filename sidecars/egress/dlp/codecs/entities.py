"""HTML and XML character references (``&#103;``, ``&#x67;``, ``&amp;``, with or without the
``;``), on the line where they are."""

from __future__ import annotations

import html
import re

from ._common import line_pieces

NAME = "entities"
CANDIDATES = [rb"&#[0-9]{1,7}", rb"&#[xX][0-9A-Fa-f]{1,6}", rb"&[A-Za-z][A-Za-z0-9]+;"]

_ANY = re.compile(rb"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z]{2,31};)")


_REF = re.compile(rb"&#([0-9]{1,7});?|&#[xX]([0-9A-Fa-f]{1,6});?|&[A-Za-z][A-Za-z0-9]+;")


def _one(m) -> bytes:
    dec, hx = m.group(1), m.group(2)
    if dec is None and hx is None:  # a named reference
        return html.unescape(m.group(0).decode("ascii")).encode("utf-8", "surrogatepass")
    n = int(dec) if dec is not None else int(hx, 16)
    if n < 256:
        return bytes([n])  # a byte, so binary spelled in references stays binary
    return chr(n).encode() if n <= 0x10FFFF and not 0xD800 <= n <= 0xDFFF else "\ufffd".encode()


def decode(line: bytes) -> bytes:
    return _REF.sub(_one, line)


def pieces(text: bytes) -> list[tuple[int, bytes]]:
    return line_pieces(text, _ANY, decode)
