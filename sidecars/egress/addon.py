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
import signal

from mitmproxy import ctx, http

# mitmproxy puts this script's folder on sys.path while loading it, so the sibling module imports.
import routes as R

logger = logging.getLogger("egress")

STATE_ENV = "BOTTLE_EGRESS_STATE"
DEFAULT_STATE_DIR = "/state/egress"
# Bodies above this (or of unknown length) are streamed instead of buffered in memory.
STREAM_THRESHOLD = 1 << 20
# Decisions of this kind are answered by the addon itself rather than the upstream.
NO_ROUTE_PREFIX = "no route"


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _stat_sig(path: str):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _scrub_fields(fields, scrubber: R.Scrubber):
    return tuple((k, scrubber.scrub(v)) for k, v in fields)


class Egress:
    def __init__(self, state_dir: str | None = None, environ=None):
        self.state_dir = state_dir or os.environ.get(STATE_ENV, DEFAULT_STATE_DIR)
        self.environ = os.environ if environ is None else environ
        self.policy: R.Policy | None = None
        self.policy_error: str | None = "routes.yaml not loaded yet"
        self._routes_sig = None
        # Scrubbers of flows that carry an injected credential, by flow id; kept out of
        # flow.metadata so the secrets never end up in a saved or printed flow.
        self._scrubbers: dict[str, R.Scrubber] = {}
        self._ca_sig = None
        self._ca_option: str | None = None  # the trust bundle path this addon set, if any

    # paths -------------------------------------------------------------------------------------
    @property
    def routes_path(self) -> str:
        return os.path.join(self.state_dir, "routes.yaml")

    @property
    def log_path(self) -> str:
        return os.path.join(self.state_dir, "requests.jsonl")

    @property
    def ready_path(self) -> str:
        return os.path.join(self.state_dir, "ready")

    @property
    def upstream_ca_path(self) -> str:
        return os.path.join(self.state_dir, "upstream-ca.pem")

    # lifecycle ---------------------------------------------------------------------------------
    def load(self, loader) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        try:
            os.unlink(self.ready_path)  # a ready file from an earlier run would lie
        except FileNotFoundError:
            pass
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
        port = ctx.options.listen_port or 8080
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
        _atomic_write(self.ready_path, (json.dumps(info) + "\n").encode())

    # policy ------------------------------------------------------------------------------------
    def reload(self, force: bool = False) -> bool:
        """Load routes.yaml when it changed (or when forced); a bad file keeps the previous policy."""
        sig = _stat_sig(self.routes_path)
        if not force and sig == self._routes_sig:
            return False
        self._routes_sig = sig  # also for a bad file: retry only once it changes again
        try:
            policy = R.load_routes(self.routes_path)
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
            _atomic_write(path, data)
        ctx.options.update(ssl_verify_upstream_trusted_ca=path)
        self._ca_option = path
        for old in glob.glob(os.path.join(self.state_dir, "upstream-trust-*.pem")):
            if old != path:
                os.unlink(old)
        logger.info(f"egress: trusting {self.upstream_ca_path} for upstream TLS")

    # decisions log -----------------------------------------------------------------------------
    def _record(self, decision: str, *, method, scheme, host, port, path, route, reason) -> None:
        line = json.dumps(
            {
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
        )
        # One O_APPEND write per line: concurrent writers never interleave, and a file the host
        # rotated away is recreated.
        try:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError as e:
            # The decision stands either way; a full or read-only state dir must not turn into
            # an exception halfway through a hook.
            logger.warning(f"egress: cannot append to {self.log_path}: {e}")

    @property
    def bottle(self) -> str:
        return self.policy.bottle if self.policy else "?"

    # HTTP --------------------------------------------------------------------------------------
    # http_connect is deliberately not hooked: with connection_strategy=lazy a CONNECT opens no
    # upstream connection, so every tunnel forms and the request inside it gets the 403 below,
    # which the agent can read (a refused CONNECT would only show "tunnel failed").

    def request(self, flow: http.HTTPFlow) -> None:
        self.reload()
        req = flow.request
        path = req.path.split("?", 1)[0] or "/"  # the query may carry secrets: never logged
        fields = dict(method=req.method, scheme=req.scheme, host=req.host, port=req.port, path=path)
        target = f"{req.method} {req.host}:{req.port}{path}"

        def block(reason: str, body: str) -> None:
            flow.response = http.Response.make(
                403, body.encode(), {"Content-Type": "text/plain", "X-Egress-Decision": "blocked"}
            )
            self._record("block", route=None, reason=reason, **fields)

        if self.policy is None:
            reason = f"no valid routes.yaml: {self.policy_error}"
            return block(reason, f"egress: blocked {target}: {reason}\n")
        mismatch = R.authority_mismatch(req.host, req.host_header, flow.client_conn.sni)
        if mismatch:
            return block(mismatch, f"egress: blocked {target}: {mismatch} (bottle {self.bottle})\n")
        decision = self.policy.match(req.method, req.scheme, req.host, req.port, path)
        if not decision.allowed:
            if decision.reason.startswith(NO_ROUTE_PREFIX):
                body = f"egress: blocked {target}: no route in routes.yaml of bottle {self.bottle} allows it\n"
            else:
                body = f"egress: blocked {target}: {decision.reason} (routes.yaml of bottle {self.bottle})\n"
            return block(decision.reason, body)

        route = self.policy.routes[decision.route_index]
        if route.auth is not None:
            try:
                headers = R.auth_headers(route, self.environ)
                secrets = R.secret_values(route, self.environ)
            except R.CredentialError as e:
                reason = f"credential {e}"
                flow.response = http.Response.make(
                    502,
                    f"egress: {reason} (route {decision.route_index} of bottle {self.bottle})\n".encode(),
                    {"Content-Type": "text/plain", "X-Egress-Decision": "error"},
                )
                self._record("error", route=decision.route_index, reason=reason, **fields)
                return
            # The agent only holds a placeholder: whatever it sent in this header is replaced.
            for name, value in headers.items():
                req.headers[name] = value
            self._scrubbers[flow.id] = R.Scrubber(secrets)
        self._record("allow", route=decision.route_index, reason=decision.reason, **fields)

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
        encoding = resp.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity") or flow.request.http_version == "HTTP/1.0":
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
            content = resp.get_content(strict=True)
        except ValueError:
            # Undecodable body: scrub the raw bytes and keep the length header honest.
            raw = resp.raw_content or b""
            cleaned = scrubber.scrub(raw)
            if cleaned != raw:
                resp.raw_content = cleaned
                if "content-length" in resp.headers:
                    resp.headers["content-length"] = str(len(cleaned))
            return
        if content:
            cleaned = scrubber.scrub(content)
            if cleaned != content:
                resp.content = cleaned

    def error(self, flow: http.HTTPFlow) -> None:
        self._scrubbers.pop(flow.id, None)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        scrubber = self._scrubbers.get(flow.id)
        if scrubber is None or flow.websocket is None:
            return
        msg = flow.websocket.messages[-1]
        if not msg.from_client:
            msg.content = scrubber.scrub(msg.content)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self._scrubbers.pop(flow.id, None)

    # non-HTTP ----------------------------------------------------------------------------------
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
        if self.policy is not None and self.policy.could_allow(str(host), int(port)):
            return
        reason = f"no route for {host}:{port}"
        data.server.error = f"egress: {reason}"
        self._record("block", method="", scheme="tcp", host=host, port=port, path="", route=None, reason=reason)


addons = [Egress()]
