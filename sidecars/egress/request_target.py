"""Checks of a request's target that hold on every route: the path as servers may decode it, the
methods it asks for besides its own (headers, query, body), the headers that make a server act on
another URL, git pushes (the git gate's), and the authorities it names (request line, Host, SNI)
against the connection's destination. Pure (stdlib + the contract)."""

from __future__ import annotations

import json
import re
import unicodedata
import urllib.parse
from collections.abc import Iterable

from bottle_contract.hosts import normalize_host

# How many rounds of percent-decoding a path may need before it is stable (%252e -> %2e -> .).
MAX_DECODE_ROUNDS = 3
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
# Headers that make a server, proxy or framework act on another path or host than the request
# line's (IIS/Symfony/Zend rewrites, nginx/Envoy originals, forwarded hosts): refused outright.
REWRITE_HEADERS = (
    "x-original-url",
    "x-rewrite-url",
    "x-override-url",
    "x-original-uri",
    "x-original-path",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-envoy-original-path",
    "x-forwarded-host",
    "x-forwarded-server",
    "x-host",
    "x-http-destinationurl",
    "x-proxy-url",
)
# Look-alikes of '.', '/' and '\' that NFKC does not fold into them.
LOOKALIKES = frozenset("\u2215\u2044\u29f8\u29f5\u2216\u3002\uff61\u2027\u0701\u0702\ua4f8")
_OVERLONG = re.compile(rb"[\xc0\xc1][\x80-\xbf]|\xe0[\x80-\x9f]|\xf0[\x80-\x8f]")
_PCT_U = re.compile(r"%u[0-9a-f]{4}", re.IGNORECASE)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_MULTIPART_METHOD = re.compile(rb'name="?_method"?[^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*\r?\n([^\r\n]*)', re.IGNORECASE)


def _decode_fully(path: str) -> str | None:
    """``path`` percent-decoded until stable; None when it takes more than MAX_DECODE_ROUNDS."""
    for _ in range(MAX_DECODE_ROUNDS + 1):
        decoded = urllib.parse.unquote(path, errors="surrogateescape")
        if decoded == path:
            return path
        path = decoded
    return None


def routed_path(path: str) -> str:
    """The path (query dropped) as the most lenient server would route it: percent-decoded until
    stable, runs of '/' as one, case folded, no trailing '/'. For telling which endpoint a request
    reaches (``//v1/%6Dessages/`` is ``/v1/messages``), never for matching a route's globs."""
    raw = path.split("?", 1)[0]
    decoded = _decode_fully(raw) or raw  # one that never settles is refused by path_problem
    return re.sub(r"/{2,}", "/", decoded).lower().rstrip("/") or "/"


def path_problem(path: str) -> str | None:
    """Why a request path is refused on every route, else None.

    The path is percent-decoded until stable, as a server that decodes more than once would see
    it. Refused: '.' and '..' segments (servers resolve them, so /v1/../admin would slip past a
    "/v1/*" glob), backslashes (some servers treat them as '/'), ';' anywhere (path parameters:
    /v1/..;/admin is /admin to some servers), control characters, and paths that stay
    percent-encoded after MAX_DECODE_ROUNDS rounds.
    """
    raw = path.split("?", 1)[0]
    if not raw.startswith("/") and raw != "*":
        # An absolute URL in the path (HTTP/2 allows a client to send one): servers may route by it.
        return "request target is not a path starting with '/'"
    decoded = _decode_fully(raw)
    if decoded is None:
        return "path is percent-encoded too many times"
    if ";" in decoded:
        return "path has ';' parameters"
    if "\\" in decoded:
        return "path has a backslash"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        return "path has control characters"
    if any(seg in (".", "..") for seg in decoded.split("/")):
        return "path has '.' or '..' segments"
    if _PCT_U.search(raw):
        return "path has %u escapes"
    if _OVERLONG.search(decoded.encode("utf-8", "surrogateescape")):
        # Overlong UTF-8 (%c0%ae is '.' to a lenient decoder): other invalid bytes are matched as bytes.
        return "path has overlong UTF-8"
    if any(ord(c) > 0x7F and (c in LOOKALIKES or set(unicodedata.normalize("NFKC", c)) & set("./\\")) for c in decoded):
        return "path has a look-alike of '.' or '/'"
    return None


def limited_path_problem(path: str) -> str | None:
    """Why a path is too ambiguous for a route that limits paths, else None.

    Such a route's globs are matched against the path decoded once; a server that sees other
    segments than that (an encoded '/', or a second round of decoding) could serve another path.
    """
    raw = path.split("?", 1)[0]
    once = urllib.parse.unquote(raw, errors="surrogateescape")
    if "%2f" in raw.lower():
        return "path has an encoded '/' (%2F) on a route that limits paths"
    if _decode_fully(raw) != once:
        return "path is percent-encoded more than once on a route that limits paths"
    return None


