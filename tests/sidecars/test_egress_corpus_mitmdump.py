"""The adversarial corpus (tests/support/dlp_shapes.py) through a real mitmdump running egress's
addon on gitleaks v8.30.1's full rules, as the bundle runs it (its argv from daemons.json): each
exfiltration shape is answered without reaching the upstream (not its secret, not its body), and
each kind of ordinary traffic reaches the upstream and gets its answer. The same cases run in
process in test_dlp_corpus.py; this is the wire, with mitmproxy's own parsing in front."""

from __future__ import annotations

import shutil
import socket
import time

import pytest

from tests.support.dlp_corpus import FULL_RULES, exfiltration, full_request_scanner, full_rules_database, ordinary
from tests.support.egress import RecordingUpstream, route_line, routes_yaml, start_mitmdump, stop_mitmdump

EXFIL = exfiltration()
ORDINARY = ordinary()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """One mitmdump over the full rules (their database compiled once, next to them) with a plain
    http route to a recording upstream on loopback, body DLP on."""
    tmp = tmp_path_factory.mktemp("corpus-mitmdump")
    rules = tmp / "gitleaks.toml"
    shutil.copyfile(FULL_RULES, rules)
    full_request_scanner()  # compiles the database once per machine (a stale one is recompiled)
    shutil.copyfile(full_rules_database(), str(rules) + ".hsdb")
    upstream = RecordingUpstream()
    (tmp / "routes.yaml").write_text(routes_yaml(route_line("127.0.0.1", upstream.port, scheme="http")))
    proc, port = start_mitmdump(tmp, {"BOTTLE_DLP_RULES": str(rules)})
    yield port, upstream
    stop_mitmdump(proc)
    upstream.close()


def send(port: int, upstream_port: int, case) -> int | None:
    """The case as one request through the proxy on a connection of its own; its answer's status
    (None when the proxy closed without one)."""
    headers = list(case.headers)
    names = {k.lower() for k, _ in headers}
    if "host" not in names:
        headers.insert(0, ("Host", f"127.0.0.1:{upstream_port}"))
    body = case.body
    te = next((v for k, v in headers if k.lower() == "transfer-encoding"), "")
    if "chunked" in te.lower():
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    elif body or case.method.upper() not in ("GET", "HEAD", "OPTIONS"):
        headers.append(("Content-Length", str(len(body))))
    head = f"{case.method} http://127.0.0.1:{upstream_port}{case.path} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as c:
        c.sendall(head.encode("utf-8", "surrogateescape") + body)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                data = c.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            answer += data
            top, sep, rest = answer.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in top.split(b"\r\n")[1:]
                        if line.lower().startswith(b"content-length:")
                    ),
                    None,
                )
                if length is not None and len(rest) >= length:
                    break
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("case", EXFIL, ids=[c.id for c in EXFIL])
def test_exfiltration_never_reaches_the_upstream(proxy, case) -> None:
    port, upstream = proxy
    mark = upstream.mark()
    status = send(port, upstream.port, case)
    time.sleep(0.02)  # anything forwarded would have arrived with the answer
    arrived = upstream.since(mark)
    assert case.secret.encode() not in arrived, case.id
    assert not (case.body and case.body in arrived), case.id
    assert status != 200, (case.id, status)


@pytest.mark.parametrize("case", ORDINARY, ids=[c.id for c in ORDINARY])
def test_ordinary_traffic_reaches_the_upstream(proxy, case) -> None:
    port, upstream = proxy
    mark = upstream.mark()
    status = send(port, upstream.port, case)
    assert status == 200, (case.id, status)
    whole = case.body and "chunked" not in str(case.headers).lower()
    deadline = time.monotonic() + 5  # the upstream answers at the head: the body may still be coming
    while whole and case.body not in upstream.since(mark) and time.monotonic() < deadline:
        time.sleep(0.01)
    arrived = upstream.since(mark)
    assert arrived.startswith(case.method.encode() + b" "), case.id
    assert not whole or case.body in arrived, case.id
