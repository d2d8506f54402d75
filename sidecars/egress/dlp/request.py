"""DLP for one HTTP request: what egress scans before it injects credentials, and its settings.

The addon calls this with what mitmproxy parsed: the URL path and query (percent-decoded), every
header (name and value), and the body after its content-encoding (gzip, deflate, br) is undone,
with structure made visible to gitleaks' rules (JSON string leaves as ``key = "value"`` lines,
form fields as ``name=value`` lines, multipart parts one by one). Answers name the rule and where
it was found, never the secret. It fails closed: a body over the scan cap, or one whose encoding
cannot be undone, is "blocked: cannot scan", never a pass.

Settings (``dlp:`` per bottle and per route in routes.yaml) are the contract's DlpSettings.
"""

from __future__ import annotations

import json
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Iterable

from bottle_contract.policy import DlpSettings as Settings
from .detect import Scanner

STREAM_OVERLAP = 16 * 1024  # longer than any secret a rule matches in one piece (PEM keys ~3 KB)
STREAM_RELEASE = 16 * 1024  # a streamed body is scanned and passed on in steps of at least this


# --- settings: the contract's (bottle_contract.policy.DlpSettings), a route's resolved ones ---------

# --- verdicts --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hit:
    rule_id: str
    where: str  # "url path", "query", "header X-Foo", "body", "body json", "body part file NAME", ...


@dataclass(frozen=True)
class Verdict:
    hits: tuple[Hit, ...] = ()
    cannot_scan: str | None = None  # why the body could not be scanned: blocked all the same

    @property
    def blocked(self) -> bool:
        return bool(self.hits) or self.cannot_scan is not None

    def reason(self) -> str:
        """The 403 body's first line: ``dlp: blocked: ...``. Carries no secret."""
        if self.cannot_scan is not None:
            return f"dlp: blocked: cannot scan {self.cannot_scan}"
        if not self.hits:
            return ""
        h = self.hits[0]
        more = f" (and {len(self.hits) - 1} more)" if len(self.hits) > 1 else ""
        return f"dlp: blocked: {h.rule_id} in {h.where}{more}"

    def to_json(self) -> dict:
        """For the requests.jsonl log line."""
        return {"blocked": self.blocked, "cannot_scan": self.cannot_scan,
                "findings": [{"rule": h.rule_id, "where": h.where} for h in self.hits]}

    def __add__(self, other: Verdict) -> Verdict:
        return Verdict(hits=_unique(self.hits + other.hits), cannot_scan=self.cannot_scan or other.cannot_scan)


PASS = Verdict()


def _unique(hits: tuple[Hit, ...]) -> tuple[Hit, ...]:
    return tuple(dict.fromkeys(hits))


def _label(name: str) -> str:
    """A header or part name from the request, fit for a log line and a 403 body: printable
    ASCII only and short (the agent chose it)."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in name)
    return clean if len(clean) <= 64 else clean[:61] + "..."


def _utf8(text: str) -> bytes:
    """str from mitmproxy (surrogate-escaped bytes) or JSON (lone surrogates) as bytes to scan."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


class CannotScan(Exception):
    """The body cannot be turned into text to scan; the message says why (no secret in it)."""


# --- content-encoding ------------------------------------------------------------------------------

def _codings(headers: Iterable[tuple[str, str]]) -> list[str]:
    out = []
    for name, value in headers:
        if name.lower() == "content-encoding":
            out += [c.strip().lower() for c in value.split(",") if c.strip()]
    return [c for c in out if c != "identity"]


def _header(headers: Iterable[tuple[str, str]], wanted: str) -> str:
    for name, value in headers:
        if name.lower() == wanted:
            return value
    return ""


