"""Quoted-printable (RFC 2045): ``=XX`` bytes and ``=`` soft line breaks, over the block of
lines that holds them (a soft break joins a secret cut at 76 columns)."""

from __future__ import annotations

import binascii
import re

from ._common import line_bounds, magic_tail, textual

NAME = "qp"
CANDIDATES = [rb"=[0-9A-F]{2}=[0-9A-F]{2}", rb"=3D", rb"=\r?\n"]

# Texts up to this size are also decoded whole when their QP units make more than one block.
WHOLE_MAX = 1 << 20

_ANY = re.compile(rb"=[0-9A-F]{2}=[0-9A-F]{2}|=3D|=\r?\n")


def decode(block: bytes) -> bytes:
    return binascii.a2b_qp(block)


def _after(text: bytes, e: int, n: int) -> int:
    for _ in range(n):
        if e < len(text):
            e = line_bounds(text, e + 1, e + 1)[1]
    return e


def _before(text: bytes, s: int, n: int) -> int:
    for _ in range(n):
        if s > 0:
            s = line_bounds(text, s - 1, s - 1)[0]
    return s


def pieces(text: bytes) -> list[tuple[int, bytes]]:
    """Blocks of lines holding QP units (units within two lines of each other are one block: a
    soft break joins lines, and a nested one spans an empty line), with two lines of context
    each side (the wrapped run a block continues), decoded whole."""
    blocks: list[list[int]] = []
    for m in _ANY.finditer(text):
        s, e = line_bounds(text, m.start(), m.start() + 1)
        if blocks and s <= _after(text, blocks[-1][1], 2) + 1:  # + 1: the line right after the context
            blocks[-1][1] = max(blocks[-1][1], e)
            continue
        blocks.append([_before(text, s, 2), e, m.start()])
    out = []
    if len(blocks) > 1 and len(text) <= WHOLE_MAX:
        # Blocks further apart than their context may still cut one wrapped run (a base64 run
        # with a soft break every few lines): the whole text decoded too (one C pass).
        whole = decode(text)
        if whole != text:
            out.append((0, textual(whole) + b"\n"))
    for s, e, first in blocks:
        e = _after(text, e, 2)
        for start in (s, first) if first > s else (s,):
            # from the first unit too: a "=" glued before it ("v==73") misleads the decoder
            dec = text[s:start] + decode(text[start:e])
            if dec == text[s:e]:
                continue
            out.append((s, textual(dec) + b"\n"))
            tail = magic_tail(dec)
            if tail:
                out.append((s, tail))  # compressed bytes after a prefix: alone, for the next level
    return out
