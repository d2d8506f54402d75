"""Raw-tunnel refusal: only HTTP leaves the bottle. A CONNECT tunnel (or the TLS inside one) that
carries anything else is closed at once, and tcp/udp/dns flows are refused before they connect."""

from __future__ import annotations

import logging
import re

from decisions import DecisionLog
from failclosed import LAYER, RAW, guarded
from mitmproxy.proxy import commands, layer, layers
from mitmproxy.proxy.layers.tls import starts_like_tls_record

logger = logging.getLogger("egress")

_TOKEN = re.compile(rb"[A-Za-z_-]{0,24}")


def starts_like_http(data: bytes) -> bool:
    """True while ``data`` can still be the start of an HTTP/1 request line (a method token and a
    space) or of the HTTP/2 preface ("PRI * HTTP/2.0")."""
    token = _TOKEN.match(data).group()
    if len(token) == len(data):
        return len(token) < 24  # all of it may still be a method name
    return bool(token) and data[len(token) : len(token) + 1] == b" "


class CloseClient(layer.Layer):
    """A layer that closes the client's connection on its first event and ignores the rest."""

    def __init__(self, context):
        super().__init__(context)
        self._closed = False

    def _handle_event(self, event):
        if not self._closed:
            self._closed = True
            yield commands.CloseConnection(self.context.client)


class RawTunnelRefusal:
    def __init__(self, log: DecisionLog):
        self.log = log

    @guarded("tunnel check", LAYER)
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
        if not data or starts_like_http(data):
            return
        if not nextlayer.context.client.tls and (starts_like_tls_record(data) or (len(data) < 3 and data[0] == 0x16)):
            return  # TLS (or the start of it): decrypted, then checked again
        host, port = (nextlayer.context.server.address or ("?", 0))[:2]
        inner = "TLS tunnel" if nextlayer.context.client.tls else "CONNECT tunnel"
        reason = f"{inner} carries something other than HTTP: only HTTP requests leave the bottle"
        self.log.record("block", method="", scheme="tunnel", host=host, port=port, path="", route=None, reason=reason)
        logger.warning(f"egress: closed a {inner} to {host}:{port}: {data[:16]!r} is not HTTP")
        nextlayer.layer = CloseClient(nextlayer.context)

    def _refuse_raw(self, flow, kind: str) -> None:
        host, port = (flow.server_conn.address or ("?", 0))[:2]
        reason = f"{kind} is not HTTP: only HTTP requests leave the bottle"
        # Setting the server connection's error stops mitmproxy from opening it (kill() alone
        # does not stop a raw TCP relay in mitmproxy 11).
        flow.server_conn.error = f"egress: {reason}"
        if flow.killable:
            flow.kill()
        self.log.record("block", method="", scheme=kind, host=host, port=port, path="", route=None, reason=reason)
        logger.warning(f"egress: blocked {kind} flow to {host}:{port}")

    @guarded("tcp refusal", RAW)
    def tcp_start(self, flow) -> None:
        self._refuse_raw(flow, "tcp")

    @guarded("udp refusal", RAW)
    def udp_start(self, flow) -> None:
        self._refuse_raw(flow, "udp")

    @guarded("dns refusal", RAW)
    def dns_request(self, flow) -> None:
        self._refuse_raw(flow, "dns")