class _Decoder:
    """Undoes a list of content-codings incrementally, refusing to grow past ``cap`` bytes."""

    def __init__(self, codings: list[str], cap: int):
        self.cap = cap
        self.stages = []
        for c in reversed(codings):  # the last coding applied is undone first
            if c in ("gzip", "x-gzip"):
                self.stages.append(("z", zlib.decompressobj(16 + zlib.MAX_WBITS)))
            elif c == "deflate":
                self.stages.append(("deflate", None))
            elif c == "br":
                try:
                    import brotli
                except ImportError:
                    raise CannotScan("body: content-encoding br and no brotli module") from None
                self.stages.append(("br", brotli.Decompressor()))
            else:
                raise CannotScan(f"body: unknown content-encoding {c!r}")
        self.total = 0

    def feed(self, data: bytes, final: bool = False) -> bytes:
        for i, (kind, d) in enumerate(self.stages):
            data = self._stage(i, kind, d, data, final)
        self.total += len(data)
        if self.total > self.cap:
            raise CannotScan(f"body: decoded size over the {self.cap}-byte scan cap")
        return data

    def _stage(self, i: int, kind: str, d, data: bytes, final: bool) -> bytes:
        try:
            if kind == "deflate" and d is None:
                # "deflate" is zlib-wrapped by the RFC, raw in some clients: the first bytes tell
                d = zlib.decompressobj(zlib.MAX_WBITS if data[:1] and (data[0] & 0x0F) == 8 else -zlib.MAX_WBITS)
                self.stages[i] = (kind, d)
            if kind in ("z", "deflate"):
                out = d.decompress(data, self.cap + 1)
                if d.unconsumed_tail:
                    raise CannotScan(f"body: decoded size over the {self.cap}-byte scan cap")
                if final:
                    out += d.flush()
                    if not d.eof:
                        raise CannotScan("body: truncated compressed data")
                return out
            out = bytearray()
            for j in range(0, len(data), 1024):  # brotli has no output limit: feed it in steps
                out += d.process(data[j:j + 1024])
                if len(out) > self.cap:
                    raise CannotScan(f"body: decoded size over the {self.cap}-byte scan cap")
            if final and not d.is_finished():
                raise CannotScan("body: truncated brotli data")
            return bytes(out)
        except CannotScan:
            raise
        except Exception as e:  # zlib.error, brotli.error: a corrupt body is unscannable
            raise CannotScan(f"body: content-encoding cannot be decoded ({type(e).__name__})") from None


# --- the request scanner ---------------------------------------------------------------------------

class RequestScanner:
    """Scans requests with one ``dlp.Scanner``. Thread-safe (Hyperscan scratch is per thread)."""

    def __init__(self, scanner: Scanner):
        self.scanner = scanner

    def _hits(self, text: bytes, where: str, s: Settings) -> list[Hit]:
        return [Hit(f.rule_id, where) for f in self.scanner.scan(text, s.disabled_rules)]

    def scan_head(self, path: str, headers: Iterable[tuple[str, str]], settings: Settings = Settings()) -> Verdict:
        """The request target (path and query, percent-decoded) and every header."""
        hits: list[Hit] = []
        p, _, q = path.partition("?")
        hits += self._hits(urllib.parse.unquote_to_bytes(p), "url path", settings)
        if q:
            pairs = urllib.parse.parse_qsl(q, keep_blank_values=True)
            text = "\n".join(f"{k}={v}" for k, v in pairs) if pairs else urllib.parse.unquote_plus(q)
            hits += self._hits(_utf8(text), "query", settings)
        headers = list(headers)
        if headers:
            # one scan for all headers, one per line: a finding's line names its header
            text = _utf8("\n".join(f"{n}: {v}" for n, v in headers))
            for f in self.scanner.scan(text, settings.disabled_rules):
                hits.append(Hit(f.rule_id, f"header {_label(headers[min(f.line, len(headers)) - 1][0])}"))
        return Verdict(hits=_unique(tuple(hits)))

    def scan_body(self, body: bytes, headers: Iterable[tuple[str, str]], settings: Settings = Settings()) -> Verdict:
        """A whole (buffered) body as it came off the wire, content-encoding still applied."""
        if not settings.body or not body:
            return PASS
        headers = list(headers)
        if len(body) > settings.max_body_bytes:
            return Verdict(cannot_scan=f"body: {len(body)} bytes is over the {settings.max_body_bytes}-byte scan cap")
        try:
            dec = _Decoder(_codings(headers), settings.max_body_bytes)
            data = dec.feed(body, final=True)
        except CannotScan as e:
            return Verdict(cannot_scan=str(e))
        return Verdict(hits=_unique(tuple(self._structured(data, _header(headers, "content-type"), settings))))

    def scan_request(self, path: str, headers: Iterable[tuple[str, str]], body: bytes | None,
                     settings: Settings = Settings()) -> Verdict:
        headers = list(headers)
        return self.scan_head(path, headers, settings) + self.scan_body(body or b"", headers, settings)

    def _structured(self, data: bytes, ctype: str, s: Settings) -> list[Hit]:
        hits = self._hits(data, "body", s)
        mime = ctype.split(";")[0].strip().lower()
        if mime == "application/json" or mime.endswith("+json"):
            try:
                doc = json.loads(data)
            except ValueError:
                doc = None
            if doc is not None:
                lines = "\n".join(_json_lines(doc, ""))
                hits += self._hits(_utf8(lines), "body json", s)
        elif mime == "application/x-www-form-urlencoded":
            pairs = urllib.parse.parse_qsl(data.decode("latin-1"), keep_blank_values=True)
            hits += self._hits("\n".join(f"{k}={v}" for k, v in pairs).encode("latin-1", "replace"), "body form", s)
        elif mime.startswith("multipart/"):
            for where, part in _multipart(data, ctype):
                hits += self._hits(part, where, s)
        return hits

    def body_stream(self, headers: Iterable[tuple[str, str]], settings: Settings = Settings()) -> BodyStream:
        return BodyStream(self, list(headers), settings)


