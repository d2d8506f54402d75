"""DLP for one HTTP request: what egress scans before it injects credentials, and its settings.

The addon calls this with what mitmproxy parsed: the request target (path and raw query),
every header (name and value), and the body as it came off the wire. Each text is scanned
as it is and in every view the decoding pipeline (``decode``) makes of it; a body also with its
codings undone and its structure made visible (``body``). Answers name the rule and where it was
found (fixed words and indexes), never the secret. It fails closed: any error while looking at
the agent's data (a parser, a decoder, the engine) is "blocked: cannot scan", never a pass.

What ordinary traffic carries (``ordinary``: nonces by shape, pagination tokens, public sample
values) and values an upstream handed the agent (``provenance``, when the addon gives the
scanner a store and the request's site) are not hits.

Settings (``dlp:`` per bottle and per route in routes.yaml) are the contract's DlpSettings.
"""

from __future__ import annotations

import bisect
import functools
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from bottle_contract.policy import DlpSettings as Settings

from . import body as B
from . import decode, ordinary
from .detect import Finding, Scanner
from .errors import CannotScan
from .provenance import Provenance

STREAM_OVERLAP = 16 * 1024  # longer than any secret a rule matches in one piece (PEM keys ~3 KB)
STREAM_RELEASE = 16 * 1024  # a streamed body is scanned and passed on in steps of at least this
DEFAULTS = Settings()  # the contract's defaults (frozen), for calls that name no settings

__all__ = [
    "PASS",
    "STREAM_OVERLAP",
    "STREAM_RELEASE",
    "BodyStream",
    "CannotScan",
    "Hit",
    "RequestScanner",
    "Settings",
    "Verdict",
]


# --- verdicts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    rule_id: str
    where: str  # "url path", "query", "header Authorization", "header 3", "body", "body json", "body part 2", ...


@dataclass(frozen=True)
class Verdict:
    hits: tuple[Hit, ...] = ()
    cannot_scan: str | None = None  # why the data could not be scanned: blocked all the same

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
        return {
            "blocked": self.blocked,
            "cannot_scan": self.cannot_scan,
            "findings": [{"rule": h.rule_id, "where": h.where} for h in self.hits],
        }

    def __add__(self, other: Verdict) -> Verdict:
        return Verdict(hits=_unique(self.hits + other.hits), cannot_scan=self.cannot_scan or other.cannot_scan)


PASS = Verdict()


def _unique(hits) -> tuple[Hit, ...]:
    return tuple(dict.fromkeys(hits))


# Header names a label may carry as they are; any other header is named by its index (the
# agent chose its name, and a name can hold a secret).
_KNOWN_HEADERS = frozenset(
    h.lower()
    for h in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Authorization",
        "Cache-Control",
        "Connection",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Length",
        "Content-Type",
        "Cookie",
        "Host",
        "Origin",
        "Proxy-Authorization",
        "Referer",
        "Transfer-Encoding",
        "User-Agent",
        "X-Api-Key",
        "X-Auth-Token",
        "X-Forwarded-For",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Protocol",
        "Idempotency-Key",
        "X-Request-Id",
        "Upgrade",
        "TE",
        "Trailer",
        "If-None-Match",
        "If-Match",
        "Range",
        "Private-Token",
        "X-GitHub-Api-Version",
        "Anthropic-Version",
        "Anthropic-Beta",
        "OpenAI-Organization",
        "Traceparent",
    )
)


def _header_label(name: str, index: int) -> str:
    n = name.strip()
    return f"header {n}" if n.lower() in _KNOWN_HEADERS else f"header {index}"


def _utf8(text: str) -> bytes:
    """str from mitmproxy (surrogate-escaped bytes) or JSON (lone surrogates) as bytes to scan."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _closed(what: str):
    """Fail closed: any exception while scanning is a blocking verdict, never an escape."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kw) -> Verdict:
            try:
                return fn(*args, **kw)
            except CannotScan as e:
                return Verdict(cannot_scan=str(e))
            except Exception as e:
                return Verdict(cannot_scan=f"{what}: the scan failed ({type(e).__name__})")

        return run

    return wrap


# --- the request scanner ---------------------------------------------------------------------------


