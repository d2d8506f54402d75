"""gitleaks' own decoding passes (detect/codec: percent, unicode escapes, hex, base64 and
base64url runs replaced in place, segment by segment, to a bounded depth), transcribed so the
engine finds what the gitleaks binary finds. egress's wider decoders (any base64 variant,
compression, entities, ...) are the other modules of this package; they add views, these keep
parity."""

from __future__ import annotations

import binascii
from dataclasses import dataclass

import re2

_PRINTABLE = bytes(range(9, 127))
_ENCODINGS = [  # kind bit, pattern, in gitleaks' order (earlier = higher precedence)
    (1, rb"%[0-9A-Fa-f]{2}(?:.*%[0-9A-Fa-f]{2})?"),
    (2, rb"(?:(?:U\+[a-fA-F0-9]{4}(?:\s|$))+|(?i)(?:\\{1,2}u[a-fA-F0-9]{4})+)"),
    (4, rb"[0-9A-Fa-f]{32,}"),
    (8, rb"[\w\/+-]{16,}={0,2}"),
]
_ENCODINGS_RE = re2.compile(b"|".join(b"(" + p + b")" for _, p in _ENCODINGS))
_UNANCHORED = re2._Anchor.UNANCHORED
_PRECEDENCE = {kind: len(_ENCODINGS) - i for i, (kind, _) in enumerate(_ENCODINGS)}
_CODEPOINT_RE = re2.compile(rb"U\+([a-fA-F0-9]{4}).?")
_MULTI_CODEPOINT_RE = re2.compile(rb"(?:U\+[a-fA-F0-9]{4}(?:\s|$))+")
_ESCAPE_RE = re2.compile(rb"(?i)\\{1,2}u([a-fA-F0-9]{4})")
_MULTI_ESCAPE_RE = re2.compile(rb"(?i)(?:\\{1,2}u[a-fA-F0-9]{4})+")


def _printable(b: bytes) -> bool:
    return not b.translate(None, _PRINTABLE)


def _decode_percent(v: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(v)
    while i < n:
        # a "%" followed by two hex digits; anything else is copied as is
        if v[i] == 0x25 and i + 2 < n and v[i + 1] in _HEX_DIGITS and v[i + 2] in _HEX_DIGITS:
            b = int(v[i + 1 : i + 3], 16)
            if not (8 < b < 127):
                return b""
            out.append(b)
            i += 3
            continue
        out.append(v[i])
        i += 1
    return bytes(out)


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def _decode_hex(v: bytes) -> bytes:
    if len(v) % 2 or not any(c in b"0123456789" for c in v):
        return b""
    try:
        d = bytes.fromhex(v.decode())
    except ValueError:
        return b""
    return d if _printable(d) else b""


def _decode_base64(v: bytes) -> bytes:
    if not any(c in b"0123456789+/-_" for c in v):
        return b""
    # encoding/base64 StdEncoding: padded, alphabet +/; then RawURLEncoding: unpadded, -_
    if len(v) % 4 == 0 and b"-" not in v and b"_" not in v:
        try:
            d = binascii.a2b_base64(v, strict_mode=True)
            if _printable(d):
                return d
        except binascii.Error:
            pass
    if b"=" not in v and b"+" not in v and b"/" not in v and len(v) % 4 != 1:
        try:
            d = binascii.a2b_base64(v.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-len(v) % 4), strict_mode=True)
            if _printable(d):
                return d
        except binascii.Error:
            pass
    return b""


def _rune(cp: int) -> bytes:
    if 0xD800 <= cp <= 0xDFFF:  # utf8.EncodeRune writes U+FFFD for surrogates
        cp = 0xFFFD
    return chr(cp).encode()


