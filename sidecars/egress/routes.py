"""Egress's side of routes.yaml: match a request to a route, check the request target, build
the injected credential, scrub it from what comes back.

routes.yaml itself (schema, validation, the Route/Policy types) is the contract's
(``bottle_contract.policy``), shared with the host that writes it and supervise that withdraws
routes allowed once. Pure (stdlib + the contract) so the rules are unit-tested without mitmproxy;
addon.py wires them in.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Iterable, Mapping

from bottle_contract.hosts import normalize_host
from bottle_contract.policy import Auth, Policy, Route, load_policy, load_policy_text

__all__ = ["Auth", "Policy", "Route", "normalize_host"]

REDACTED = b"[redacted by egress]"


class CredentialError(Exception):
    """A route's real secret cannot be used; `env_name` names the variable that should hold it."""

    def __init__(self, env_name: str, problem: str):
        super().__init__(f"{env_name} {problem}")
        self.env_name = env_name


class CredentialMissing(CredentialError):
    """The environment variable that should hold a route's real secret is unset or empty."""

    def __init__(self, env_name: str):
        super().__init__(env_name, "is not set in the sidecars container")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    route_index: int | None
    reason: str


def could_allow(policy: Policy, host: str, port: int) -> bool:
    """True when some route allows host:port for some method/path (a cheap pre-check for raw connects)."""
    return any(r.matches_host(host) and port in r.ports for r in policy.routes)


def matches_path(route: Route, path: str) -> bool:
    """Whether the decoded ``path`` falls under the route's globs (no globs: any path)."""
    return not route.paths or any(fnmatch.fnmatchcase(path, p) for p in route.paths)


def match(
    policy: Policy, method: str, scheme: str, host: str, port: int, path: str, overrides: Iterable[str] = ()
) -> Decision:
    """First route that allows the request wins; the reason of a block names the first rule that failed.

    ``overrides``: the methods the request asks for through method-override headers (or a
    ``_method`` query parameter); a route limited by method must allow each of them too.
    """
    method = method.upper()
    scheme = scheme.lower()
    host = normalize_host(host)
    overrides = tuple(o.strip().upper() for o in overrides)
    problem = path_problem(path)
    if problem:
        return Decision(False, None, problem)
    match_path = urllib.parse.unquote(path.split("?", 1)[0]) or "/"
    by_host = [(i, r) for i, r in enumerate(policy.routes) if r.matches_host(host)]
    if not by_host:
        return Decision(False, None, f"no route for host {host}")
    by_port = [(i, r) for i, r in by_host if port in r.ports]
    if not by_port:
        return Decision(False, None, f"no route for port {port} of host {host}")
    by_method = [(i, r) for i, r in by_port if not r.methods or method in r.methods]
    if not by_method:
        return Decision(False, None, f"no route for method {method} on {host}:{port}")
    # Servers that honour X-HTTP-Method-Override and friends act on the overriding method.
    by_override = [(i, r) for i, r in by_method if not r.methods or all(o in r.methods for o in overrides)]
    if not by_override:
        return Decision(False, None, f"method override to {'/'.join(overrides)} not allowed on {host}:{port}")
    by_path = [(i, r) for i, r in by_override if matches_path(r, match_path)]
    if not by_path:
        return Decision(False, None, f"no route for path {match_path} on {host}:{port}")
    if any(r.paths for _, r in by_path):
        problem = limited_path_problem(path)
        if problem:
            by_path = [(i, r) for i, r in by_path if not r.paths]
            if not by_path:
                return Decision(False, None, problem)
    for i, r in by_path:
        if scheme in r.schemes:
            return Decision(True, i, f"route {i} ({r.host})")
    i, r = by_path[0]
    return Decision(False, None, f"route {i} does not allow scheme {scheme}")


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


def load_routes(path: str) -> Policy:
    """routes.yaml at ``path``; ValueError (the contract's PolicyError) naming the key otherwise."""
    return load_policy(path)


def parse_routes(text: str, source: str = "routes.yaml") -> Policy:
    return load_policy_text(text, source)


def _secret(route: Route, environ: Mapping[str, str]) -> str:
    assert route.auth is not None
    value = environ.get(route.auth.token_env, "")
    # An empty value is treated as missing: injecting it is useless and scrubbing "" is meaningless.
    if not value:
        raise CredentialMissing(route.auth.token_env)
    return value


def auth_headers(route: Route, environ: Mapping[str, str]) -> dict[str, str]:
    """The headers that carry the route's real credential; {} for a route without auth."""
    if route.auth is None:
        return {}
    value = _secret(route, environ)
    if route.auth.scheme == "bearer":
        return {"Authorization": f"Bearer {value}"}
    if route.auth.scheme == "basic":
        if ":" not in value:
            raise CredentialError(route.auth.token_env, "must hold user:password for basic auth")
        return {"Authorization": "Basic " + base64.b64encode(value.encode()).decode("ascii")}
    assert route.auth.header is not None
    return {route.auth.header: value}


def secret_values(route: Route, environ: Mapping[str, str]) -> list[str]:
    """Every form of the route's secret that an upstream could echo back to the agent."""
    if route.auth is None:
        return []
    value = _secret(route, environ)
    values = [value]
    if route.auth.scheme == "basic":
        values.append(base64.b64encode(value.encode()).decode("ascii"))
        password = value.split(":", 1)[1] if ":" in value else ""
        if password:
            values.append(password)
    return values


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

    def scrub_text(self, text: str) -> str:
        return self.scrub(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

    def stream(self) -> "StreamScrubber":
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
