"""Fail closed (issue 14, item 1): a failure at any stage of egress that looks at agent data (each
addon's hook, each DLP call) blocks the request and is logged as a decision; nothing reaches the
upstream. In-process with mitmproxy's test flows, and through a real mitmdump on loopback."""

from __future__ import annotations

import http.client
import json

import pytest
from mitmproxy import connection, websocket
from mitmproxy import http as mhttp
from mitmproxy.proxy import layer, server_hooks
from mitmproxy.proxy.context import Context
from mitmproxy.test import tflow

from tests.support.egress import (
    RecordingUpstream,
    decisions,
    driven_egress,
    make_flow,
    route_line,
    routes_yaml,
    send,
    start_mitmdump,
    stop_mitmdump,
)
from tests.support.sidecars import egress_module

SECRET = "sk-real-0123456789abcdef"
GHP = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
AUTH = "{scheme: header, header: x-api-key, token_env: API_KEY}"
ROUTES = routes_yaml(route_line("api.example.com", auth=AUTH), route_line("open.example.com"))

T = egress_module("request_target")
R = egress_module("routes")
C = egress_module("credentials")
INJ = egress_module("injection")
SCRUB = egress_module("scrubbing")
TUN = egress_module("tunnels")
DEC = egress_module("decisions")


class Injected(RuntimeError):
    """The failure a test injects."""


def boom(*args, **kwargs):
    raise Injected("agent text that must not be logged: " + GHP)


@pytest.fixture
def egress(tmp_path):
    with driven_egress(tmp_path, ROUTES, {"API_KEY": SECRET}) as addon:
        yield addon


def left_upstream(flow) -> bool:
    """Whether mitmproxy would send this flow's request on: no answer of egress's, not killed,
    not pointed at the name server_connect refuses."""
    return flow.response is None and flow.error is None and not flow.request.host.endswith(DEC.REFUSED_SUFFIX)


def assert_failed_closed(flow, tmp_path, stage: str) -> None:
    assert not left_upstream(flow)
    if flow.response is not None:
        assert flow.response.status_code in (403, 502)
        assert GHP.encode() not in flow.response.content and b"Injected" in flow.response.content
    entry = decisions(tmp_path)[-1]
    assert entry["decision"] == "block" and entry["failed_closed"] == stage
    assert entry["reason"] == f"egress failed closed in {stage} (Injected)"
    assert GHP not in (tmp_path / "requests.jsonl").read_text()
    assert all(d["decision"] != "allow" for d in decisions(tmp_path))


def post(body: bytes = b"hello", host: str = "api.example.com", **headers: str):
    f = make_flow(
        "POST", f"https://{host}/v1/x", {"x-api-key": "placeholder", "Content-Length": str(len(body)), **headers}
    )
    f.request.data.content = body
    return f


# Each case: (stage in the log, what to break, the request).
REQUEST_CASES = [
    ("route gate", lambda mp, addon: mp.setattr(T, "authority_problem", boom)),
    ("route gate", lambda mp, addon: mp.setattr(R, "match", boom)),
    ("route gate", lambda mp, addon: mp.setattr(C, "auth_headers", boom)),
    ("dlp head", lambda mp, addon: mp.setattr(addon.store.dlp, "scan_head", boom)),
    ("dlp body", lambda mp, addon: mp.setattr(addon.store.dlp, "scan_body", boom)),
    ("credential injection", lambda mp, addon: mp.setattr(INJ, "Scrubber", boom)),
    ("credential injection", lambda mp, addon: mp.setattr(addon.store, "claim_once", boom)),
]