def _decode_unicode(v: bytes) -> bytes:
    ms = [m.group(0) for m in _MULTI_CODEPOINT_RE.finditer(v)]
    if ms:
        for m in ms:
            parts = [p for p in m.split() if p.startswith(b"U+") and len(p) >= 6]
            runes = []
            for p in parts:
                try:
                    runes.append(_rune(int(p[2:], 16)))
                except ValueError:
                    pass
            dec = b"".join(runes) if runes else m
            if dec and dec != m:
                v = v.replace(m, dec, 1)
        return v
    ms = [m.group(0) for m in _MULTI_ESCAPE_RE.finditer(v)]
    if ms:
        for m in ms:
            esc = [e.group(1) for e in _ESCAPE_RE.finditer(m)]
            dec = b"".join(_rune(int(h, 16)) for h in esc) if esc else m
            if dec and dec != m:
                v = v.replace(m, dec, 1)
        return v
    result = b""
    if _CODEPOINT_RE.search(v):
        result = _individual(v, _CODEPOINT_RE, codepoint=True)
    if not result or _ESCAPE_RE.search(v):
        result = _individual(result if result else v, _ESCAPE_RE, codepoint=False)
    return v if not result or result == v else result


def _individual(data: bytes, pat: re2._Regexp, codepoint: bool) -> bytes:
    ms = list(pat.finditer(data))
    buf = bytearray(data)
    for m in reversed(ms):
        start, end = m.start(), (m.end() if codepoint else m.end(1))
        if codepoint and end != m.end(1) and end < len(buf) and buf[end - 1] == 0x20:
            end -= 1
        buf[start:end] = _rune(int(m.group(1), 16))
    return bytes(buf)


_DECODERS = {1: _decode_percent, 2: _decode_unicode, 4: _decode_hex, 8: _decode_base64}


@dataclass
class Segment:
    """codec.EncodedSegment: where an encoded run was, and where its decoded value now is."""

    predecessors: list[Segment]
    original: tuple[int, int]
    encoded: tuple[int, int]
    decoded: tuple[int, int]
    value: bytes
    encodings: int
    depth: int


def _overlaps(s: tuple[int, int], o: tuple[int, int]) -> bool:
    return o[0] <= s[1] and o[1] >= s[0]


def _merge(s: tuple[int, int], o: tuple[int, int]) -> tuple[int, int]:
    return min(s[0], o[0]), max(s[1], o[1])


def _to_original(preds: list[Segment], decoded: tuple[int, int]) -> tuple[int, int]:
    if not preds:
        return decoded
    encoded = (0, 0)
    for p in preds:
        if not _overlaps(p.decoded, decoded):
            continue
        if p.decoded[0] <= decoded[0] and decoded[1] <= p.decoded[1]:
            return p.original
        m = _merge(p.decoded, decoded)
        over = (m[0] - p.decoded[0], m[1] - p.decoded[1])
        shifted = (p.encoded[0] + over[0], p.encoded[1] + over[1])
        encoded = shifted if encoded[1] == 0 else _merge(encoded, shifted)
    if encoded[1] == 0:
        return decoded
    return _to_original(preds[0].predecessors, encoded)


def find_all(rx: re2._Regexp, data: bytes):
    """Go's Regexp.FindAllIndex over bytes, yielding RE2's span list (whole match, then each
    group; (-1, -1) for a group that did not take part). It calls RE2 directly: google-re2's
    Match objects cost more than the matching on texts with many runs. As in Go, the search
    keeps the whole text as context (``^``, ``\b``) and an empty match right after the previous
    match is dropped."""
    match = rx._regexp.Match
    n = len(data)
    pos, prev_end = 0, -1
    while pos <= n:
        spans = match(_UNANCHORED, data, pos, n)
        s, e = spans[0]
        if s < 0:
            return
        accept = True
        if e == pos:  # empty match: step one rune on
            if s == prev_end:
                accept = False
            pos += _rune_width(data, pos)
        else:
            pos = e
        prev_end = e
        if accept:
            yield spans


def _rune_width(data: bytes, pos: int) -> int:
    if pos >= len(data) or data[pos] < 0x80:
        return 1
    b = data[pos]
    return 2 if b < 0xE0 else 3 if b < 0xF0 else 4