class RequestScanner:
    """Scans requests with one ``Scanner``. Thread-safe (Hyperscan scratch is per thread).
    ``provenance``: the bottle's store of values upstreams handed the agent; a call that names
    the request's ``site`` then passes a value that came from that site."""

    def __init__(self, scanner: Scanner, provenance: Provenance | None = None):
        self.scanner = scanner
        self.provenance = provenance

    # the one text scan: the text as it is, then every decoded view of it
    def _findings(self, text: bytes, disabled: frozenset[str]) -> list[tuple[Finding, int]]:
        """(finding, origin): origin is the finding's offset in ``text``, or -1 when it was
        found in a view that keeps only the lines."""
        found = [(f, f.start) for f in self.scanner.scan(text, disabled)]
        hints = self.scanner.codec_hints
        views = decode.views(text, hints)
        if views:
            starts, pos = [], 0
            for _, v in views:
                starts.append(pos)
                pos += len(v) + 1
            joined = b"\n".join(v for _, v in views)
            for f in self.scanner.scan(joined, disabled):
                origin = views[bisect.bisect_right(starts, f.start) - 1][0]
                found.append((f, origin))
        return found

    def _ordinary(self, f: Finding, site: str | None) -> bool:
        if ordinary.public_sample(f.secret) or ordinary.digest_not_key(f.rule_id, f.secret, f.match):
            return True
        return self.provenance is not None and site is not None and self.provenance.known(site, f.secret)

    def _hits(self, text: bytes, where: str, s: Settings, site: str | None = None) -> list[Hit]:
        disabled = frozenset(s.disabled_rules)
        return [Hit(f.rule_id, where) for f, _ in self._findings(text, disabled) if not self._ordinary(f, site)]

    @_closed("text")
    def scan_text(
        self, text: bytes | str, where: str, settings: Settings = DEFAULTS, *, site: str | None = None
    ) -> Verdict:
        """One part of a request the caller names with a fixed word (``where``): the method,
        the authority, a trailer block, a websocket message."""
        data = _utf8(text) if isinstance(text, str) else bytes(text)
        return Verdict(hits=_unique(self._hits(data, where, settings, site)))

    @_closed("request head")
    def scan_head(
        self, path: str, headers: Iterable[tuple[str, str]], settings: Settings = DEFAULTS, *, site: str | None = None
    ) -> Verdict:
        """The request target (path, raw and decoded query) and every header, name and value."""
        hits: list[Hit] = []
        p, _, q = path.partition("?")
        hits += self._hits(_utf8(p) + b"\n" + urllib.parse.unquote_to_bytes(p), "url path", settings, site)
        if q:
            hits += self._query(q, settings, site)
        headers = [(n, v) for n, v in headers]
        scanned = [(i, n, v) for i, (n, v) in enumerate(headers, 1) if not ordinary.nonce_header(n, v)]
        if scanned:
            # one scan for all headers, one per line: a finding's line names its header
            text = _utf8("\n".join(f"{n}: {v}" for _, n, v in scanned))
            nl = [i for i, c in enumerate(text) if c == 0x0A]
            for f, origin in self._findings(text, frozenset(settings.disabled_rules)):
                if self._ordinary(f, site):
                    continue
                line = bisect.bisect_left(nl, origin) if origin >= 0 else f.line - 1
                if 0 <= line < len(scanned):
                    i, n, _ = scanned[line]
                    hits.append(Hit(f.rule_id, _header_label(n, i)))
                else:
                    hits.append(Hit(f.rule_id, "headers"))
        return Verdict(hits=_unique(hits))

    def _query(self, q: str, s: Settings, site: str | None) -> list[Hit]:
        """The raw query (``+`` kept) and its decoded pairs; a pagination token is judged by
        every rule but gitleaks' generic one."""
        plain, paging = [], []
        for piece in q.replace(";", "&").split("&"):
            k, _, v = piece.partition("=")
            name = urllib.parse.unquote_plus(k)
            lines = [piece, f"{name}={urllib.parse.unquote(v)}", f"{name}={urllib.parse.unquote_plus(v)}"]
            (paging if ordinary.pagination_param(name) else plain).extend(lines)
        hits = self._hits(_utf8("\n".join(plain)), "query", s, site) if plain else []
        if paging:
            generic = Settings(
                body=s.body,
                disabled_rules=tuple(s.disabled_rules) + ("generic-api-key",),
                max_body_bytes=s.max_body_bytes,
            )
            hits += self._hits(_utf8("\n".join(paging)), "query", generic, site)
        return hits

    @_closed("body")
    def scan_body(
        self, body: bytes, headers: Iterable[tuple[str, str]], settings: Settings = DEFAULTS, *, site: str | None = None
    ) -> Verdict:
        """A whole (buffered) body as it came off the wire, content-encoding still applied."""
        if not settings.body or not body:
            return PASS
        headers = list(headers)
        if len(body) > settings.max_body_bytes:
            return Verdict(cannot_scan=f"body: {len(body)} bytes is over the {settings.max_body_bytes}-byte scan cap")
        return Verdict(hits=_unique(self._body_hits(bytes(body), headers, settings, site)))

    def _body_hits(self, raw: bytes, headers: list[tuple[str, str]], s: Settings, site: str | None) -> list[Hit]:
        cs = B.codings(headers)
        data = B.undo(raw, cs, s.max_body_bytes) if cs else raw
        hits = self._hits(data, "body", s, site)
        if cs:
            hits += self._hits(raw, "body", s, site)  # the bytes as sent, too
        for where, text in B.structured(data, B.header(headers, "content-type")):
            hits += self._hits(text, where, s, site)
        return hits

    @_closed("request")
    def scan_request(
        self,
        path: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | None,
        settings: Settings = DEFAULTS,
        *,
        site: str | None = None,
    ) -> Verdict:
        headers = list(headers)
        return self.scan_head(path, headers, settings, site=site) + self.scan_body(
            body or b"", headers, settings, site=site
        )

    def body_stream(
        self, headers: Iterable[tuple[str, str]], settings: Settings = DEFAULTS, *, site: str | None = None
    ) -> BodyStream:
        return BodyStream(self, list(headers), settings, site)


