"""The tests' fake internet: answers any Host on port 80 with what it received, as JSON.

It reports the sha256 of credential headers rather than their values, so a test can prove the
real secret arrived upstream while the body egress hands back to the agent never contains it,
and it echoes the X-Api-Key value verbatim in `echo` to model an upstream that reflects requests.
"""

import hashlib
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import services  # package indexes and an LLM API, by Host (same folder)


class Echo(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if services.handle(self, body, tls=getattr(self.server, "tls", False)):
            return
        key = self.headers.get("X-Api-Key", "")
        doc = {
            "fake_internet": True,
            "method": self.command,
            "host": self.headers.get("Host", ""),
            "path": self.path,
            "x_api_key_sha256": hashlib.sha256(key.encode()).hexdigest() if key else None,
            "echo": key,
            "body_len": len(body),
        }
        out = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        if key:
            self.send_header("X-Echo-Key", key)
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

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
        tls.tls = True
        servers.append(tls)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