def _encoding_matches(data: bytes) -> list[tuple[int, int, int]]:
    found = []
    for spans in find_all(_ENCODINGS_RE, data):
        for g in range(1, 5):
            if spans[g][0] > -1:
                found.append((_ENCODINGS[g - 1][0], *spans[g]))
                break
    if len(found) == 1:
        return found
    # Runs from one search never overlap, but gitleaks' test counts touching runs as overlapping
    # and drops the one of lower precedence.
    kept = []
    last = len(found) - 1
    for i, (kind, s, e) in enumerate(found):
        if i > 0:
            pk, ps, pe = found[i - 1]
            if ps <= e and pe >= s and _PRECEDENCE[pk] > _PRECEDENCE[kind]:
                continue
        if i < last:
            nk, ns, ne = found[i + 1]
            if ns <= e and ne >= s and _PRECEDENCE[nk] > _PRECEDENCE[kind]:
                continue
        kept.append((kind, s, e))
    return kept


# Past this many decodable-looking spots (2048, plus one per 32 bytes of text), searching the
# whole text for runs is cheaper than collecting the spots.
_MAX_ENDS = 2048
_ENDS_PER_BYTE = 1 / 32


def _runs(data: bytes, decodable_ends) -> list[tuple[int, int, int]]:
    """The runs gitleaks' decoder finds, searched only on the lines where ``decodable_ends``
    (Hyperscan: every end offset of a _DECODABLE pattern, or None when there are too many)
    says a decodable run may be. Exact because no run crosses a newline (the classes and ``.``
    exclude it) unless it is a "U+XXXX" sequence, and text holding "U+" is searched whole;
    runs on two lines cannot touch, so the precedence filter is line-local too; a line without
    such a spot yields no segment whatever its runs are."""
    ends = None if decodable_ends is None or b"U+" in data else decodable_ends(data)
    if ends is None:
        return _encoding_matches(data)
    out = []
    done = 0
    for end in sorted(ends):
        if end <= done:
            continue  # on a line already searched
        start = data.rfind(b"\n", 0, end - 1) + 1
        stop = data.find(b"\n", end - 1)
        stop = len(data) if stop < 0 else stop
        out += [(k, s + start, e + start) for k, s, e in _encoding_matches(data[start:stop])]
        done = stop
    return out


def decode_pass(
    data: bytes, preds: list[Segment], cache: dict[bytes, bytes], decodable_ends=None
) -> tuple[bytes, list[Segment]]:
    """codec.Decoder.Decode: one pass replacing every decodable run by its decoded value."""
    segments: list[Segment] = []
    shift = 0
    for kind, s, e in _runs(data, decodable_ends) if data else []:
        enc = data[s:e]
        dec = cache.get(enc)
        if dec is None:
            dec = cache[enc] = _DECODERS[kind](enc)
        if not dec:
            continue
        seg = Segment(
            predecessors=preds,
            original=_to_original(preds, (s, e)),
            encoded=(s, e),
            decoded=(s + shift, s + shift + len(dec)),
            value=dec,
            encodings=kind,
            depth=1,
        )
        shift += len(dec) - len(enc)
        if preds:
            seg.depth = 1 + preds[0].depth
            for p in preds:
                if _overlaps(seg.encoded, p.decoded):
                    seg.encodings |= p.encodings
        segments.append(seg)
    if not segments:
        return data, segments
    out, pos = [], 0
    for seg in segments:
        out.append(data[pos : seg.encoded[0]])
        out.append(seg.value)
        pos = seg.encoded[1]
    out.append(data[pos:])
    return b"".join(out), segments


def _current_line(segments: list[Segment], raw: bytes) -> bytes:
    dec = segments[0].decoded
    for s in segments[1:]:
        dec = _merge(dec, s.decoded)
    start = raw.rfind(b"\n", 0, dec[0] + 1)
    start = max(start, 0)
    end = raw.find(b"\n", dec[1])
    return raw[start : len(raw) if end < 0 else end]
