"""Percent-encoding: ``%XX`` bytes (UTF-8 or not), ``%uXXXX`` code points, on the line where they
are, so "key=" stays with its value. ``+`` is kept as it is (a query's ``+`` is a space only in
forms; the raw text is scanned too)."""

from __future__ import annotations

import re

from ._common import line_pieces

NAME = "percent"
CANDIDATES = [rb"%[0-9A-Fa-f]{2}", rb"%[uU][0-9A-Fa-f]{4}"]

_ANY = re.compile(rb"%(?:[0-9A-Fa-f]{2}|[uU][0-9A-Fa-f]{4})")
_UNIT = re.compile(rb"%[uU]([0-9A-Fa-f]{4})|%([0-9A-Fa-f]{2})")


def decode(line: bytes) -> bytes:
    def one(m) -> bytes:
        if m.group(1):
            cp = int(m.group(1), 16)
            return chr(cp).encode("utf-8", "surrogatepass") if not 0xD800 <= cp <= 0xDFFF else "\ufffd".encode()
        return bytes([int(m.group(2), 16)])

    return _UNIT.sub(one, line)


def pieces(text: bytes) -> list[tuple[int, bytes]]:
    return line_pieces(text, _ANY, decode)
