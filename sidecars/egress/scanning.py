"""DLP hooks: what the agent sends is scanned before its credential is injected. The request
target and every header at the headers; a buffered body when it has arrived (a large one in a
worker thread); a body that streams chunk by chunk, an overlap window held back; and every
websocket message the agent sends. A hit blocks with the rule and a fixed label of where."""

from __future__ import annotations

import asyncio
import logging

import dlp.request as DR
import routes as R
from decisions import DecisionLog, declared_length, flow_fields
from failclosed import REQUEST, WEBSOCKET, abort, guarded
from mitmproxy import http
from policy_store import DLP_BODY, DLP_HEAD, Pending, PolicyStore

logger = logging.getLogger("egress")

# Bodies at least this large are scanned in a worker thread, off mitmproxy's event loop.
DLP_THREAD_BYTES = 256 << 10
# Bodies above this (or of unknown length) are streamed instead of buffered in memory.
STREAM_THRESHOLD = 1 << 20


def should_stream(flow: http.HTTPFlow) -> bool:
    """Stream allowed bodies above STREAM_THRESHOLD, and bodies of unknown length when the
    upstream frames them itself (HTTP/1.1 chunked, or an HTTP/2 upstream). An HTTP/2 body of
    unknown length bound for an HTTP/1.1 (or not yet connected) upstream is buffered, so that
    the request can be given the Content-Length without which that upstream would drop it."""
    req = flow.request
    length = declared_length(req)
    if length is not None:
        return length > STREAM_THRESHOLD
    if not (req.is_http2 or req.is_http3):
        return True  # HTTP/1.1 chunked: the framing goes upstream with it
    server = flow.server_conn
    return bool(server and server.connected and server.alpn == b"h2")


class RequestBodyStream:
    """The chunks of an allowed request body streamed upstream, as mitmproxy delivers them; with
    DLP on (an HTTP/1.1 body of unknown length), each chunk goes through DLP's BodyStream first."""

    def __init__(self, flow: http.HTTPFlow, scan: DR.BodyStream | None = None, scanning: RequestScanning | None = None):
        self.flow = flow
        self.scan = scan
        self.scanning = scanning

    def __call__(self, chunk: bytes) -> list[bytes]:
        if self.scan is None:
            return [chunk] if chunk else []
        try:
            out = self.scan.feed(chunk) if chunk else self.scan.finish()
            verdict = self.scan.verdict
        except Exception as e:
            out, verdict = b"", DR.Verdict(cannot_scan=f"the streamed body ({type(e).__name__})")
        if verdict.blocked:
            if self.scanning is not None:
                self.scanning.stream_blocked(self.flow, verdict)
            else:
                abort(self.flow)
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


def scan_part(dlp: DR.RequestScanner, text: str | bytes, where: str, settings, site: str | None = None) -> DR.Verdict:
    """One part of a request that has no place in scan_head or scan_body (the authority, a
    trailer block, a CONNECT target), labelled with the fixed word ``where``; ``site`` (the
    request's host) lets a value that site handed the agent go back to it."""
    return dlp.scan_text(text, where, settings, site=site)


def header_lines(fields) -> str:
    return "\n".join(
        f"{k.decode('latin-1') if isinstance(k, bytes) else k}: "
        f"{v.decode('utf-8', 'surrogateescape') if isinstance(v, bytes) else v}"
        for k, v in fields
    )


