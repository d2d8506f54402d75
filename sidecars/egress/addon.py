"""mitmproxy 11 addon of the bottle's egress: enforce routes.yaml, inject real credentials, scrub them
from responses, and log every decision to requests.jsonl.
"""

from __future__ import annotations

import asyncio
import datetime
import glob
import hashlib
import json
import logging
import os
import re
import signal
import sys

from mitmproxy import ctx, http
from mitmproxy.net import encoding
from mitmproxy.proxy import commands, layer, layers
from mitmproxy.proxy.layers.tls import starts_like_tls_record

# Imported through the daemon's pythonpath (daemons.json): its own folder and the contract.
import dlp as D
import dlp.request as DR
import routes as R
from bottle_contract import layout, ports
from bottle_contract.files import append_line, atomic_write

logger = logging.getLogger("egress")

STATE_ENV = "BOTTLE_EGRESS_STATE"
DLP_RULES_ENV = "BOTTLE_DLP_RULES"
# Bodies at least this large are scanned in a worker thread, off mitmproxy's event loop.
DLP_THREAD_BYTES = 256 << 10
DEFAULT_STATE_DIR = layout.bundle_path(layout.EGRESS)
# Bodies above this (or of unknown length) are streamed instead of buffered in memory.
STREAM_THRESHOLD = 1 << 20
# A blocked request whose body may be larger than this is refused before its body is read.
BLOCKED_BODY_READ_LIMIT = 64 << 10
# requests.jsonl is rotated when it grows past this, keeping this many older files (.1 newest).
LOG_MAX_BYTES = layout.REQUESTS_LOG_CAP.max_bytes
LOG_KEEP = layout.REQUESTS_LOG_CAP.keep
ONCE_USED_FILE = layout.EGRESS_ONCE_USED
# Decisions of this kind are answered by the addon itself rather than the upstream.
NO_ROUTE_PREFIX = "no route"
# Blocked requests that still carry a body are pointed at a name under this suffix, which
# server_connect refuses: mitmproxy then answers at once and drops the body unread.
REFUSED_SUFFIX = ".refused.egress.invalid"
# Meant for the proxy only (hop-by-hop): never forwarded upstream. Connection, TE, Upgrade and
# Transfer-Encoding mitmproxy handles itself.
PROXY_HEADERS = ("proxy-authorization", "proxy-connection", "proxy-authenticate", "keep-alive")
# Connection tokens mitmproxy acts on; any other token names a header to drop, except the ones
# that frame or route the request (dropping those would change how the body is read upstream).
CONNECTION_TOKENS = {"close", "keep-alive", "upgrade"}
FRAMING_HEADERS = {"host", "content-length", "transfer-encoding", "upgrade", "te"}


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _stat_sig(path: str):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _strip_proxy_headers(headers) -> None:
    """Drop the headers meant for this proxy (and those the Connection header names) before the
    request goes upstream: Proxy-Authorization and friends stop at egress."""
    named = set()
    for value in headers.get_all("connection"):
        named |= {t.strip().lower() for t in value.split(",") if t.strip()}
    extra = named - CONNECTION_TOKENS - FRAMING_HEADERS
    for name in (*PROXY_HEADERS, *extra):
        if name in headers:
            del headers[name]
    if named - CONNECTION_TOKENS:
        kept = [t for t in named if t in CONNECTION_TOKENS]
        if kept:
            headers["connection"] = ", ".join(sorted(kept))
        else:
            del headers["connection"]


def _declared_length(req) -> int | None:
    """The body length the request declares (0 for none); None when it is unknown (chunked, or an
    HTTP/2 or 3 request without Content-Length)."""
    if "transfer-encoding" in req.headers:
        return None
    length = req.headers.get("content-length")
    if length is not None:
        return int(length) if length.strip().isdigit() else None
    return None if (req.is_http2 or req.is_http3) else 0


def _body_within(req, limit: int) -> bool:
    length = _declared_length(req)
    return length is not None and length <= limit


