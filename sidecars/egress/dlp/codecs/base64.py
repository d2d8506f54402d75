"""base64 in every variant: standard and URL alphabets (mixed too), padded or not, wrapped at
any width (76 columns as ``base64`` and MIME write it, 64 as PEM does), with whitespace inside,
concatenated padded chunks, and bytes that are not ASCII once decoded (binary, compressed data
or a secret inside binary). A run that does not decode whole decodes as far as it can."""

from __future__ import annotations

import binascii
import re

import re2

from ._common import MAGICS, emit, worth_scanning
from .gitleaks import find_all

NAME = "base64"
# Necessary conditions (Hyperscan): 4 quads that decode to ASCII (a secret of 12+ characters,
# anywhere in the run), or the base64 (either alphabet) of a compressed or archive header.
_QUAD = rb"[A-Za-f][A-HQ-Xg-nw-z0-3][ABEFIJMNQRUVYZcdghklopstwx014589][\w/+-]"
CANDIDATES = [
    _QUAD * 4,
    rb"(?:[A-Za-z0-9+/]{4}[ \t]){4}",
    rb"(?:[A-Za-z0-9+/]{8}[ \t]){3}",
    rb"H4sI[\w/+-]{8}",
    rb"eJ[wxyz][\w/+-]{8}",
    rb"KLUv[/_]",
    rb"QlpoO",
    rb"[/_]Td6WFo",
    rb"UEsDB",
]

_B64 = rb"[A-Za-z0-9+/_-]"
_RUNS = re2.compile(
    # wrapped: a run at the end of a line, then lines of nothing but base64
    _B64
    + rb"{4,}={0,2}[ \t]*\r?\n(?:[ \t]*"
    + _B64
    + rb"+={0,2}[ \t]*\r?\n)*[ \t]*"
    + _B64
    + rb"+={0,2}"
    # or in one piece
    + rb"|"
    + _B64
    + rb"{16,}={0,2}"
)
# or broken by spaces into groups (4 to 12 wide): looked for only where such groups are; with
# re2, whose time is linear (Python's re backtracks over every start in a long run: 2 s for a
# 12 KB run in a text that also holds spaced groups)
_SPACED = re2.compile(rb"[A-Za-z0-9+/_-]+[ \t](?:[A-Za-z0-9+/_-]{4,12}[ \t]){2,}[A-Za-z0-9+/_-]{1,12}={0,2}")
_SPACED_HINT = re2.compile(rb"(?:[A-Za-z0-9+/]{4}[ \t]){4}|(?:[A-Za-z0-9+/]{8}[ \t]){3}")
_CHECK = re2.compile(_QUAD * 4 + rb"|H4sI|eJ[wxyz]|KLUv[/_]|QlpoO|[/_]Td6WFo|UEsDB")
_MAGIC_AT = re2.compile(rb"H4sI|eJ[wxyz]|KLUv[/_]|QlpoO|[/_]Td6WFo|UEsDB")
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_TEXT = re.compile(rb"[\t\n\r\x20-\x7e]+")


def decode(run: bytes) -> bytes:
    """Every variant at once: whitespace dropped, url alphabet mapped to standard, each padded
    chunk decoded on its own, the tail padded; what is not base64 is skipped."""
    s = b"".join(run.split()).translate(_URL_TO_STD)
    out = []
    for chunk in _chunks(s):
        chunk = chunk.rstrip(b"=")
        if len(chunk) % 4 == 1:
            chunk = chunk[:-1]
        if not chunk:
            continue
        try:
            out.append(binascii.a2b_base64(chunk + b"=" * (-len(chunk) % 4), strict_mode=False))
        except binascii.Error:
            continue
    return b"".join(out)


def _chunks(s: bytes) -> list[bytes]:
    """``s`` cut after each run of padding: "aGk=aGk=" is two chunks."""
    if b"=" not in s.rstrip(b"="):
        return [s]
    return [c for c in re.split(rb"(?<==)(?=[^=])", s) if c]


def _score(b: bytes) -> int:
    if b.startswith(MAGICS):
        return 1 << 30
    return max((len(m) for m in _TEXT.findall(b)), default=0)


def best(run: bytes) -> bytes:
    """The decoding at the run's own alignment, or at a shifted one when characters glued
    before the run moved it: the one that gives the longest text."""
    compact = b"".join(run.split())
    dec = decode(compact)
    if _printable(dec):
        return dec
    cands = [dec] + [decode(compact[k:]) for k in (1, 2, 3)]
    m = _MAGIC_AT.search(compact)
    if m is not None and m.start() > 0:  # compressed data after other characters ("/files/eJw...")
        cands.append(decode(compact[m.start() :]))
    top = max(cands, key=_score)
    return top if worth_scanning(top) else b""


def _printable(b: bytes) -> bool:
    return bool(b) and not b.translate(None, _PRINTABLE)


_PRINTABLE = bytes(range(9, 14)) + bytes(range(32, 127))


def pieces(text: bytes) -> list[tuple[int, bytes]]:
    """(where in ``text``, the line before it + the decoded bytes) for each run worth scanning."""
    out = []
    spans = [sp[0] for sp in find_all(_RUNS, text)]
    if _SPACED_HINT.search(text):
        spans += [m.span() for m in _SPACED.finditer(text)]
    for start, end in spans:
        run = text[start:end]
        if _CHECK.search(b"".join(run.split())) is None:
            continue
        dec = best(run)
        if dec:
            out.append(emit(text, start, dec))
    return out
