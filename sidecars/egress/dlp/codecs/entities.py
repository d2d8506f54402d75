"""HTML and XML character references (``&#103;``, ``&#x67;``, ``&amp;``, with or without the
``;``), on the line where they are."""

from __future__ import annotations

import html

import re2

from ._common import line_pieces

NAME = "entities"
CANDIDATES = [rb"&#[0-9]{1,7}", rb"&#[xX][0-9A-Fa-f]{1,6}", rb"&[A-Za-z][A-Za-z0-9]+;"]

_ANY = re2.compile(rb"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z]{2,31};)")


def decode(line: bytes) -> bytes:
    return html.unescape(line.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogatepass")


def pieces(text: bytes) -> list[tuple[int, bytes]]:
    return line_pieces(text, _ANY, decode)
