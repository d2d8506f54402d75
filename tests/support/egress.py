"""Drive egress's addon in tests: its hooks through every addon in order, as mitmproxy runs them,
mitmproxy's test flows, the decision log, and one real mitmdump run as daemons.json says."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from mitmproxy import http as mhttp
from mitmproxy.addonmanager import traverse
from mitmproxy.test import tflow

from tests.support.sidecars import EGRESS_DIR

# A few of gitleaks' real rules, so the addon runs real DLP in unit tests (the image has all of them).
DLP_RULES = Path(__file__).resolve().parents[1] / "sidecars" / "dlp_rules.toml"


HOOKS = {
    "load",
    "configure",
    "running",
    "done",
    "requestheaders",
    "request",
    "responseheaders",
    "response",
    "error",
    "websocket_message",
    "websocket_end",
    "next_layer",
    "tcp_start",
    "udp_start",
    "dns_request",
    "server_connect",
    "http_connect",
}


class Driven:
    """The egress addon as mitmproxy runs it: a hook called here runs through each of its addons
    in order (awaiting a hook that returns an awaitable); other names are the addon's or its
    store's and lifecycle's."""

    def __init__(self, egress):
        self.egress = egress

    def __getattr__(self, name):
        if name in HOOKS:

            def hook(*args):
                for a in traverse([self.egress]):
                    f = getattr(a, name, None)
                    if a is not self.egress and callable(f):
                        res = f(*args)
                        if inspect.isawaitable(res):
                            asyncio.run(res)

            return hook
        for obj in (self.egress, self.egress.store, self.egress.lifecycle):
            if hasattr(obj, name):
                return getattr(obj, name)
        raise AttributeError(name)


def make_flow(method: str, url: str, headers: dict | None = None):
    req = mhttp.Request.make(method, url, b"", {})
    req.headers.pop("content-length", None)  # make() adds one; a test's headers say what is sent
    for k, v in (headers or {}).items():
        req.headers[k] = v
    f = tflow.tflow(req=req)
    f.client_conn.sni = req.host if req.scheme == "https" else None
    return f


def send(addon, flow) -> None:
    """The request hooks as mitmproxy runs them: headers, then (the body having ended) the whole."""
    addon.requestheaders(flow)
    if flow.response is None:
        addon.request(flow)


def decisions(tmp_path) -> list[dict]:
    path = tmp_path / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DAEMONS_JSON = EGRESS_DIR.parent / "daemons.json"


def mitmdump_argv(state: Path, port: int, scripts: tuple[str, ...] = ()) -> list[str]:
    """The egress daemon's argv from sidecars/daemons.json, with this machine's paths in place of the
    image's: a flag added there (or removed) is run here too."""
    argv = json.loads(DAEMONS_JSON.read_text())["egress"]["argv"]
    assert Path(argv[0]).name == "python" and argv[1] == "/opt/bottle/egress/worker.py"
    out = [sys.executable, str(EGRESS_DIR / "worker.py")]
    args = iter(argv[2:])
    for arg in args:
        if arg in ("--listen-host", "--listen-port", "-s"):
            value = next(args)
            out += [
                arg,
                {"--listen-host": "127.0.0.1", "--listen-port": str(port), "-s": str(EGRESS_DIR / "addon.py")}[arg],
            ]
            assert arg != "-s" or value == "/opt/bottle/egress/addon.py"
            if arg == "-s":
                for extra in scripts:  # a test's own scripts, loaded after egress's
                    out += ["-s", extra]
        elif arg == "--set":
            value = next(args)
            out += [arg, f"confdir={state}" if value.startswith("confdir=") else value]
        else:
            out.append(arg)
    return out


def start_mitmdump(tmp_path: Path, env: dict, scripts: tuple[str, ...] = ()) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = open(tmp_path / "mitmdump.log", "wb")
    proc = subprocess.Popen(
        mitmdump_argv(tmp_path, port, scripts),
        env={**os.environ, "BOTTLE_EGRESS_STATE": str(tmp_path), "BOTTLE_DLP_RULES": str(DLP_RULES), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 15
    while not (tmp_path / "ready").exists():
        if proc.poll() is not None or time.monotonic() >= deadline:
            stop_mitmdump(proc)  # a proxy that did not come up in time is not left running
            raise AssertionError((tmp_path / "mitmdump.log").read_text())
        time.sleep(0.05)
    return proc, port


def stop_mitmdump(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


ROUTE_DLP = "{body: true, disabled_rules: [], max_body_bytes: 8388608}"


def route_line(
    host: str,
    port: int = 443,
    *,
    scheme: str = "https",
    auth: str = "null",
    dlp: str = ROUTE_DLP,
    methods: str = "[]",
    paths: str = "[]",
    model_tools: str = "[]",
) -> str:
    """One fully explicit route of routes.yaml, as a flow-style list item."""
    return (
        f"  - {{host: '{host}', ports: [{port}], methods: {methods}, paths: {paths}, schemes: [{scheme}],"
        f" auth: {auth}, dlp: {dlp}, model_tools: {model_tools}, once: null}}\n"
    )


def routes_yaml(*routes: str, bottle: str = "dev") -> str:
    return f"version: 1\nbottle: {bottle}\ndlp: {ROUTE_DLP}\nroutes:\n" + "".join(routes)


@contextlib.contextmanager
def driven_egress(tmp_path: Path, routes: str, environ: dict[str, str] | None = None):
    """An Egress over ``routes`` (routes.yaml text) in mitmproxy's test context, driven hook by hook."""
    from mitmproxy.test import taddons

    from tests.support.sidecars import egress_module

    (tmp_path / "routes.yaml").write_text(routes)
    addon = Driven(
        egress_module("addon").Egress(state_dir=str(tmp_path), environ=environ or {}, dlp_rules=str(DLP_RULES))
    )
    with taddons.context(addon.egress) as tctx:
        tctx.configure(addon.egress, confdir=str(tmp_path))
        yield addon


class RecordingUpstream:
    """A plain-TCP upstream on loopback that records every byte each connection sent it and
    answers each request with a small 200: at its head, or for a chunked one at its last chunk
    (it never waits for a body of known length)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytearray] = []
        self.resets = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        buf = bytearray()
        with self._lock:
            self.received.append(buf)
        answered = False
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except ConnectionResetError:
                    with self._lock:
                        self.resets += 1
                    return
                if not data:
                    return
                buf += data
                head, _, rest = bytes(buf).partition(b"\r\n\r\n")
                chunked = b"transfer-encoding: chunked" in head.lower()
                if not answered and _ and (not chunked or rest.endswith(b"0\r\n\r\n")):
                    answered = True
                    try:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    except ConnectionResetError:  # egress reset the request (a hit mid-stream) meanwhile
                        with self._lock:
                            self.resets += 1
                        return

    @property
    def data(self) -> bytes:
        with self._lock:
            return b"".join(bytes(b) for b in self.received)

    def mark(self) -> int:
        """How many connections have come so far: ``since(mark)`` is what later ones sent."""
        with self._lock:
            return len(self.received)

    def since(self, mark: int) -> bytes:
        """Every byte the connections after ``mark`` sent (an earlier connection's late bytes,
        say the rest of a body sent after its 200, are not theirs)."""
        with self._lock:
            return b"".join(bytes(b) for b in self.received[mark:])

    def close(self) -> None:
        self.sock.close()