def _json_lines(doc, path: str):
    """Every string leaf as ``key = "value"``: JSON escapes undone, names next to values."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _json_lines(v, str(k))
    elif isinstance(doc, list):
        for v in doc:
            yield from _json_lines(v, path)
    elif isinstance(doc, str):
        yield f'{path} = "{doc}"' if path else doc
        if "\n" in doc:
            yield doc


def _multipart(data: bytes, ctype: str):
    boundary = ""
    for param in ctype.split(";")[1:]:
        k, _, v = param.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip().strip('"')
    if not boundary:
        return
    for raw in data.split(b"--" + boundary.encode("latin-1"))[1:]:
        if raw.startswith(b"--"):
            break
        head, _, content = raw.lstrip(b"\r\n").partition(b"\r\n\r\n")
        name, filename = "", None
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-disposition:"):
                for param in line.decode("latin-1").split(";")[1:]:
                    k, _, v = param.strip().partition("=")
                    if k.lower() == "name":
                        name = v.strip('"')
                    elif k.lower() == "filename":
                        filename = v.strip('"')
        where = f"body part file {_label(filename)}" if filename else f"body part {_label(name)}"
        yield where, head + b"\n" + content.removesuffix(b"\r\n")


class BodyStream:
    """Scans a body as it streams. ``feed`` returns the bytes safe to forward now: everything but
    an overlap window kept back, so a secret split across chunks is seen whole before any of it
    leaves. A content-encoded body is held whole (up to the cap) and scanned decoded at the end.
    Once ``verdict.blocked``, forward nothing more and kill the flow."""

    def __init__(self, rs: RequestScanner, headers: list[tuple[str, str]], settings: Settings):
        self.rs = rs
        self.settings = settings
        self.verdict = PASS
        self.total = 0
        self._held = bytearray()
        self._encoded = settings.body and bool(_codings(headers))
        try:
            self._decoder = _Decoder(_codings(headers), settings.max_body_bytes) if self._encoded else None
        except CannotScan as e:
            self.verdict = Verdict(cannot_scan=str(e))

    def feed(self, chunk: bytes) -> bytes:
        if self.verdict.blocked:
            return b""
        self.total += len(chunk)
        if not self.settings.body:
            return bytes(chunk)
        if self.total > self.settings.max_body_bytes:
            self.verdict = Verdict(cannot_scan=f"body: over the {self.settings.max_body_bytes}-byte scan cap")
            return b""
        if self._encoded:
            self._held += chunk
            return b""
        self._held += chunk
        if len(self._held) < STREAM_OVERLAP + STREAM_RELEASE:
            return b""  # tiny chunks: wait for more rather than rescan the window for each
        hits = self.rs._hits(bytes(self._held), "body", self.settings)
        if hits:
            self.verdict = Verdict(hits=_unique(tuple(hits)))
            return b""
        cut = max(0, len(self._held) - STREAM_OVERLAP)
        out = bytes(self._held[:cut])
        del self._held[:cut]
        return out

    def finish(self) -> bytes:
        """The held-back rest, or b"" when the body is blocked (check ``verdict``)."""
        if self.verdict.blocked:
            return b""
        if not self.settings.body:
            return b""
        if self._encoded:
            try:
                data = self._decoder.feed(bytes(self._held), final=True)
            except CannotScan as e:
                self.verdict = Verdict(cannot_scan=str(e))
                return b""
            hits = self.rs._hits(data, "body", self.settings)
        else:
            hits = self.rs._hits(bytes(self._held), "body", self.settings)
        if hits:
            self.verdict = Verdict(hits=_unique(tuple(hits)))
            return b""
        out = bytes(self._held)
        self._held.clear()
        return out
