"""Compression, by declared coding (Content-Encoding, Transfer-Encoding) and by content (magic
bytes): gzip (every member to the end, and bytes after the last one kept for scanning), zlib
and raw deflate, zstd (every frame), bzip2 and xz (every stream), brotli (declared only: it has no
magic). gzip, zlib, bzip2 and xz are the standard library's; zstd (``zstandard``) and brotli
(``Brotli``) are mitmproxy's own dependencies, so the egress venv has them. Output is capped: a
decompression bomb is refused, never inflated."""

from __future__ import annotations

import bz2
import io
import lzma
import zlib

import brotli
import re2
import zstandard

from ..errors import CannotScan
from ._common import non_ascii

NAME = "compression"
# By content: where compressed data may start (zlib's two bytes are common: at most 16 tries a
# magic in a text, and a false start costs a few bytes of inflating). Found with bytes.find: the magics are not valid UTF-8, and the
# engine's Hyperscan pass reads the text as UTF-8.
_ANYWHERE = ((b"\x1f\x8b\x08", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"), (b"BZh", "bzip2"))
_BZIP2_BLOCK = b"1AY&SY"
_ZLIB_HEADS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
_LATIN1 = re2.Options()
_LATIN1.encoding = re2.Options.Encoding.LATIN1  # bytes, not UTF-8: the magics are not text
# (gate, magic): a rare byte of each magic, then the magic itself. A high gate is looked for
# among the text's non-ASCII bytes only, a low one with memchr; most texts pass no gate.
_HIGH_GATES = (
    (b"\x8b", b"\x1f\x8b\x08"),
    (b"\xb5", b"\x28\xb5\x2f\xfd"),
    (b"\xfd", b"\xfd7zXZ\x00"),
    (b"\x9c", b"\x78\x9c"),
    (b"\xda", b"\x78\xda"),
)
_LOW_GATES = ((b"\x01", b"\x78\x01"), (b"\x5e", b"\x78\x5e"), (b"Z", b"BZh"))


def _may_hold_magic(data: bytes, high: bytes | None) -> bool:
    high = non_ascii(data) if high is None else high
    return any(g in high and m in data for g, m in _HIGH_GATES) or any(g in data and m in data for g, m in _LOW_GATES)


_ANY_MAGIC = re2.compile(
    rb"\x1f\x8b\x08|\x28\xb5\x2f\xfd|\xfd7zXZ\x00|BZh[1-9]1AY&SY|x[\x01\x5e\x9c\xda]", options=_LATIN1
)
DECLARED = {
    "gzip": "gzip",
    "x-gzip": "gzip",
    "deflate": "deflate",
    "br": "br",
    "zstd": "zstd",
    "bzip2": "bzip2",
    "x-bzip2": "bzip2",
    "xz": "xz",
    "lzma": "xz",
}


def _over(cap: int) -> CannotScan:
    return CannotScan(f"body: decoded size over the {cap}-byte scan cap")


def sniff(data: bytes) -> str | None:
    """The compression ``data`` starts with, or None."""
    for magic, kind in _ANYWHERE:
        if data.startswith(magic) and (kind != "bzip2" or data[4:10] == _BZIP2_BLOCK):
            return kind
    if data.startswith(_ZLIB_HEADS) and (data[0] << 8 | data[1]) % 31 == 0:
        return "deflate"
    return None


def inflate(kind: str, data: bytes, cap: int, strict: bool = False) -> bytes:
    """Everything ``data`` decompresses to, members and frames to the end, then any bytes after
    them. ``strict`` (a declared coding): corrupt or truncated data is CannotScan; otherwise
    what decodes is returned (the raw bytes are scanned anyway)."""
    out = bytearray()
    rest = data
    first = True
    while rest:
        try:
            dec, rest, complete = _one(kind, rest, cap - len(out))
        except CannotScan:
            raise
        except (zlib.error, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, brotli.error) as e:
            if strict and first:
                raise CannotScan(f"body: content-encoding {kind} cannot be decoded ({type(e).__name__})") from None
            return bytes(out)
        out += dec
        if len(out) > cap:
            raise _over(cap)
        if not complete:
            if strict:
                raise CannotScan(f"body: truncated {kind} data")
            break
        first = False
        if rest and sniff(rest) != kind:
            out += b"\n" + rest  # bytes after the last member: scanned as they are
            break
    if len(out) > cap:
        raise _over(cap)
    return bytes(out)


def _one(kind: str, data: bytes, room: int) -> tuple[bytes, bytes, bool]:
    """One member or frame: (its output, what follows it, whether it ended properly)."""
    if kind in ("gzip", "deflate"):
        # "deflate" is zlib-wrapped by the RFC, raw in some clients: the first two bytes tell
        wbits = (
            16 + zlib.MAX_WBITS
            if kind == "gzip"
            else zlib.MAX_WBITS
            if data.startswith(_ZLIB_HEADS)
            or (len(data) > 1 and (data[0] & 0x0F) == 8 and (data[0] << 8 | data[1]) % 31 == 0)
            else -zlib.MAX_WBITS
        )
        d = zlib.decompressobj(wbits)
        out = d.decompress(data, room + 1)
        if d.unconsumed_tail:
            raise CannotScan(f"body: decoded size over the scan cap ({kind})")
        out += d.flush()
        return out, d.unused_data, d.eof
    if kind in ("bzip2", "xz"):
        d2 = bz2.BZ2Decompressor() if kind == "bzip2" else lzma.LZMADecompressor()
        out = d2.decompress(data, room + 1)
        if len(out) > room:
            raise CannotScan(f"body: decoded size over the scan cap ({kind})")
        return out, d2.unused_data, d2.eof
    if kind == "zstd":
        # one frame: bounded first (a reader stops at room + 1), then again for where it ends
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=False)
        out = reader.read(room + 1)
        if len(out) > room:
            raise CannotScan("body: decoded size over the scan cap (zstd)")
        obj = zstandard.ZstdDecompressor().decompressobj()
        obj.decompress(data)
        return out, obj.unused_data, obj.eof
    if kind == "br":
        d4 = brotli.Decompressor()
        buf = bytearray()
        for j in range(0, len(data), 256):  # brotli has no output limit: feed it in steps
            buf += d4.process(data[j : j + 256])
            if len(buf) > room:
                raise CannotScan("body: decoded size over the scan cap (br)")
        return bytes(buf), b"", d4.is_finished()
    raise CannotScan(f"body: unknown content-encoding {kind!r}")


def embedded(data: bytes, cap: int, rest: bytes | None = None) -> list[tuple[int, bytes]]:
    """Compressed data that starts anywhere in ``data`` (after a prefix of other bytes), inflated."""
    out: list[tuple[int, bytes]] = []
    if not _may_hold_magic(data, rest) or _ANY_MAGIC.search(data) is None:
        return out
    for magic, kind in _ANYWHERE + tuple((h, "deflate") for h in _ZLIB_HEADS):
        if kind != "bzip2" and data.isascii():
            continue
        i = data.find(magic)
        n = 0
        while i >= 0 and n < 16:
            n += 1
            if kind == "bzip2" and data[i + 4 : i + 10] != _BZIP2_BLOCK:
                i = data.find(magic, i + 1)
                continue
            dec = inflate(kind, data[i:], cap)
            if dec:
                out.append((i, dec))
            i = data.find(magic, i + 1)
    return out