def _should_stream(flow: http.HTTPFlow) -> bool:
    """Stream allowed bodies above STREAM_THRESHOLD, and bodies of unknown length when the
    upstream frames them itself (HTTP/1.1 chunked, or an HTTP/2 upstream). An HTTP/2 body of
    unknown length bound for an HTTP/1.1 (or not yet connected) upstream is buffered, so that
    request() can give it the Content-Length without which that upstream would drop it."""
    req = flow.request
    length = _declared_length(req)
    if length is not None:
        return length > STREAM_THRESHOLD
    if not (req.is_http2 or req.is_http3):
        return True  # HTTP/1.1 chunked: the framing goes upstream with it
    server = flow.server_conn
    return bool(server and server.connected and server.alpn == b"h2")


class RequestBodyStream:
    """The chunks of an allowed request body streamed upstream, as mitmproxy delivers them; with
    DLP on (an HTTP/1.1 body of unknown length), each chunk goes through DLP's BodyStream first."""

    def __init__(self, flow: http.HTTPFlow, scan: "DR.BodyStream | None" = None, egress: "Egress | None" = None):
        self.flow = flow
        self.scan = scan
        self.egress = egress

    def __call__(self, chunk: bytes) -> list[bytes]:
        if self.scan is None:
            return [chunk] if chunk else []
        out = self.scan.feed(chunk) if chunk else self.scan.finish()
        if self.scan.verdict.blocked:
            if self.egress is not None:
                self.egress.dlp_stream_blocked(self.flow, self.scan.verdict)
            self.scan = _Refused()
            return []
        # A list, never b"": an empty chunk of a chunked HTTP/1.1 body would end it early.
        return [out] if out else []


class _Refused:
    """Stands in for a BodyStream after a hit: nothing more leaves."""

    verdict = DR.Verdict(cannot_scan="the flow was already blocked")

    def feed(self, chunk: bytes) -> bytes:
        return b""

    def finish(self) -> bytes:
        return b""


class _Pending:
    """An allowed flow waiting for its body (and DLP) before its credential is injected.
    (A plain class: mitmproxy loads this script outside sys.modules, where dataclasses fail.)"""

    __slots__ = ("route", "reason", "headers", "secrets", "settings", "fields", "once")

    def __init__(self, route: int, reason: str, headers: dict[str, str], secrets: list[str],
                 settings: "DR.Settings", fields: dict, once: str | None = None):
        self.route, self.reason, self.headers = route, reason, headers
        self.secrets, self.settings, self.fields = secrets, settings, fields
        self.once = once


