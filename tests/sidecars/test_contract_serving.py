"""bottle_contract.serving, the bounded HTTP server of the status daemon and the git gate, for real
on loopback: idle and half-sent connections cost no thread and lock nobody out, stalled bodies
free their worker, heads are bounded, and what a handler reads is exactly what the client sent."""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from bottle_contract import serving
from bottle_contract.serving import BoundedHTTPServer, Limits


class Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve():
    servers = []

    def start(limits: Limits) -> BoundedHTTPServer:
        server = BoundedHTTPServer(("127.0.0.1", 0), Echo, limits, name="test")
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def get(server: BoundedHTTPServer, timeout: float = 10) -> int:
    conn = http.client.HTTPConnection(*server.server_address, timeout=timeout)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def connect(server: BoundedHTTPServer, first: bytes = b"") -> socket.socket:
    s = socket.create_connection(server.server_address, timeout=10)
    if first:
        s.sendall(first)
    return s


def closed_by_server(s: socket.socket) -> bool:
    """Whether the server has closed ``s`` (waits for it: the socket's own timeout bounds the wait)."""
    try:
        return s.recv(1) == b""
    except (TimeoutError, ConnectionResetError):
        return False


def test_idle_connections_over_the_cap_never_lock_out_a_request(serve) -> None:
    server = serve(Limits(max_connections=8, workers=2, head_timeout=60, read_timeout=10))
    idle = [connect(server) for _ in range(50)]
    try:
        for _ in range(5):
            assert get(server) == 204
        assert server.open_connections <= 8
    finally:
        for s in idle:
            s.close()


def test_half_sent_requests_hold_no_worker(serve) -> None:
    server = serve(Limits(max_connections=64, workers=1, head_timeout=60, read_timeout=60))
    half = [connect(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le") for _ in range(20)]
    try:
        assert get(server) == 204  # the one worker is free: half a head never reached it
    finally:
        for s in half:
            s.close()


def test_a_head_that_never_completes_is_closed_after_the_head_timeout(serve) -> None:
    server = serve(Limits(max_connections=8, workers=1, head_timeout=0.2, read_timeout=10))
    idle, half = connect(server), connect(server, b"GET / HTTP/1.0\r\n")
    assert closed_by_server(idle) and closed_by_server(half)
    assert get(server) == 204


def test_a_stalled_body_frees_its_worker_after_the_read_timeout(serve) -> None:
    server = serve(Limits(max_connections=8, workers=1, head_timeout=10, read_timeout=0.2))
    stalled = connect(server, b"POST / HTTP/1.0\r\nContent-Length: 100\r\n\r\nonly part")
    try:
        assert get(server) == 204  # served once the stalled one timed out
        assert closed_by_server(stalled)
    finally:
        stalled.close()


def test_an_oversized_head_is_refused(serve) -> None:
    server = serve(Limits(max_connections=8, workers=1, head_timeout=10, read_timeout=10, max_head=1024))
    s = connect(server, b"GET / HTTP/1.0\r\nX-Big: " + b"a" * 4096)
    try:
        assert s.recv(100).startswith(b"HTTP/1.0 431")
    finally:
        s.close()
    assert get(server) == 204


@pytest.mark.parametrize("size", [0, 5, 70_000, 1_000_000])
def test_the_handler_reads_exactly_what_was_sent(serve, size: int) -> None:
    server = serve(Limits(max_connections=8, workers=2, head_timeout=10, read_timeout=10))
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    conn = http.client.HTTPConnection(*server.server_address, timeout=10)
    conn.request("POST", "/", body=body)
    response = conn.getresponse()
    assert response.status == 200 and response.read() == body
    conn.close()


def test_many_clients_at_once_use_only_the_workers_threads(serve) -> None:
    before = threading.active_count()
    server = serve(Limits(max_connections=256, workers=3, head_timeout=10, read_timeout=10))
    results = []

    def client() -> None:
        results.append(get(server))

    clients = [threading.Thread(target=client) for _ in range(100)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    assert results == [204] * 100
    # the server's own threads: the selector loop and three workers, whatever the load
    assert len([t for t in threading.enumerate() if t.name.startswith("test-worker-")]) == 3
    assert threading.active_count() <= before + 4


def test_the_bundle_servers_limits_fit_its_pids() -> None:
    # the sidecars container has 256 pids (threads count): the threaded servers' workers stay far below
    threaded = [serving.STATUS_LIMITS, serving.GIT_GATE_LIMITS]
    assert sum(limits.workers for limits in threaded) + len(threaded) < 64
    assert serving.SUPERVISE_LIMITS.workers == 0
    with pytest.raises(ValueError, match="worker"):
        BoundedHTTPServer(("127.0.0.1", 0), Echo, serving.SUPERVISE_LIMITS)
