"""Checks of a request's target that hold on every route: the path as servers may decode it, the
methods it asks for besides its own, and the authorities it names (request line, Host, SNI)
against the connection's destination. Pure (stdlib + the contract)."""

from __future__ import annotations

import urllib.parse
from typing import Iterable

from bottle_contract.hosts import normalize_host

# How many rounds of percent-decoding a path may need before it is stable (%252e -> %2e -> .).
MAX_DECODE_ROUNDS = 3
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")


def _decode_fully(path: str) -> str | None:
    """``path`` percent-decoded until stable; None when it takes more than MAX_DECODE_ROUNDS."""
    for _ in range(MAX_DECODE_ROUNDS + 1):
        decoded = urllib.parse.unquote(path, errors="surrogateescape")
        if decoded == path:
            return path
        path = decoded
    return None


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
