"""Quoted-printable (RFC 2045): ``=XX`` bytes and ``=`` soft line breaks, over the block of
lines that holds them (a soft break joins a secret cut at 76 columns)."""

from __future__ import annotations

import binascii

import re2

from ._common import line_bounds, magic_tail, textual

NAME = "qp"
CANDIDATES = [rb"=[0-9A-F]{2}=[0-9A-F]{2}", rb"=3D", rb"=\r?\n"]

_ANY = re2.compile(rb"=[0-9A-F]{2}=[0-9A-F]{2}|=3D|=\r?\n")
_UNIT = re2.compile(rb"=[0-9A-F]{2}")


def decode(block: bytes) -> bytes:
    return binascii.a2b_qp(block)


def pieces(text: bytes) -> list[tuple[int, bytes]]:
    out, done = [], -1
    for m in _ANY.finditer(text):
        if m.start() < done:
            continue
        s, e = line_bounds(text, m.start(), m.start() + 1)
        for _ in range(2):  # and the lines before it: what the block continues (wrapped base64)
            if s > 0 and s - 1 > done:
                s = line_bounds(text, s - 1, s - 1)[0]
        # a soft break, or a next line with encoded bytes too, continues the block
        while e < len(text):
            ne = line_bounds(text, e + 1, e + 1)[1]
            if not (text[e - 1:e] == b"=" or text[e - 2:e] == b"=\r" or _UNIT.search(text, e + 1, ne)):
                break
            e = ne
        for _ in range(2):  # and the lines after it: a nested soft break continues there
            if e < len(text):
                e = line_bounds(text, e + 1, e + 1)[1]
        done = e
        for start in (s, m.start()) if m.start() > s else (s,):
            # from the first unit too: a "=" glued before it ("v==73") misleads the decoder
            dec = text[s:start] + decode(text[start:e])
            if dec == text[s:e]:
                continue
            out.append((s, textual(dec) + b"\n"))
            tail = magic_tail(dec)
            if tail:
                out.append((s, tail))  # compressed bytes after a prefix: alone, for the next level
    return out
