"""A mid-stream DLP hit aborts the upstream request (issue 14, item 8): through a real mitmdump,
a chunked upload whose secret comes after clean data reaches the upstream truncated and reset,
never with a clean end of message."""

from __future__ import annotations

import socket
import time

from tests.support.egress import RecordingUpstream, decisions, route_line, routes_yaml, start_mitmdump, stop_mitmdump

GHP = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
AUTH = "{scheme: header, header: x-api-key, token_env: API_KEY}"
SECRET = "sk-real-0123456789abcdef"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_real_mitmdump_resets_the_upstream_on_a_mid_stream_hit(tmp_path) -> None:
    upstream = RecordingUpstream()
    (tmp_path / "routes.yaml").write_text(routes_yaml(route_line("127.0.0.1", upstream.port, scheme="http", auth=AUTH)))
    proc, port = start_mitmdump(tmp_path, {"API_KEY": SECRET})
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(
            f"POST http://127.0.0.1:{upstream.port}/up HTTP/1.1\r\nHost: 127.0.0.1:{upstream.port}\r\n"
            "x-api-key: placeholder\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        for _ in range(8):  # clean data: it streams on, less the window held back
            c.sendall(chunk(b"x" * 16384))
        deadline = time.monotonic() + 10
        while b"xxxx" not in upstream.data and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"xxxx" in upstream.data, "clean data should stream before the hit"
        try:
            c.sendall(chunk(f"token {GHP}".encode()) + chunk(b"y" * 100) + b"0\r\n\r\n")
            answer = c.recv(65536)
        except OSError:
            answer = b""
        c.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not decisions(tmp_path)[-1:][0]["decision"] == "block":
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop_mitmdump(proc)
        upstream.close()
    data = upstream.data
    assert SECRET.encode() in data  # it was admitted: the credential went with the headers
    assert GHP.encode() not in data and b"yyyy" not in data
    assert not data.endswith(b"0\r\n\r\n"), "the upstream must never see the request end"
    assert b"200 OK" not in answer
    entry = decisions(tmp_path)[-1]
    assert entry["decision"] == "block" and entry["dlp"]["findings"][0]["rule"] == "github-pat"
    assert GHP not in (tmp_path / "requests.jsonl").read_text()
