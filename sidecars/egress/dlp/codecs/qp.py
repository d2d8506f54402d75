"""Quoted-printable (RFC 2045): ``=XX`` bytes and ``=`` soft line breaks, over the block of
lines that holds them (a soft break joins a secret cut at 76 columns)."""

from __future__ import annotations

import binascii

import re2

from ._common import line_bounds

NAME = "qp"
CANDIDATES = [rb"=[0-9A-F]{2}=[0-9A-F]{2}", rb"=3D", rb"=\r?\n"]

_ANY = re2.compile(rb"=[0-9A-F]{2}=[0-9A-F]{2}|=3D|=\r?\n")


def decode(block: bytes) -> bytes:
    return binascii.a2b_qp(block)


def pieces(text: bytes) -> list[tuple[int, bytes]]:
    out, done = [], -1
    for m in _ANY.finditer(text):
        if m.start() < done:
            continue
        s, e = line_bounds(text, m.start(), m.start() + 1)
        # a soft break continues the block onto the next line
        while e < len(text) and (text[e - 1:e] == b"=" or text[e - 2:e] == b"=\r"):
            e = line_bounds(text, e + 1, e + 1)[1]
        done = e
        dec = decode(text[s:e])
        if dec != text[s:e]:
            out.append((s, dec + b"\n"))
    return out
