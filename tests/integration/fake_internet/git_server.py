"""The tests' fake git host: bare repositories under ROOT over smart HTTPS (git http-backend as CGI),
every request behind HTTP basic auth with the one real credential. A wrong or missing credential
gets 401, so a push that arrives proves the gate sent the operator's credential.

Usage: git_server.py CERT KEY PORT ROOT USER:PASSWORD   (runs beside server.py in the fake internet)
"""

import base64
import hmac
import os
import ssl
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class GitHost(BaseHTTPRequestHandler):
    root = "/tmp/git"
    expected = ""  # "Basic <base64(user:password)>"

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        body = self._body()
        if not hmac.compare_digest(self.headers.get("Authorization", ""), self.expected):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="fake git host"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ["PATH"],
            "HOME": "/tmp",
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_USER": "operator",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=120).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve

    def log_message(self, fmt: str, *args: object) -> None:
        print("git-host: " + fmt % args, flush=True)


def main(argv: list[str]) -> None:
    cert, key, port, root, credential = argv
    GitHost.root = root
    GitHost.expected = "Basic " + base64.b64encode(credential.encode()).decode()
    server = ThreadingHTTPServer(("0.0.0.0", int(port)), GitHost)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
