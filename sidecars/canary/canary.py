#!/usr/bin/env python3
"""The canary: a stand-in for the internet that `bottle-tui selftest` attaches to a bottle's egress
network (and the tests use as their fake internet). It answers any Host with what it received, as
JSON marked ``"fake_internet": true``, so an attack that reaches it is seen as a leak.

Headers are reported by their sha256 (every one, by name), never their value, except X-Api-Key, which is
also echoed verbatim (in ``echo`` and an X-Echo-Key header) to model an upstream that reflects
requests: egress must scrub it before the agent sees it. Bodies framed by Content-Length or
chunked are read whole and reported by length and sha256, with the names of the headers that
arrived. ``/enc/<codings>`` answers the same JSON in stacked content codings (e.g.
``/enc/gzip,gzip``; ``compress`` is sent as is, with that label).

Usage: canary.py [CERT KEY]   plain HTTP on 80; with a certificate and key, HTTPS on 443 too.
Extra request handlers can be plugged in by callers (see ``serve``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import ssl
import sys
import threading
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A handler gets (request handler, body, tls) and returns True when it answered.
Plugin = Callable[[BaseHTTPRequestHandler, bytes, bool], bool]
CODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "identity": lambda b: b,
    "compress": lambda b: b"\x1f\x9d\x90" + b,
}


def _sha(value: str) -> str | None:
    return hashlib.sha256(value.encode()).hexdigest() if value else None


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: with Nagle on, a keep-alive client waits out its
    # delayed ACK (40 ms) for each answer, which would swamp any latency figure.
    disable_nagle_algorithm = True
    plugins: tuple[Plugin, ...] = ()

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self) -> None:
        body = self._body()
        tls = getattr(self.server, "tls", False)
        for plugin in self.plugins:
            if plugin(self, body, tls):
                return
        key = self.headers.get("X-Api-Key", "")
        doc = {
            "fake_internet": True,
            "method": self.command,
            "host": self.headers.get("Host", ""),
            "path": self.path,
            "x_api_key_sha256": _sha(key),
            "authorization_sha256": _sha(self.headers.get("Authorization", "")),
            "echo": key,
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "headers": sorted({k.lower() for k in self.headers.keys()}),
            # Every header's value by digest: selftest checks a credential injected under any name.
            "header_sha256": {k.lower(): _sha(v) for k, v in self.headers.items()},
        }
        out = json.dumps(doc).encode()
        codings = []
        if self.path.startswith("/enc/"):
            codings = [c for c in self.path[len("/enc/") :].split("?")[0].split(",") if c in CODERS]
            for c in codings:
                out = CODERS[c](out)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        if codings:
            self.send_header("Content-Encoding", ", ".join(codings))
        if key:
            self.send_header("X-Echo-Key", key)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

    def log_message(self, fmt: str, *args: object) -> None:
        print(fmt % args, flush=True)


def serve(argv: list[str], plugins: tuple[Plugin, ...] = ()) -> None:
    handler = type("Handler", (Echo,), {"plugins": plugins})
    servers = [ThreadingHTTPServer(("0.0.0.0", 80), handler)]
    if len(argv) == 2:
        tls = ThreadingHTTPServer(("0.0.0.0", 443), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(argv[0], argv[1])
        tls.socket = context.wrap_socket(tls.socket, server_side=True)
        tls.tls = True  # type: ignore[attr-defined]
        servers.append(tls)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1:])