def _decode_all(resp: http.Response) -> bytes:
    """The response body with every content coding undone, stacked ones ("gzip, gzip") included;
    ValueError for a coding mitmproxy cannot decode ("compress", unknown names) or a corrupt body."""
    data = resp.raw_content or b""
    codings = [c.strip().lower() for c in resp.headers.get("content-encoding", "").split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding not in ("gzip", "x-gzip", "deflate", "br", "zstd"):
            raise ValueError(f"content coding {coding!r} is not supported")
        try:
            data = encoding.decode(data, "gzip" if coding == "x-gzip" else coding)
        except ValueError as e:
            raise ValueError(f"{coding} body does not decode ({e})") from None
    return data


_TOKEN = re.compile(rb"[A-Za-z_-]{0,24}")


def _starts_like_http(data: bytes) -> bool:
    """True while ``data`` can still be the start of an HTTP/1 request line (a method token and a
    space) or of the HTTP/2 preface ("PRI * HTTP/2.0")."""
    token = _TOKEN.match(data).group()
    if len(token) == len(data):
        return len(token) < 24  # all of it may still be a method name
    return bool(token) and data[len(token) : len(token) + 1] == b" "


class _CloseClient(layer.Layer):
    """A layer that closes the client's connection on its first event and ignores the rest."""

    def __init__(self, context):
        super().__init__(context)
        self._closed = False

    def _handle_event(self, event):
        if not self._closed:
            self._closed = True
            yield commands.CloseConnection(self.context.client)


def _scrub_fields(fields, scrubber: R.Scrubber):
    return tuple((k, scrubber.scrub(v)) for k, v in fields)


class Egress:
    def __init__(self, state_dir: str | None = None, environ=None, log_max_bytes: int = LOG_MAX_BYTES,
                 dlp_rules: str | None = None):
        self.state_dir = state_dir or os.environ.get(STATE_ENV, DEFAULT_STATE_DIR)
        # DLP: gitleaks' pinned rules (its Hyperscan database was compiled at image build). When
        # they cannot be loaded, every request that would leave is blocked instead (fail closed).
        self.dlp: DR.RequestScanner | None = None
        self.dlp_error: str | None = None
        self.rule_ids: frozenset[str] = frozenset()
        try:
            scanner = D.Scanner.load(dlp_rules or os.environ.get(DLP_RULES_ENV) or str(D.RULES_PATH))
            self.dlp = DR.RequestScanner(scanner)
            self.rule_ids = frozenset(scanner.rules.by_id())
        except Exception as e:  # noqa: BLE001 - any failure here must block, not crash the proxy
            self.dlp_error = " ".join(str(e).split()) or type(e).__name__
            logger.warning(f"egress: DLP rules cannot be loaded ({self.dlp_error}); blocking every request")
        self.log_max_bytes = log_max_bytes
        self.environ = os.environ if environ is None else environ
        self.policy: R.Policy | None = None
        self.policy_error: str | None = "routes.yaml not loaded yet"
        self._routes_sig = None
        # Scrubbers of flows that carry an injected credential, by flow id; kept out of
        # flow.metadata so the secrets never end up in a saved or printed flow.
        self._scrubbers: dict[str, R.Scrubber] = {}
        # Allowed flows waiting for their body (DLP) and credential, by flow id.
        self._pending: dict[str, _Pending] = {}
        # Blocked flows whose answer waits for the body to end (or for server_connect), by id.
        self._refusals: dict[str, http.Response] = {}
        self._ca_sig = None
        self._ca_option: str | None = None  # the trust bundle path this addon set, if any
        # Ids of routes allowed once that a request has used (kept on disk across restarts).
        self._once_used: set[str] = set()

    # paths -------------------------------------------------------------------------------------
    @property
    def routes_path(self) -> str:
        return os.path.join(self.state_dir, layout.ROUTES)

    @property
    def log_path(self) -> str:
        return os.path.join(self.state_dir, layout.REQUESTS_LOG)

    @property
    def ready_path(self) -> str:
        return os.path.join(self.state_dir, layout.READY)

    @property
    def once_used_path(self) -> str:
        return os.path.join(self.state_dir, ONCE_USED_FILE)

    def _load_once_used(self) -> None:
        try:
            with open(self.once_used_path, encoding="utf-8") as f:
                used = json.load(f)
            self._once_used = {u for u in used if isinstance(u, str)} if isinstance(used, list) else set()
        except (OSError, ValueError):
            self._once_used = set()

    def _use_once(self, once: str) -> None:
        self._once_used.add(once)
        # Only ids still in the policy matter: the file stays as small as the routes allowed once.
        live = {r.once for r in self.policy.routes if r.once} if self.policy else set()
        self._once_used &= live | {once}
        try:
            atomic_write(self.once_used_path, json.dumps(sorted(self._once_used)) + "\n", mode=0o644)
        except OSError as e:
            logger.warning(f"egress: cannot record a route allowed once as used: {e}")

    @property
    def upstream_ca_path(self) -> str:
        return os.path.join(self.state_dir, layout.UPSTREAM_CA)

    # lifecycle ---------------------------------------------------------------------------------
    def load(self, loader) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        try:
            os.unlink(self.ready_path)  # a ready file from an earlier run would lie
        except FileNotFoundError:
            pass
        self._load_once_used()
        self.reload(force=True)
        self._install_sighup()

    def running(self) -> None:
        self._install_sighup()
        self._apply_upstream_ca()
        self._write_ready()

    def done(self) -> None:
        try:
            os.unlink(self.ready_path)
        except FileNotFoundError:
            pass

    def _install_sighup(self) -> None:
        # mitmdump leaves SIGHUP at its default (terminate); bottle init sends it to ask for a reload.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.add_signal_handler(signal.SIGHUP, self.on_sighup)

    def on_sighup(self) -> None:
        logger.warning("egress: SIGHUP: reloading routes.yaml and upstream trust")
        self.reload(force=True)
        self._apply_upstream_ca()
        self._write_ready()

    def _write_ready(self) -> None:
        port = ctx.options.listen_port or ports.EGRESS
        host = ctx.options.listen_host or "0.0.0.0"
        ps = ctx.master.addons.get("proxyserver") if getattr(ctx, "master", None) else None
        if ps is not None:
            addrs = ps.listen_addrs()
            if addrs:
                host, port = addrs[0][0], addrs[0][1]
        info = {
            "pid": os.getpid(),
            "listen_host": host,
            "listen_port": port,
            "routes_loaded": self.policy is not None,
            "routes_error": self.policy_error,
            "ca_cert": os.path.join(os.path.expanduser(ctx.options.confdir), "mitmproxy-ca-cert.pem"),
            "at": _now_iso(),
        }
        atomic_write(self.ready_path, (json.dumps(info) + "\n").encode(), mode=0o644)

    # policy ------------------------------------------------------------------------------------
    def reload(self, force: bool = False) -> bool:
        """Load routes.yaml when it changed (or when forced); a bad file keeps the previous policy."""
        sig = _stat_sig(self.routes_path)
        if not force and sig == self._routes_sig:
            return False
        self._routes_sig = sig  # also for a bad file: retry only once it changes again
        try:
            policy = R.load_routes(self.routes_path)
            unknown = policy.unknown_rules(self.rule_ids) if self.dlp is not None else None
            if unknown:
                raise ValueError(f"{self.routes_path}: {unknown}")
        except ValueError as e:
            self.policy_error = str(e)
            kept = "keeping the previous policy" if self.policy else "blocking every request"
            # warning, not error: mitmdump exits on errors logged during startup.
            logger.warning(f"egress: {e}; {kept}")
            return False
        self.policy, self.policy_error = policy, None
        logger.info(f"egress: loaded {len(policy.routes)} route(s) of bottle {policy.bottle}")
        return True

    def _apply_upstream_ca(self) -> None:
        """Trust state/upstream-ca.pem (e.g. a TLS-intercepting corporate proxy) for upstream TLS.

        mitmproxy's ssl_verify_upstream_trusted_ca replaces its default (certifi) trust, so the file
        is appended to certifi's bundle. The bundle's name carries its hash because mitmproxy caches
        TLS contexts by path.
        """
        sig = _stat_sig(self.upstream_ca_path)
        if sig == self._ca_sig:
            return
        self._ca_sig = sig
        current = ctx.options.ssl_verify_upstream_trusted_ca
        if current and current != self._ca_option:
            return  # set explicitly on the command line: the operator's choice wins
        if sig is None:
            if self._ca_option:
                ctx.options.update(ssl_verify_upstream_trusted_ca=None)
                self._ca_option = None
            return
        import certifi  # a mitmproxy dependency

        with open(certifi.where(), "rb") as f:
            bundle = f.read()
        with open(self.upstream_ca_path, "rb") as f:
            extra = f.read()
        data = bundle.rstrip(b"\n") + b"\n" + extra
        path = os.path.join(
            self.state_dir, f"upstream-trust-{hashlib.sha256(data).hexdigest()[:16]}.pem"
        )
        if not os.path.exists(path):
            atomic_write(path, data, mode=0o644)
        ctx.options.update(ssl_verify_upstream_trusted_ca=path)
        self._ca_option = path
        for old in glob.glob(os.path.join(self.state_dir, "upstream-trust-*.pem")):
            if old != path:
                os.unlink(old)
        logger.info(f"egress: trusting {self.upstream_ca_path} for upstream TLS")

    # decisions log -----------------------------------------------------------------------------
    def _record(self, decision: str, *, method, scheme, host, port, path, route, reason, dlp=None,
                once: str | None = None) -> None:
        entry = {
            "ts": _now_iso(),
            "decision": decision,
            "method": method,
            "scheme": scheme,
            "host": host,
            "port": port,
            "path": path,
            "route": route,
            "reason": reason,
        }
        if dlp is not None:
            entry["dlp"] = dlp  # rule ids and where they matched, never the secret
        if once is not None:
            entry["once"] = once  # the proposal whose once-only route this request used
        line = json.dumps(entry)
        # One O_APPEND write per line (concurrent writers never interleave), rotated at the cap;
        # a file the host rotated away is recreated.
        try:
            append_line(self.log_path, line.encode(), max_bytes=self.log_max_bytes, keep=LOG_KEEP, mode=0o644)
        except (OSError, ValueError) as e:
            # The decision stands either way; a full or read-only state dir must not turn into
            # an exception halfway through a hook.
            logger.warning(f"egress: cannot append to {self.log_path}: {e}")

    @property
    def bottle(self) -> str:
        return self.policy.bottle if self.policy else "?"

    # HTTP requests -----------------------------------------------------------------------------
    # http_connect is deliberately not hooked: with connection_strategy=lazy a CONNECT opens no
    # upstream connection, so every tunnel forms and the request inside it gets the 403 below,
    # which the agent can read (a refused CONNECT would only show "tunnel failed").
    #
    # Every decision is taken on the request headers (requestheaders), before mitmproxy reads the
    # body. An allowed request then goes through _admit: the place for a DLP scan of what the
    # request carries, and after it the credential injection.

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.reload()
        req = flow.request
        _strip_proxy_headers(req.headers)
        path = req.path.split("?", 1)[0] or "/"  # the query may carry secrets: never logged
        fields = dict(method=req.method, scheme=req.scheme, host=req.host, port=req.port, path=path)
        target = f"{req.method} {req.host}:{req.port}{path}"

        if self.policy is None:
            reason = f"no valid routes.yaml: {self.policy_error}"
            return self._block(flow, reason, f"egress: blocked {target}: {reason}\n", fields)
        problem = R.authority_problem(
            req.host, req.port, R.target_authorities(req.authority, req.path), req.headers.get_all("host"),
            flow.client_conn.sni,
        )
        if problem:
            reason, claimed = problem
            # Logged as what it was: a request for the host it names, sent through another's tunnel.
            fields["host"] = claimed
            reason = f"{reason} (fronting)" if claimed != R.normalize_host(req.host) else reason
            return self._block(flow, reason, f"egress: blocked {target}: {reason} (bottle {self.bottle})\n", fields)
        query = req.path.split("?", 1)[1] if "?" in req.path else ""
        overrides = R.method_overrides(req.headers.items(multi=True), query)
        decision = R.match(self.policy, req.method, req.scheme, req.host, req.port, req.path, overrides)
        if not decision.allowed:
            if decision.reason.startswith(NO_ROUTE_PREFIX):
                body = f"egress: blocked {target}: no route in routes.yaml of bottle {self.bottle} allows it\n"
            else:
                body = f"egress: blocked {target}: {decision.reason} (routes.yaml of bottle {self.bottle})\n"
            return self._block(flow, decision.reason, body, fields)

        route = self.policy.routes[decision.route_index]
        headers: dict[str, str] = {}
        secrets: list[str] = []
        if route.auth is not None:
            try:
                headers = R.auth_headers(route, self.environ)
                secrets = R.secret_values(route, self.environ)
            except R.CredentialError as e:
                reason = f"credential {e}"
                body = f"egress: {reason} (route {decision.route_index} of bottle {self.bottle})\n"
                return self._block(flow, reason, body, fields, status=502, decision="error",
                                   route=decision.route_index)
        # DLP, before any credential is injected: it sees what the agent sent, never the real one.
        settings = route.dlp
        if self.dlp is None:
            reason = f"DLP is not available ({self.dlp_error}): nothing leaves unscanned"
            return self._block(flow, reason, f"dlp: blocked {target}: {reason}\n", fields)
        verdict = self.dlp.scan_head(req.path, req.headers.items(multi=True), settings)
        length = _declared_length(req)
        if not verdict.blocked and settings.body and length is not None and length > settings.max_body_bytes:
            verdict = DR.Verdict(cannot_scan=f"a body of {length} bytes, over the {settings.max_body_bytes}-byte scan cap")
        if verdict.blocked:
            return self._dlp_block(flow, verdict, fields, decision.route_index)
        if route.once is not None:
            # A route allowed once admits one request, counted here at its headers (not after its
            # body): a second one is refused even before supervise has withdrawn the route.
            if route.once in self._once_used:
                reason = f"route {decision.route_index} was allowed once and has been used"
                return self._block(flow, reason, f"egress: blocked {target}: {reason} (bottle {self.bottle})\n", fields)
            self._use_once(route.once)
        self._pending[flow.id] = _Pending(decision.route_index, decision.reason, headers, secrets, settings, fields,
                                          once=route.once)
        if not settings.body:
            if _should_stream(flow):
                req.stream = RequestBodyStream(flow)
                # The headers leave as soon as this hook returns: admit (and inject) now.
                self._admit(flow)
        elif length is None and not (req.is_http2 or req.is_http3):
            # An HTTP/1.1 body of unknown length (chunked): scanned as it streams, an overlap
            # window held back so a secret split across chunks is seen whole before any of it
            # leaves; a hit (or the cap) kills the flow, and the held rest never leaves.
            req.stream = RequestBodyStream(flow, self.dlp.body_stream(list(req.headers.items(multi=True)), settings), self)
            self._admit(flow)
        # else: buffered (a known length within the cap, or an HTTP/2 body of unknown length):
        # request() scans the whole body and can answer a hit with a 403.

    def request(self, flow: http.HTTPFlow):
        refusal = self._refusals.pop(flow.id, None)
        if refusal is not None:
            if flow.response is None:  # the request had no body after all: answer it here
                flow.response = refusal
            return None
        pending = self._pending.get(flow.id)
        if pending is None:
            return None
        # A buffered body: the whole request is here.
        body = flow.request.raw_content or b""
        if pending.settings.body and body:
            headers = list(flow.request.headers.items(multi=True))
            if len(body) >= DLP_THREAD_BYTES:
                # A large body is scanned off mitmproxy's event loop (mitmproxy awaits this).
                return self._scan_in_thread(flow, pending, body, headers)
            if self._dlp_refused(flow, pending, self.dlp.scan_body(body, headers, pending.settings)):
                return None
        self._send_buffered(flow)
        return None

    async def _scan_in_thread(self, flow: http.HTTPFlow, pending: "_Pending", body: bytes, headers) -> None:
        verdict = await asyncio.to_thread(self.dlp.scan_body, body, headers, pending.settings)
        if not self._dlp_refused(flow, pending, verdict):
            self._send_buffered(flow)

    def _dlp_refused(self, flow: http.HTTPFlow, pending: "_Pending", verdict: "DR.Verdict") -> bool:
        if not verdict.blocked:
            return False
        self._pending.pop(flow.id, None)
        self._dlp_block(flow, verdict, pending.fields, pending.route, body_read=True)
        return True

    def _send_buffered(self, flow: http.HTTPFlow) -> None:
        # HTTP/2 and 3 clients may send a body without Content-Length; an HTTP/1.1 upstream then
        # needs one to find the body.
        body = flow.request.raw_content or b""
        if body and "content-length" not in flow.request.headers and "transfer-encoding" not in flow.request.headers:
            flow.request.headers["content-length"] = str(len(body))
        self._admit(flow)

    def _admit(self, flow: http.HTTPFlow) -> None:
        """The last step before an allowed request leaves (DLP has passed what is known so far):
        log the decision and inject the route's credential."""
        pending = self._pending.pop(flow.id)
        self._record("allow", route=pending.route, reason=pending.reason, once=pending.once, **pending.fields)
        if not pending.headers:
            return
        # The agent only holds a placeholder: whatever it sent in these headers is replaced.
        for name, value in pending.headers.items():
            flow.request.headers[name] = value
        self._scrubbers[flow.id] = R.Scrubber(pending.secrets)

    def _dlp_block(self, flow, verdict: "DR.Verdict", fields: dict, route: int | None, *, body_read: bool = False) -> None:
        """403 with the rule and where it was found (never the secret), and a JSON line with them.
        Neither names the path when a secret was found in it."""
        if any(h.where.startswith("url") for h in verdict.hits):
            fields = {**fields, "path": "[path withheld: DLP found a secret in it]"}
        target = f"{fields['method']} {fields['host']}:{fields['port']}"
        self._block(flow, verdict.reason(), f"{verdict.reason()} ({target}, bottle {self.bottle})\n", fields,
                    route=route, dlp=verdict.to_json(), body_read=body_read)

    def dlp_stream_blocked(self, flow: http.HTTPFlow, verdict: "DR.Verdict") -> None:
        """A streamed body hit a rule (or the cap): its headers have left already, so the flow is
        killed and the rest of the body never leaves; the decision is logged as DLP's."""
        path = flow.request.path.split("?", 1)[0] or "/"
        fields = dict(method=flow.request.method, scheme=flow.request.scheme, host=flow.request.host,
                      port=flow.request.port, path=path)
        self._record("block", route=None, reason=verdict.reason() + " (streamed body: connection closed)",
                     dlp=verdict.to_json(), **fields)
        logger.warning(f"egress: {verdict.reason()} in a streamed body to {fields['host']}: flow killed")
        if flow.killable:
            flow.kill()

    def _block(self, flow, reason: str, body: str, fields: dict, *, status: int = 403,
               decision: str = "block", route: int | None = None, dlp: dict | None = None,
               body_read: bool = False) -> None:
        label = "blocked" if status == 403 else "error"
        response = http.Response.make(
            status, body.encode(), {"Content-Type": "text/plain", "X-Egress-Decision": label}
        )
        self._record(decision, route=route, reason=reason, dlp=dlp, **fields)
        if body_read or _body_within(flow.request, BLOCKED_BODY_READ_LIMIT):
            flow.response = response
            return
        # A body that may be large: never read it. mitmproxy streams a request only after a
        # connection to its destination opens, so the request is pointed at a name that
        # server_connect refuses; mitmproxy then answers with its own error page (status 502,
        # carrying this message) and drops the body. A request that turns out to have no body
        # reaches request() instead, which answers with the response above.
        self._refusals[flow.id] = response
        flow.request.headers.pop("expect", None)  # do not invite the body with 100 Continue
        flow.request.host = f"{flow.id}{REFUSED_SUFFIX}"
        flow.request.stream = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        ctype = resp.headers.get("content-type", "").lower()
        sse = ctype.startswith("text/event-stream")
        length = resp.headers.get("content-length")
        big = length is None or not length.isdigit() or int(length) > STREAM_THRESHOLD
        has_body = flow.request.method != "HEAD" and resp.status_code not in (204, 304) and resp.status_code >= 200
        scrubber = self._scrubbers.get(flow.id)
        if scrubber is None:
            # Nothing to scrub: pass streams and big bodies through as they arrive.
            if has_body and (sse or big):
                resp.stream = True
            return
        resp.headers.fields = _scrub_fields(resp.headers.fields, scrubber)
        if not (has_body and (sse or big)):
            return  # buffered; response() scrubs the whole body
        coding = resp.headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("", "identity") or flow.request.http_version == "HTTP/1.0":
            # A compressed stream cannot be scrubbed chunk by chunk, and an HTTP/1.0 client cannot
            # be sent a re-framed body: buffer these and scrub the decoded whole in response().
            return
        # Redaction changes the length: drop Content-Length and frame HTTP/1.1 responses as chunked
        # (HTTP/2 and 3 frame bodies themselves).
        resp.headers.pop("content-length", None)
        if not (flow.request.is_http2 or flow.request.is_http3):
            if "chunked" not in resp.headers.get("transfer-encoding", "").lower():
                resp.headers["transfer-encoding"] = "chunked"
        resp.stream = scrubber.stream()

    def response(self, flow: http.HTTPFlow) -> None:
        scrubber = self._scrubbers.get(flow.id)
        if scrubber is None:
            return
        if flow.websocket is None:
            del self._scrubbers[flow.id]
        resp = flow.response
        resp.headers.fields = _scrub_fields(resp.headers.fields, scrubber)
        if resp.trailers:
            resp.trailers.fields = _scrub_fields(resp.trailers.fields, scrubber)
        if resp.stream:
            return  # already scrubbed chunk by chunk
        try:
            content = _decode_all(resp)
        except ValueError as e:
            # A body that cannot be decoded cannot be scrubbed: it never reaches the agent.
            reason = f"response body cannot be scrubbed: {e}"
            logger.warning(f"egress: {reason} ({flow.request.host})")
            flow.response = http.Response.make(
                502,
                f"egress: {reason}; refused rather than passed unscrubbed\n".encode(),
                {"Content-Type": "text/plain", "X-Egress-Decision": "error"},
            )
            return
        cleaned = scrubber.scrub(content)
        if cleaned != content or resp.raw_content != content:
            # Sent decoded: the encodings it came in are not redone.
            resp.headers.pop("content-encoding", None)
            resp.raw_content = cleaned
            if "content-length" in resp.headers:
                resp.headers["content-length"] = str(len(cleaned))

    def error(self, flow: http.HTTPFlow) -> None:
        self._scrubbers.pop(flow.id, None)
        self._pending.pop(flow.id, None)
        self._refusals.pop(flow.id, None)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None:
            return
        msg = flow.websocket.messages[-1]
        if msg.from_client:
            self._scan_websocket(flow, msg)
            return
        scrubber = self._scrubbers.get(flow.id)
        if scrubber is not None:
            msg.content = scrubber.scrub(msg.content)

    def _scan_websocket(self, flow: http.HTTPFlow, msg) -> None:
        """A message the agent sends on a websocket is agent-originated data: DLP scans it as a
        body under its route's settings; a hit drops it and closes the socket."""
        req = flow.request
        settings = None
        if self.policy is not None and self.dlp is not None:
            d = R.match(self.policy, req.method, req.scheme, req.host, req.port, req.path)
            settings = self.policy.routes[d.route_index].dlp if d.allowed else None
        if settings is not None and not settings.body:
            return
        verdict = self.dlp.scan_body(msg.content, [], settings) if settings is not None else \
            DR.Verdict(cannot_scan="a websocket message on a route no longer in force, or without DLP")
        if not verdict.blocked:
            return
        msg.drop()
        path = req.path.split("?", 1)[0] or "/"
        self._record("block", method="WEBSOCKET", scheme=req.scheme, host=req.host, port=req.port, path=path,
                     route=None, reason=verdict.reason() + " (websocket message: connection closed)", dlp=verdict.to_json())
        if flow.killable:
            flow.kill()

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self._scrubbers.pop(flow.id, None)

    # non-HTTP ----------------------------------------------------------------------------------
    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        """Close a CONNECT tunnel at once when what it carries is neither TLS nor HTTP.

        With rawtcp off, mitmproxy parses whatever a tunnel carries as HTTP/1 and waits for a
        request head that never comes (an SSH banner, binary data) until the client gives up.
        Inside TLS to a route the same holds for the decrypted data.
        """
        if nextlayer.layer is not None:
            return
        if not any(isinstance(lay, layers.HttpLayer) for lay in nextlayer.context.layers):
            return  # the proxy's own connection: mitmproxy's explicit-proxy HTTP layer
        data = nextlayer.data_client()
        if not data or _starts_like_http(data):
            return
        if not nextlayer.context.client.tls and (starts_like_tls_record(data) or (len(data) < 3 and data[0] == 0x16)):
            return  # TLS (or the start of it): decrypted, then checked again
        host, port = (nextlayer.context.server.address or ("?", 0))[:2]
        inner = "TLS tunnel" if nextlayer.context.client.tls else "CONNECT tunnel"
        reason = f"{inner} carries something other than HTTP: only HTTP requests leave the bottle"
        self._record("block", method="", scheme="tunnel", host=host, port=port, path="", route=None, reason=reason)
        logger.warning(f"egress: closed a {inner} to {host}:{port}: {data[:16]!r} is not HTTP")
        nextlayer.layer = _CloseClient(nextlayer.context)

    def _refuse_raw(self, flow, kind: str) -> None:
        host, port = (flow.server_conn.address or ("?", 0))[:2]
        reason = f"{kind} is not HTTP: only HTTP requests leave the bottle"
        # Setting the server connection's error stops mitmproxy from opening it (kill() alone
        # does not stop a raw TCP relay in mitmproxy 11).
        flow.server_conn.error = f"egress: {reason}"
        if flow.killable:
            flow.kill()
        self._record("block", method="", scheme=kind, host=host, port=port, path="", route=None, reason=reason)
        logger.warning(f"egress: blocked {kind} flow to {host}:{port}")

    def tcp_start(self, flow) -> None:
        self._refuse_raw(flow, "tcp")

    def udp_start(self, flow) -> None:
        self._refuse_raw(flow, "udp")

    def dns_request(self, flow) -> None:
        self._refuse_raw(flow, "dns")

    def server_connect(self, data) -> None:
        """Last guard: no upstream connection to an address that no route names, whatever asked."""
        if data.server.error or not data.server.address:
            return
        host, port = data.server.address[:2]
        if str(host).endswith(REFUSED_SUFFIX):
            refusal = self._refusals.pop(str(host)[: -len(REFUSED_SUFFIX)], None)
            # Already logged by requestheaders; this is only how mitmproxy is made to answer.
            data.server.error = refusal.text.strip() if refusal is not None else "egress: blocked"
            return
        if self.policy is not None and R.could_allow(self.policy, str(host), int(port)):
            return
        reason = f"no route for {host}:{port}"
        data.server.error = f"egress: {reason}"
        self._record("block", method="", scheme="tcp", host=host, port=port, path="", route=None, reason=reason)


addons = [Egress()]
