"""Archives: zip (each local file entry, stored or deflated, read from its local header, so a
truncated or streamed zip is read too; bzip2, lzma and zstd members) and tar (each regular
file). Bomb limits: at most ``MAX_MEMBERS`` members and the caller's byte cap in all; an
encrypted member or an unknown method cannot be scanned, so the archive is refused."""

from __future__ import annotations

import bz2
import io
import lzma
import struct
import tarfile
import zlib

import zstandard

from ..errors import CannotScan

NAME = "archive"
MAX_MEMBERS = 1000
_LOCAL = b"PK\x03\x04"


def is_tar(data: bytes) -> bool:
    return len(data) >= 512 and data[257:262] == b"ustar"


def members(data: bytes, cap: int) -> list[bytes]:
    """The contents of every member of the zip entries or the tar in ``data``."""
    if is_tar(data):
        return _tar(data, cap)
    return _zip(data, cap)


def _zip(data: bytes, cap: int) -> list[bytes]:
    out: list[bytes] = []
    total = 0
    i = data.find(_LOCAL)
    while i >= 0:
        if len(out) >= MAX_MEMBERS:
            raise CannotScan(f"body: an archive of more than {MAX_MEMBERS} members")
        head = data[i : i + 30]
        if len(head) < 30:
            break
        _sig, _ver, flags, method, _t, _d, _crc, csize, _usize, nlen, xlen = struct.unpack("<4sHHHHHIIIHH", head)
        start = i + 30 + nlen + xlen
        if flags & 1:
            raise CannotScan("body: an encrypted archive member")
        nxt = data.find(_LOCAL, start)
        end = start + csize if csize and not flags & 8 else (nxt if nxt >= 0 else len(data))
        content = _member(method, data[start:end], cap - total)
        total += len(content)
        if total > cap:
            raise CannotScan(f"body: an archive that unpacks past the {cap}-byte scan cap")
        out.append(content)
        i = data.find(_LOCAL, max(start, min(end, len(data))))
    return out


def _member(method: int, raw: bytes, room: int) -> bytes:
    try:
        if method == 0:
            return raw
        if method == 8:
            d = zlib.decompressobj(-zlib.MAX_WBITS)
            out = d.decompress(raw, room + 1)
        elif method == 12:
            out = bz2.BZ2Decompressor().decompress(raw, room + 1)
        elif method == 14:  # lzma in zip: a 4-byte header, then the properties, then the stream
            plen = struct.unpack("<H", raw[2:4])[0]
            filt = lzma._decode_filter_properties(lzma.FILTER_LZMA1, raw[4 : 4 + plen])
            out = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt]).decompress(raw[4 + plen :], room + 1)
        elif method == 93:
            out = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read(room + 1)
        else:
            raise CannotScan(f"body: an archive member packed with method {method}")
    except (zlib.error, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, struct.error):
        return raw  # what does not inflate is scanned as it is
    if len(out) > room:
        raise CannotScan("body: an archive that unpacks past the scan cap")
    return out


def _tar(data: bytes, cap: int) -> list[bytes]:
    out: list[bytes] = []
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for info in tf:
                if len(out) >= MAX_MEMBERS:
                    raise CannotScan(f"body: an archive of more than {MAX_MEMBERS} members")
                if not info.isfile():
                    out.append(
                        info.name.encode("utf-8", "surrogateescape")
                        + b" "
                        + info.linkname.encode("utf-8", "surrogateescape")
                    )
                    continue
                f = tf.extractfile(info)
                content = f.read(cap - total + 1) if f else b""
                total += len(content)
                if total > cap:
                    raise CannotScan(f"body: an archive that unpacks past the {cap}-byte scan cap")
                out.append(info.name.encode("utf-8", "surrogateescape") + b"\n" + content)
    except tarfile.TarError:
        pass  # a truncated tar: what was read stands, and the raw bytes are scanned
    return out
