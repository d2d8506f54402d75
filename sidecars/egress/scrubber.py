"""Removes an injected credential, in every encoded form an upstream may echo it in, from what
comes back to the agent: whole bodies and headers, and bodies that stream in chunks."""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
import zlib
from collections.abc import Iterable

REDACTED = b"[redacted by egress]"


def _b64_cores(secret: bytes, encode) -> set[bytes]:
    """The base64 characters that only the secret's bits decide, for each of the three alignments
    it can have inside a longer base64 text, plus the whole padded encoding of the secret alone."""
    out = {encode(secret)}
    n = len(secret)
    for k in range(3):
        text = encode(b"\0" * k + secret + b"\0\0").rstrip(b"=")
        first = -(-8 * k // 6)  # the first character without a bit of the zero prefix
        last = (8 * k + 8 * n) // 6  # one past the last character without a bit of the suffix
        if last > first:
            out.add(text[first:last])
    return out


def _variants(secret: bytes) -> set[bytes]:
    """The secret as an upstream may echo it: raw, base64/base64url (at any alignment), hex in
    either case, percent-encoded (as quote() does it, and every byte, in either case), and
    JSON-escaped (as-is, with "\\/", and every character as \\uXXXX in either case)."""
    out = {secret, secret.hex().encode(), secret.hex().upper().encode()}
    out |= _b64_cores(secret, base64.b64encode) | _b64_cores(secret, base64.urlsafe_b64encode)
    for once in (base64.b64encode(secret), base64.urlsafe_b64encode(secret)):  # base64 twice
        out |= _b64_cores(once, base64.b64encode) | _b64_cores(once.rstrip(b"="), base64.b64encode)
    every = "".join(f"%{b:02X}" for b in secret)
    out |= {every.encode(), every.lower().encode()}
    text = secret.decode("utf-8", "surrogateescape")
    try:
        quoted = urllib.parse.quote(text, safe="")
        out |= {quoted.encode(), re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted).encode()}
        escaped = json.dumps(text)[1:-1]
        out.add(escaped.encode())
        out.add(escaped.replace("/", "\\/").encode())  # some JSON encoders escape "/"
        uni = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in text)
        out |= {uni.encode(), re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), uni).encode()}
    except UnicodeEncodeError:
        pass
    # Base64 cores shorter than a few characters would redact unrelated text.
    return {v for v in out if len(v) >= min(4, len(secret))}


GUNZIP_CAP = 64 << 20


def _gunzip(data: bytes) -> bytes | None:
    """Every gzip member of ``data`` decoded (at most GUNZIP_CAP bytes), or None when it is not gzip."""
    out, rest = bytearray(), data
    try:
        while rest[:2] == b"\x1f\x8b":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += d.decompress(rest, GUNZIP_CAP - len(out))
            if d.unconsumed_tail or not d.eof:
                return None
            rest = d.unused_data
    except zlib.error:
        return None
    return bytes(out + rest)


class Scrubber:
    """Replaces every occurrence of the secrets (and their encoded forms) with REDACTED."""

    def __init__(self, secrets: Iterable[str | bytes]):
        found: set[bytes] = set()
        for s in secrets:
            b = s.encode("utf-8", "surrogateescape") if isinstance(s, str) else bytes(s)
            if b:
                found |= _variants(b)
        # Longest first so that a secret containing another is found as a whole.
        self.secrets: tuple[bytes, ...] = tuple(sorted(found, key=len, reverse=True))
        self.max_len = max((len(s) for s in self.secrets), default=0)

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def _spans(self, data: bytes) -> list[tuple[int, int]]:
        # All occurrences, overlapping ones included; overlapping ones are merged and redacted as
        # one run so that no fragment of either survives. Merely adjacent ones stay separate, which
        # keeps the streaming result identical to the one-shot result.
        spans = []
        for s in self.secrets:
            i = data.find(s)
            while i != -1:
                spans.append((i, i + len(s)))
                i = data.find(s, i + 1)
        spans.sort()
        return self._merge(spans)

    @staticmethod
    def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a < merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged

    def _redact(self, data: bytes, spans: list[tuple[int, int]]) -> bytes:
        out = []
        pos = 0
        for a, b in spans:
            out.append(data[pos:a])
            out.append(REDACTED)
            pos = b
        out.append(data[pos:])
        return b"".join(out)

    def scrub(self, data: bytes) -> bytes:
        if not self.secrets or not data:
            return data
        return self._redact(data, self._spans(data))

    def scrub_whole(self, data: bytes) -> bytes:
        """``scrub`` for a whole body or message (not a stream): also the secret in base64 or hex
        wrapped across lines (at 76 columns, as base64 and MIME write it), and inside a gzip
        member the upstream sent without saying so (then the whole is returned decoded)."""
        if not self.secrets or not data:
            return data
        spans = self._spans(data)
        if b"\n" in data:
            keep = [i for i, c in enumerate(data) if c not in (0x0A, 0x0D)]
            view = bytes(data[i] for i in keep)
            spans += [(keep[a], keep[b - 1] + 1) for a, b in self._spans(view)]
            spans = self._merge(sorted(spans))
        out = self._redact(data, spans)
        if out == data and data[:2] == b"\x1f\x8b":
            inner = _gunzip(data)
            if inner is not None:
                cleaned = self.scrub_whole(inner)
                if cleaned != inner:
                    return cleaned
        return out

    def scrub_text(self, text: str) -> str:
        return self.scrub(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

    def stream(self) -> StreamScrubber:
        return StreamScrubber(self)


class StreamScrubber:
    """Scrubs a body that arrives in chunks; a secret split across chunks is still redacted.

    Call it with each chunk and with b"" at the end (mitmproxy's `flow.response.stream` protocol).
    Only a tail that could still become a secret is held back, so other data passes at once.
    """

    def __init__(self, scrubber: Scrubber):
        self.scrubber = scrubber
        self._held = b""

    def __call__(self, chunk: bytes) -> list[bytes]:
        # A list, never b"": mitmproxy frames an empty chunk of a chunked HTTP/1.1 body as the
        # terminating "0\r\n\r\n", which would end the response early.
        out = self.flush() if chunk == b"" else self.feed(chunk)
        return [out] if out else []

    def feed(self, chunk: bytes) -> bytes:
        sc = self.scrubber
        if not sc.secrets:
            return chunk
        buf = self._held + chunk
        spans = sc._spans(buf)
        # cut: the first position from which the rest of buf is a proper prefix of a secret,
        # i.e. where a secret might continue in the next chunk.
        cut = len(buf)
        for i in range(max(0, len(buf) - sc.max_len + 1), len(buf)):
            tail = buf[i:]
            if any(len(s) > len(tail) and s.startswith(tail) for s in sc.secrets):
                cut = i
                break
        # Never cut through a found occurrence: hold it whole so it merges with what follows.
        for a, b in spans:
            if a < cut < b:
                cut = a
                break
        self._held = buf[cut:]
        return sc._redact(buf[:cut], [(a, b) for a, b in spans if b <= cut])

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return self.scrubber.scrub(held)
