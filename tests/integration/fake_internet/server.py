"""The tests' fake internet: answers any Host on port 80 (and 443 with a certificate) with what it
received, as JSON.

It reports the sha256 of credential headers rather than their values, so a test can prove the
real secret arrived upstream while the body egress hands back to the agent never contains it,
and it echoes the X-Api-Key value verbatim in `echo` to model an upstream that reflects requests.
It reads request bodies framed by Content-Length or chunked, and reports their length and sha256
and the names of the headers that arrived. `/enc/<codings>` answers the same JSON in stacked
content codings (e.g. `/enc/gzip,gzip`; `compress` is sent as is, with that label).
"""

import gzip
import hashlib
import json
import ssl
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CODERS = {"gzip": gzip.compress, "deflate": zlib.compress, "identity": lambda b: b, "compress": lambda b: b"\x1f\x9d\x90" + b}


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

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
        key = self.headers.get("X-Api-Key", "")
        doc = {
            "fake_internet": True,
            "method": self.command,
            "host": self.headers.get("Host", ""),
            "path": self.path,
            "x_api_key_sha256": hashlib.sha256(key.encode()).hexdigest() if key else None,
            "echo": key,
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "headers": sorted({k.lower() for k in self.headers.keys()}),
        }
        out = json.dumps(doc).encode()
        codings = []
        if self.path.startswith("/enc/"):
            codings = [c for c in self.path[len("/enc/"):].split("?")[0].split(",") if c]
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
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, fmt: str, *args: object) -> None:
        print(fmt % args, flush=True)


def main(argv: list[str]) -> None:
    """Plain HTTP on 80; with CERT KEY arguments, HTTPS on 443 as well."""
    servers = [ThreadingHTTPServer(("0.0.0.0", 80), Echo)]
    if len(argv) == 2:
        tls = ThreadingHTTPServer(("0.0.0.0", 443), Echo)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(argv[0], argv[1])
        tls.socket = context.wrap_socket(tls.socket, server_side=True)
        servers.append(tls)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