def method_overrides(headers: Iterable[tuple[str, str]], query: str = "") -> list[str]:
    """The methods a request asks for besides its own: method-override headers and ``_method=``."""
    found = [v for k, v in headers if k.lower() in METHOD_OVERRIDE_HEADERS]
    found += [v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k == "_method"]
    return found


def body_method_overrides(body: bytes, content_type: str) -> list[str]:
    """The methods a form or JSON body asks for with ``_method`` (Rails, Laravel, Symfony read it)."""
    mime = content_type.split(";")[0].strip().lower()
    if mime == "application/x-www-form-urlencoded":
        text = body.decode("latin-1")
        return [v for k, v in urllib.parse.parse_qsl(text, keep_blank_values=True) if k == "_method"]
    if mime == "multipart/form-data":
        return [m.group(1).decode("latin-1").strip() for m in _MULTIPART_METHOD.finditer(body)]
    if mime == "application/json" or mime.endswith("+json"):
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return []
        value = doc.get("_method") if isinstance(doc, dict) else None
        return [value] if isinstance(value, str) else []
    return []


def may_override_in_body(content_type: str) -> bool:
    mime = content_type.split(";")[0].strip().lower()
    return mime in FORM_TYPES or mime == "application/json" or mime.endswith("+json")


def rewrite_header_problem(headers: Iterable[tuple[str, str]]) -> str | None:
    """Why the request's headers are refused on every route: one that makes a server act on
    another URL or host than the request line names."""
    for name, _ in headers:
        if name.strip().lower() in REWRITE_HEADERS:
            return f"header {name.strip().lower()} rewrites the request's URL or host: refused on every route"
    return None


GIT_GATE_ANSWER = (
    "git pushes leave the bottle only through the git gate: push to the bottle's own git remote "
    "(the git-gate), which scans the push with gitleaks and forwards it upstream; egress refuses "
    "git-receive-pack on every route"
)


def git_push_problem(path: str, headers: Iterable[tuple[str, str]]) -> str | None:
    """GIT_GATE_ANSWER when the request is (or advertises) a git smart-HTTP push."""
    target = _decode_fully(urllib.parse.unquote_plus(path)) or path
    if "git-receive-pack" in target.lower():
        return GIT_GATE_ANSWER
    for name, value in headers:
        if name.lower() == "content-type" and "git-receive-pack" in value.lower():
            return GIT_GATE_ANSWER
    return None


def target_authorities(authority: str, path: str) -> list[str]:
    """The authorities a request line names: its own (absolute form, :authority) and, when the
    path is itself an absolute URL, that URL's."""
    out = [authority] if authority else []
    if not path.startswith("/") and "://" in path.split("?", 1)[0]:
        out.append(urllib.parse.urlsplit(path).netloc or "?")
    return out


def split_authority(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` or ``[v6][:port]`` as (host, port); None when it is not an authority at all."""
    value = value.strip()
    if not value or any(c in value for c in "@/\\ \t?#"):
        return None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") > 1:
        host, port_text = value, None  # a bare IPv6 literal
    else:
        host, _, port_text = value.partition(":")
        port_text = port_text if ":" in value else None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        return normalize_host(host), int(port_text)
    return normalize_host(host), None


def authority_problem(
    host: str, port: int, authorities: Iterable[str], host_headers: Iterable[str], sni: str | None
) -> tuple[str, str] | None:
    """(reason, claimed host) when the request names another destination than the connection's.

    The upstream connection goes to host:port. A server or CDN routes by the request's own
    authority instead: the absolute-form URL (or HTTP/2 :authority, or an absolute URL an
    HTTP/2 client put in :path), the Host header and the TLS SNI. Each of them must name the same host, and a port where one is given must be the same
    port; otherwise an allowed host could front for any other site behind the same CDN.
    """
    target = normalize_host(host)
    claims = [("request authority", a) for a in authorities if a]
    host_headers = list(host_headers)
    if len(host_headers) > 1:
        return "more than one Host header", target
    claims += [("Host header", h) for h in host_headers]
    for what, value in claims:
        parsed = split_authority(value)
        if parsed is None:
            return f"{what} {value!r} is not a host[:port]", target
        claimed, claimed_port = parsed
        if claimed != target:
            return f"{what} {claimed!r} does not match the destination {target}:{port}", claimed
        if claimed_port is not None and claimed_port != port:
            return f"{what} names port {claimed_port} but the destination is {target}:{port}", claimed
    if sni and normalize_host(sni) != target:
        return f"TLS SNI {sni!r} does not match the destination {target}:{port}", normalize_host(sni)
    return None
