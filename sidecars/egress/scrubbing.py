"""Response scrubbing: an injected credential never travels back to the agent. Its value, in
every encoded form, is removed from response headers, bodies (decoded first; streamed ones chunk
by chunk), trailers and the websocket messages the upstream sends."""

from __future__ import annotations

import logging
import zlib

from decisions import DecisionLog
from dlp.provenance import MAX_LEARN_BYTES
from failclosed import RESPONSE, RESPONSE_HEAD, WEBSOCKET, guarded
from mitmproxy import http
from mitmproxy.net import encoding
from policy_store import PolicyStore
from scanning import STREAM_THRESHOLD
from scrubber import Scrubber

logger = logging.getLogger("egress")


def decode_all(resp: http.Response) -> bytes:
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


def _learnable(resp: http.Response) -> bytes:
    """The start of a body nothing scrubs, for provenance: plain, or gzip/deflate inflated no
    further than the store reads (never a whole decompression bomb); other codings teach only
    their headers."""
    data = resp.raw_content or b""
    codings = [c.strip().lower() for c in resp.headers.get("content-encoding", "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return data[:MAX_LEARN_BYTES]
    if codings not in (["gzip"], ["x-gzip"], ["deflate"]):
        return b""
    try:
        # wbits 47: a gzip or zlib header, whichever it is; raw deflate as the fallback
        return zlib.decompressobj(47).decompress(data, MAX_LEARN_BYTES)
    except zlib.error:
        try:
            return zlib.decompressobj(-15).decompress(data, MAX_LEARN_BYTES)
        except zlib.error:
            return b""


def scrub_fields(fields, scrubber: Scrubber):
    return tuple((k, scrubber.scrub(v)) for k, v in fields)


class ResponseScrubbing:
    def __init__(self, store: PolicyStore, log: DecisionLog):
        self.store = store
        self.log = log

    @guarded("response scrubbing", RESPONSE_HEAD)
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        ctype = resp.headers.get("content-type", "").lower()
        sse = ctype.startswith("text/event-stream")
        length = resp.headers.get("content-length")
        big = length is None or not length.isdigit() or int(length) > STREAM_THRESHOLD
        has_body = flow.request.method != "HEAD" and resp.status_code not in (204, 304) and resp.status_code >= 200
        scrubber = self.store.scrubbers.get(flow.id)
        if scrubber is None:
            # Nothing to scrub: pass streams and big bodies through as they arrive.
            if has_body and (sse or big):
                resp.stream = True
            return
        resp.headers.fields = scrub_fields(resp.headers.fields, scrubber)
        resp.reason = scrubber.scrub_text(resp.reason)
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

    @guarded("response scrubbing", RESPONSE)
    def response(self, flow: http.HTTPFlow) -> None:
        self.store.pending.pop(flow.id, None)
        self.store.admitted.pop(flow.id, None)
        scrubber = self.store.scrubbers.get(flow.id)
        if scrubber is None:
            self._learn(flow, None)
            return
        if flow.websocket is None:
            del self.store.scrubbers[flow.id]
        resp = flow.response
        resp.headers.fields = scrub_fields(resp.headers.fields, scrubber)
        resp.reason = scrubber.scrub_text(resp.reason)
        if resp.trailers:
            resp.trailers.fields = scrub_fields(resp.trailers.fields, scrubber)
        if resp.stream:
            self._learn(flow, b"")  # already scrubbed chunk by chunk: its headers are learned
            return
        try:
            content = decode_all(resp)
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
        cleaned = scrubber.scrub_whole(content)
        if cleaned != content or resp.raw_content != content:
            # Sent decoded: the encodings it came in are not redone.
            resp.headers.pop("content-encoding", None)
            resp.raw_content = cleaned
            if "content-length" in resp.headers:
                resp.headers["content-length"] = str(len(cleaned))
        self._learn(flow, cleaned)

    def _learn(self, flow: http.HTTPFlow, body: bytes | None) -> None:
        """Provenance: the high-entropy values this response hands the agent (as the agent gets
        them: after scrubbing) may go back to this site, or where its redirect points, without a
        DLP hit. ``body`` None: read it here (a response nothing scrubs); b"": headers only."""
        dlp, resp = self.store.dlp, flow.response
        if dlp is None or dlp.provenance is None or resp is None:
            return
        if body is None:
            body = b"" if resp.stream else _learnable(resp)
        dlp.provenance.learn(flow.request.host, resp.headers.items(multi=True), body)

    def error(self, flow: http.HTTPFlow) -> None:
        self.store.forget(flow.id)

    @guarded("response scrubbing", WEBSOCKET)
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None:
            return
        msg = flow.websocket.messages[-1]
        if msg.from_client:
            return  # DLP's (scanning)
        scrubber = self.store.scrubbers.get(flow.id)
        if scrubber is not None:
            msg.content = scrubber.scrub_whole(msg.content)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self.store.forget(flow.id)
