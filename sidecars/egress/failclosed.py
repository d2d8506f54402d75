"""Fail closed: every hook of egress that looks at agent data runs under ``guarded``. Whatever it
raises (a parser's RecursionError, a decoder's UnicodeError, a bug) blocks the request instead
of letting mitmproxy log the error and forward the flow: a 403 while the request's headers have
not left, else the flow is killed and its connections reset. Each such block is a decision in
requests.jsonl, naming the stage and the exception's type only (its message may hold agent data).
"""

from __future__ import annotations

import functools
import inspect
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from decisions import DecisionLog, flow_fields
from mitmproxy import ctx, http

logger = logging.getLogger("egress")

# What a failing hook was handling, which decides how it fails closed.
REQUEST = "request"  # an HTTP request on its way out
RESPONSE_HEAD = "response head"  # a response's headers: its body is still to be read into it
RESPONSE = "response"  # a whole response on its way to the agent
WEBSOCKET = "websocket"  # a websocket message, either way
CONNECT = "connect"  # server_connect: an upstream connection about to open
LAYER = "layer"  # next_layer: what a connection carries
RAW = "raw"  # a tcp/udp/dns flow


def _reset(handler: Any, conn: Any) -> None:
    """Close ``conn`` of a live connection handler with a TCP reset (SO_LINGER 0, then abort), so
    the peer never sees a clean end of what was being sent."""
    io = handler.transports.get(conn) if handler is not None else None
    writer = getattr(io, "writer", None)
    transport = getattr(writer, "transport", None)
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


def abort(flow: http.HTTPFlow) -> None:
    """Stop a flow whose request (or response) is already partly on the wire: reset the upstream
    connection first (it must never receive a terminated message), then the agent's, and kill the
    flow so mitmproxy forwards nothing more."""
    try:
        master = getattr(ctx, "master", None)
        proxyserver = master.addons.get("proxyserver") if master is not None else None
        handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver is not None else None
        if handler is not None:
            if flow.server_conn is not None:
                _reset(handler, flow.server_conn)
            _reset(handler, flow.client_conn)
    except Exception as e:
        logger.warning(f"egress: cannot reset the connections of a killed flow ({type(e).__name__})")
    if flow.killable:
        flow.kill()


def _fields(obj: Any) -> dict[str, Any]:
    req = getattr(obj, "request", None)
    if isinstance(req, http.Request):
        try:
            return flow_fields(req)
        except Exception:
            pass
    server = getattr(obj, "server", None) or getattr(obj, "server_conn", None)
    address = getattr(server, "address", None) or ("?", 0)
    return dict(method="", scheme="tcp", host=str(address[0]), port=int(address[1]), path="")


def fail_closed(log: DecisionLog, stage: str, kind: str, obj: Any, exc: BaseException) -> None:
    """Block what ``obj`` (a flow, or a hook's data) carries after ``exc`` in ``stage``."""
    reason = f"egress failed closed in {stage} ({type(exc).__name__})"
    logger.warning(f"egress: {reason}")
    try:
        if kind == REQUEST and isinstance(obj, http.HTTPFlow):
            log.store.forget(obj.id)
            fields = _fields(obj)
            if (
                obj.request.stream
                and obj.id not in log.store.refusals
                and obj.response is None
                and obj.request.timestamp_end is not None
            ):
                # A streamed body that has ended: its headers and body have left.
                log.record("block", route=None, reason=reason, failed_closed=stage, **fields)
                abort(obj)
                return
            log.block(
                obj,
                reason,
                f"egress: blocked {fields['method']} {fields['host']}:{fields['port']}: {reason}\n",
                fields,
                failed_closed=stage,
                body_read=obj.request.timestamp_end is not None,
            )
            return
        fields = _fields(obj)
        log.record("block", route=None, reason=reason, failed_closed=stage, **fields)
        if kind == RESPONSE_HEAD and isinstance(obj, http.HTTPFlow):
            log.store.forget(obj.id)
            abort(obj)  # an answer set now would be filled with the upstream's unscrubbed body
        elif kind == RESPONSE and isinstance(obj, http.HTTPFlow):
            log.store.forget(obj.id)
            if obj.response is not None and not obj.response.stream:
                obj.response = http.Response.make(
                    502,
                    f"egress: {reason}; refused rather than passed unchecked\n".encode(),
                    {"Content-Type": "text/plain", "X-Egress-Decision": "error"},
                )
                return
            abort(obj)
        elif kind == WEBSOCKET and isinstance(obj, http.HTTPFlow):
            log.store.forget(obj.id)
            if obj.websocket is not None and obj.websocket.messages:
                obj.websocket.messages[-1].drop()
            abort(obj)
        elif kind == CONNECT:
            obj.server.error = f"egress: {reason}"
        elif kind == LAYER:
            from tunnels import CloseClient

            obj.layer = CloseClient(obj.context)
        elif kind == RAW:
            obj.server_conn.error = f"egress: {reason}"
            if obj.killable:
                obj.kill()
    except Exception as e:
        logger.warning(f"egress: failing closed raised {type(e).__name__}; killing the flow")
        if getattr(obj, "killable", False):
            obj.kill()


def guarded(stage: str, kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a hook of an addon that has a ``log`` (DecisionLog); any exception fails closed. A hook
    that returns an awaitable (a scan in a worker thread) is guarded until it completes."""

    def wrap(hook: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(hook)
        def run(self: Any, obj: Any) -> Any:
            try:
                result = hook(self, obj)
            except Exception as e:
                fail_closed(self.log, stage, kind, obj, e)
                return None
            if inspect.isawaitable(result):
                return _awaited(self, obj, result)
            return result

        async def _awaited(self: Any, obj: Any, result: Any) -> None:
            try:
                await result
            except Exception as e:
                fail_closed(self.log, stage, kind, obj, e)

        return run

    return wrap