_B64ISH = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-%\\")


def _cut_point(held: bytes | bytearray, cut: int) -> int:
    """Where to cut a streamed window so that an encoded run across ``cut`` is not split at an
    arbitrary offset: at the start of the line holding ``cut`` when that is within the overlap,
    else at a 4-character step from the start of the run (base64 stays aligned)."""
    line = held.rfind(b"\n", 0, cut) + 1
    if cut - line <= STREAM_OVERLAP // 2:
        return line
    start = cut
    while start > line and held[start - 1] in _B64ISH:
        start -= 1
    if start == cut:
        return cut
    return start + ((cut - start) // 4) * 4


class BodyStream:
    """Scans a body as it streams. ``feed`` returns the bytes safe to forward now: everything but
    an overlap window kept back, so a secret split across chunks is seen whole before any of it
    leaves, and the window is cut where no encoded run is split. A body with a declared coding or
    a structure (JSON, form, multipart) is held whole (up to the cap) and scanned at the end as a
    buffered body is. Once ``verdict.blocked``, forward nothing more and abort the upstream
    request."""

    def __init__(self, rs: RequestScanner, headers: list[tuple[str, str]], settings: Settings, site: str | None = None):
        self.rs = rs
        self.settings = settings
        self.site = site
        self.headers = headers
        self.verdict = PASS
        self.total = 0
        self._held = bytearray()
        self._whole = False
        if settings.body:
            self._guard(self._classify)

    def _classify(self) -> bytes:
        cs = B.codings(self.headers)
        B.check_codings(cs)
        self._whole = bool(cs) or B.structured_type(B.header(self.headers, "content-type"))
        return b""

    def _guard(self, fn) -> bytes:
        try:
            return fn()
        except CannotScan as e:
            self.verdict = Verdict(cannot_scan=str(e))
        except Exception as e:
            self.verdict = Verdict(cannot_scan=f"body: the scan failed ({type(e).__name__})")
        return b""

    def feed(self, chunk: bytes) -> bytes:
        if self.verdict.blocked:
            return b""
        return self._guard(lambda: self._feed(chunk))

    def _feed(self, chunk: bytes) -> bytes:
        self.total += len(chunk)
        if not self.settings.body:
            return bytes(chunk)
        if self.total > self.settings.max_body_bytes:
            self.verdict = Verdict(cannot_scan=f"body: over the {self.settings.max_body_bytes}-byte scan cap")
            return b""
        self._held += chunk
        if self._whole or len(self._held) < STREAM_OVERLAP + STREAM_RELEASE:
            return b""  # held whole, or tiny chunks: wait for more rather than rescan the window
        hits = self.rs._hits(bytes(self._held), "body", self.settings, self.site)
        if hits:
            self.verdict = Verdict(hits=_unique(hits))
            return b""
        cut = _cut_point(self._held, max(0, len(self._held) - STREAM_OVERLAP))
        out = bytes(self._held[:cut])
        del self._held[:cut]
        return out

    def finish(self) -> bytes:
        """The held-back rest, or b"" when the body is blocked (check ``verdict``)."""
        if self.verdict.blocked or not self.settings.body:
            return b""
        return self._guard(self._finish)

    def _finish(self) -> bytes:
        data = bytes(self._held)
        if self._whole:
            hits = self.rs._body_hits(data, self.headers, self.settings, self.site)
        else:
            hits = self.rs._hits(data, "body", self.settings, self.site)
        if hits:
            self.verdict = Verdict(hits=_unique(hits))
            return b""
        self._held.clear()
        return data