class RequestScanning:
    def __init__(self, store: PolicyStore, log: DecisionLog):
        self.store = store
        self.log = log

    @guarded("dlp connect", REQUEST)
    def http_connect(self, flow: http.HTTPFlow) -> None:
        """The target of a CONNECT: a secret can ride in a host name the agent makes up."""
        policy, dlp = self.store.policy, self.store.dlp
        fields = flow_fields(flow.request)
        fields["path"] = ""
        if policy is None or dlp is None:
            return  # the requests inside the tunnel are blocked
        verdict = scan_part(dlp, flow.request.host, "connect target", policy.dlp)
        if verdict.blocked:
            fields["host"] = "[host withheld: DLP found a secret in it]"
            self.log.block(
                flow,
                verdict.reason(),
                f"{verdict.reason()} (CONNECT, bottle {self.store.bottle})\n",
                fields,
                dlp=verdict.to_json(),
                body_read=True,
            )

    @guarded("dlp head", REQUEST)
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        pending = self.store.pending.get(flow.id)
        if pending is None:
            return  # blocked already
        req = flow.request
        settings = pending.settings
        dlp = self.store.dlp
        if dlp is None:
            reason = f"DLP is not available ({self.store.dlp_error}): nothing leaves unscanned"
            target = f"{req.method} {req.host}:{req.port}{pending.fields['path']}"
            return self.log.block(flow, reason, f"dlp: blocked {target}: {reason}\n", pending.fields)
        verdict = dlp.scan_head(req.path, req.headers.items(multi=True), settings, site=req.host)
        # The authority as the request line (or HTTP/2 :authority) names it; the Host header is a
        # header. Both must name the destination (the gate), which may still carry a secret.
        verdict += scan_part(
            dlp, "\n".join(dict.fromkeys(a for a in (req.host, req.authority) if a)), "authority", settings, req.host
        )
        # (scan_head reads the raw query as sent, '+' and escapes kept, besides its decoded pairs;
        # a second scan of it here with every rule would undo its judging of pagination tokens.)
        length = declared_length(req)
        if not verdict.blocked and settings.body and length is not None and length > settings.max_body_bytes:
            verdict = DR.Verdict(
                cannot_scan=f"a body of {length} bytes, over the {settings.max_body_bytes}-byte scan cap"
            )
        if verdict.blocked:
            return self.log.dlp_block(flow, verdict, pending.fields, pending.route)
        pending.cleared.add(DLP_HEAD)
        if pending.missing() - {DLP_HEAD, DLP_BODY}:
            return  # another check needs the whole body: buffered
        if not settings.body:
            if should_stream(flow):
                req.stream = RequestBodyStream(flow)
                self._streams(pending)
        elif length is None and not (req.is_http2 or req.is_http3):
            # An HTTP/1.1 body of unknown length (chunked): scanned as it streams, an overlap
            # window held back so a secret split across chunks is seen whole before any of it
            # leaves; a hit (or the cap) aborts the flow, and the held rest never leaves.
            req.stream = RequestBodyStream(
                flow, dlp.body_stream(list(req.headers.items(multi=True)), settings, site=req.host), self
            )
            self._streams(pending)
        # else: buffered (a known length within the cap, or an HTTP/2 body of unknown length):
        # request() scans the whole body and can answer a hit with a 403.

    @staticmethod
    def _streams(pending: Pending) -> None:
        # The headers leave as soon as the requestheaders hooks return; the body is scanned as
        # it streams, so injection may go ahead at the headers.
        pending.streamed = True
        pending.cleared.add(DLP_BODY)

    @guarded("dlp body", REQUEST)
    def request(self, flow: http.HTTPFlow):
        trailers = flow.request.trailers
        streamed = self.store.admitted.get(flow.id)
        if streamed is not None and trailers and flow.error is None:
            # A streamed body's trailers leave after this hook: a hit resets the upstream first.
            verdict = scan_part(self.store.dlp, header_lines(trailers.fields), "trailers", streamed, flow.request.host)
            if verdict.blocked:
                self.stream_blocked(flow, verdict)
            return None
        pending = self.store.pending.get(flow.id)
        if pending is None or pending.streamed:
            return None
        if trailers:
            verdict = scan_part(
                self.store.dlp, header_lines(trailers.fields), "trailers", pending.settings, flow.request.host
            )
            if verdict.blocked:
                self.log.dlp_block(flow, verdict, pending.fields, pending.route, body_read=True)
                return None
        body = flow.request.raw_content or b""
        if pending.settings.body and body:
            headers = list(flow.request.headers.items(multi=True))
            if len(body) >= DLP_THREAD_BYTES:
                # A large body is scanned off mitmproxy's event loop (mitmproxy awaits this).
                return self._scan_in_thread(flow, pending, body, headers)
            self._judge(
                flow, pending, self.store.dlp.scan_body(body, headers, pending.settings, site=flow.request.host)
            )
            return None
        pending.cleared.add(DLP_BODY)
        return None

    async def _scan_in_thread(self, flow: http.HTTPFlow, pending: Pending, body: bytes, headers) -> None:
        self._judge(
            flow,
            pending,
            await asyncio.to_thread(self.store.dlp.scan_body, body, headers, pending.settings, site=flow.request.host),
        )

    def _judge(self, flow: http.HTTPFlow, pending: Pending, verdict: DR.Verdict) -> None:
        if verdict.blocked:
            self.log.dlp_block(flow, verdict, pending.fields, pending.route, body_read=True)
        else:
            pending.cleared.add(DLP_BODY)

    def stream_blocked(self, flow: http.HTTPFlow, verdict: DR.Verdict) -> None:
        """A streamed body hit a rule (or the cap): its headers have left already, so the upstream
        connection is reset (it never sees the message end), the flow killed and the rest of the
        body never leaves; the decision is logged as DLP's."""
        fields = flow_fields(flow.request)
        self.log.record(
            "block",
            route=None,
            reason=verdict.reason() + " (streamed body: connection closed)",
            dlp=verdict.to_json(),
            **fields,
        )
        logger.warning(f"egress: {verdict.reason()} in a streamed body to {fields['host']}: flow aborted")
        self.store.forget(flow.id)
        abort(flow)

    @guarded("dlp websocket", WEBSOCKET)
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """A message the agent sends on a websocket is agent-originated data: DLP scans it as a
        body under its route's settings; a hit drops it and closes the socket."""
        if flow.websocket is None:
            return
        msg = flow.websocket.messages[-1]
        if not msg.from_client:
            return
        req = flow.request
        settings = None
        policy, dlp = self.store.policy, self.store.dlp
        if policy is not None and dlp is not None:
            d = R.match(policy, req.method, req.scheme, req.host, req.port, req.path)
            settings = policy.routes[d.route_index].dlp if d.allowed else None
        if settings is not None and not settings.body:
            return
        verdict = (
            dlp.scan_body(msg.content, [], settings, site=req.host)
            if settings is not None
            else DR.Verdict(cannot_scan="a websocket message on a route no longer in force, or without DLP")
        )
        if not verdict.blocked:
            return
        msg.drop()
        path = req.path.split("?", 1)[0] or "/"
        self.log.record(
            "block",
            method="WEBSOCKET",
            scheme=req.scheme,
            host=req.host,
            port=req.port,
            path=path,
            route=None,
            reason=verdict.reason() + " (websocket message: connection closed)",
            dlp=verdict.to_json(),
        )
        self.store.forget(flow.id)
        abort(flow)