@pytest.mark.parametrize("stage,breaks", REQUEST_CASES, ids=[f"{s}-{i}" for i, (s, _) in enumerate(REQUEST_CASES)])
def test_a_failure_at_any_request_stage_blocks_and_is_logged(egress, tmp_path, monkeypatch, stage, breaks) -> None:
    if breaks is REQUEST_CASES[-1][1]:  # claim_once runs for a route allowed once only
        text = (tmp_path / "routes.yaml").read_text().replace("once: null}", "once: 20260101-000000-abcdef12}", 1)
        (tmp_path / "routes.yaml").write_text(text)
        egress.reload(force=True)
        assert egress.policy.routes[0].once
    breaks(monkeypatch, egress)
    f = post()
    send(egress, f)
    assert_failed_closed(f, tmp_path, stage)
    assert f.request.headers.get("x-api-key") in ("placeholder", SECRET)
    # The next request, unbroken, is not held by the failure of the last one.
    monkeypatch.undo()
    g = post()
    send(egress, g)
    assert g.response is None and g.request.headers["x-api-key"] == SECRET


def test_a_scan_in_the_worker_thread_that_fails_blocks(egress, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(egress.store.dlp, "scan_body", boom)
    f = post(b"x" * (300 << 10))
    send(egress, f)
    assert_failed_closed(f, tmp_path, "dlp body")


@pytest.mark.parametrize("method", ["feed", "finish"])
def test_a_streamed_body_whose_scan_fails_is_aborted(egress, tmp_path, monkeypatch, method) -> None:
    f = make_flow("POST", "https://open.example.com/up", {"Transfer-Encoding": "chunked"})
    real = egress.store.dlp.body_stream

    def broken(*args, **kwargs):
        stream = real(*args, **kwargs)
        setattr(stream, method, boom)
        return stream

    monkeypatch.setattr(egress.store.dlp, "body_stream", broken)
    egress.requestheaders(f)
    stream = f.request.stream
    assert callable(stream)
    out = stream(b"x" * 10)
    if method == "finish":
        assert out == []  # small chunks are held back until the end
        out = stream(b"")
    assert out == [] and f.error is not None and "killed" in f.error.msg.lower()
    entry = decisions(tmp_path)[-1]
    assert entry["decision"] == "block" and "cannot scan the streamed body (Injected)" in entry["reason"]


def test_a_websocket_message_whose_scan_fails_is_dropped(egress, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(egress.store.dlp, "scan_body", boom)
    f = tflow.twebsocketflow()
    f.request.host, f.request.port, f.request.scheme, f.request.path = "open.example.com", 443, "https", "/ws"
    f.websocket.messages.append(websocket.WebSocketMessage(2, True, b"hello"))
    egress.websocket_message(f)
    assert f.websocket.messages[-1].dropped and f.error is not None
    assert decisions(tmp_path)[-1]["failed_closed"] == "dlp websocket"


def authed(egress):
    f = post()
    send(egress, f)
    assert f.request.headers["x-api-key"] == SECRET
    return f


def test_a_scrubbing_failure_on_response_headers_kills_the_flow(egress, tmp_path, monkeypatch) -> None:
    f = authed(egress)
    monkeypatch.setattr(SCRUB, "scrub_fields", boom)
    f.response = mhttp.Response.make(200, SECRET.encode(), {"X-Echo": SECRET})
    egress.responseheaders(f)
    assert f.error is not None and "killed" in f.error.msg.lower()
    assert decisions(tmp_path)[-1]["failed_closed"] == "response scrubbing"


def test_a_scrubbing_failure_on_the_body_answers_502(egress, tmp_path, monkeypatch) -> None:
    f = authed(egress)
    f.response = mhttp.Response.make(200, SECRET.encode(), {})
    egress.responseheaders(f)
    monkeypatch.setattr(SCRUB, "decode_all", boom)
    egress.response(f)
    assert f.response.status_code == 502 and SECRET.encode() not in f.response.content
    assert decisions(tmp_path)[-1]["failed_closed"] == "response scrubbing"


def test_a_scrubbing_failure_on_a_websocket_message_drops_it(egress, tmp_path, monkeypatch) -> None:
    f = authed(egress)
    f.response = mhttp.Response.make(101, b"", {"Upgrade": "websocket"})
    egress.responseheaders(f)
    f.websocket = websocket.WebSocketData()
    egress.response(f)
    f.websocket.messages.append(websocket.WebSocketMessage(1, False, SECRET.encode()))
    monkeypatch.setattr(egress.store.scrubbers[f.id], "scrub_whole", boom)
    egress.websocket_message(f)
    assert f.websocket.messages[-1].dropped and f.error is not None


def test_a_failing_tunnel_check_closes_the_tunnel(egress, tmp_path, monkeypatch) -> None:
    from mitmproxy import options
    from mitmproxy.proxy import layers
    from mitmproxy.proxy.mode_specs import ProxyMode

    monkeypatch.setattr(TUN, "starts_like_http", boom)
    client = connection.Client(peername=("10.0.0.2", 5000), sockname=("0.0.0.0", 8080), timestamp_start=0)
    ctx = Context(client, options.Options())
    ctx.server.address = ("open.example.com", 443)
    ctx.client.proxy_mode = ProxyMode.parse("regular")
    ctx.layers = [layers.HttpLayer(ctx, layers.http.HTTPMode.regular)]
    nl = layer.NextLayer(ctx)
    nl.data_client = lambda: b"SSH-2.0-x\r\n"
    egress.next_layer(nl)
    assert isinstance(nl.layer, TUN.CloseClient)
    assert decisions(tmp_path)[-1]["failed_closed"] == "tunnel check"


def test_a_failing_connect_guard_refuses_the_connection(egress, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(R, "could_allow", boom)
    server = connection.Server(address=("open.example.com", 443))
    egress.server_connect(server_hooks.ServerConnectionHookData(server=server, client=tflow.tclient_conn()))
    assert server.error == "egress: egress failed closed in upstream connection guard (Injected)"


def test_when_even_the_decision_log_fails_the_flow_is_killed(egress, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(R, "match", boom)
    monkeypatch.setattr(egress.log, "record", boom)
    f = post()
    send(egress, f)
    assert not left_upstream(f)


def test_bodies_that_break_a_parser_are_blocked(egress, tmp_path) -> None:
    """Real failures, not injected ones: JSON nested past Python's recursion limit, a multipart
    boundary that is not latin-1. Either blocks; the secret never leaves."""
    deep = ("[" * 1500 + json.dumps(GHP) + "]" * 1500).encode()
    f = post(deep, host="open.example.com", **{"Content-Type": "application/json"})
    send(egress, f)
    assert f.response is not None and f.response.status_code == 403
    part = f"--\u00e9\u4e2d\r\nContent-Disposition: form-data; name=a\r\n\r\n{GHP}\r\n--\u00e9\u4e2d--\r\n".encode()
    g = post(part, host="open.example.com", **{"Content-Type": "multipart/form-data; boundary=\u00e9\u4e2d"})
    send(egress, g)
    assert g.response is not None and g.response.status_code == 403
    assert all(d["decision"] == "block" for d in decisions(tmp_path))


# --- through a real mitmdump -------------------------------------------------------------------

BREAK_DLP = """
# Loaded after egress's addon: every DLP body scan raises, as a bug in a decoder would.
import scanning


def boom(*args, **kwargs):
    raise RuntimeError("injected by the test")


scanning.DR.RequestScanner.scan_body = boom
"""


def test_real_mitmdump_fails_closed_and_nothing_reaches_the_upstream(tmp_path) -> None:
    upstream = RecordingUpstream()
    (tmp_path / "routes.yaml").write_text(routes_yaml(route_line("127.0.0.1", upstream.port, scheme="http", auth=AUTH)))
    script = tmp_path / "break_dlp.py"
    script.write_text(BREAK_DLP)
    proc, port = start_mitmdump(tmp_path, {"API_KEY": SECRET}, scripts=(str(script),))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "POST",
            f"http://127.0.0.1:{upstream.port}/v1/x",
            body=f"token={GHP}".encode(),
            headers={"x-api-key": "placeholder", "Content-Type": "text/plain"},
        )
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
    finally:
        stop_mitmdump(proc)
        upstream.close()
    assert resp.status == 403 and b"egress failed closed in dlp body (RuntimeError)" in body
    assert upstream.data == b""
    entry = decisions(tmp_path)[-1]
    assert entry["failed_closed"] == "dlp body" and entry["decision"] == "block"
