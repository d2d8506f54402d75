"""The egress mitmproxy addon (sidecars/egress/addon.py): hooks driven with mitmproxy's test helpers,
and one real mitmdump in front of a local upstream."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

# mitmproxy is a test extra (the version the sidecars image pins): no skip, a missing one fails.
from mitmproxy import connection
from mitmproxy import http as mhttp
from mitmproxy.proxy import server_hooks
from mitmproxy.test import taddons, tflow

from tests.support.egress import (
    DAEMONS_JSON,
    DLP_RULES,
    Driven,
    decisions,
    make_flow,
    mitmdump_argv,
    send,
    start_mitmdump,
    stop_mitmdump,
)
from tests.support.sidecars import egress_module

A = egress_module("addon")
DEC = egress_module("decisions")
SCAN = egress_module("scanning")
TUN = egress_module("tunnels")

SECRET = "sk-real-0123456789"
ROUTES = """
version: 1
bottle: dev
dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}
routes:
  - host: api.example.com
    ports: [443]
    methods: [POST, GET]
    paths: ["/v1/*"]
    schemes: [https]
    auth: {scheme: header, header: x-api-key, token_env: API_KEY}
    dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}
    model_tools: []
    once: null
  - {host: open.example.com, ports: [443], methods: [], paths: [], schemes: [https], auth: null, dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}, model_tools: [], once: null}
  - {host: nokey.example.com, ports: [443], methods: [], paths: [], schemes: [https], auth: {scheme: bearer, token_env: NOT_SET_ANYWHERE}, dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}, model_tools: [], once: null}
  - host: llm.example.com
    ports: [443]
    methods: []
    paths: []
    schemes: [https]
    auth: {scheme: header, header: x-api-key, token_env: API_KEY}
    dlp: {body: false, disabled_rules: [], max_body_bytes: 8388608}
    model_tools: []
    once: null
  - {host: small.example.com, ports: [443], methods: [], paths: [], schemes: [https], auth: null, dlp: {body: true, disabled_rules: [github-pat], max_body_bytes: 100}, model_tools: [], once: null}
"""


@pytest.fixture
def egress(tmp_path):
    (tmp_path / "routes.yaml").write_text(ROUTES)
    addon = Driven(A.Egress(state_dir=str(tmp_path), environ={"API_KEY": SECRET}, dlp_rules=str(DLP_RULES)))
    with taddons.context(addon.egress) as tctx:
        tctx.configure(addon.egress, confdir=str(tmp_path))
        yield addon, tctx


def addon_state(addon):
    return Path(addon.state_dir)


def test_blocked_request_gets_403_with_marker_and_is_logged(egress, tmp_path) -> None:
    addon, _ = egress
    f = make_flow("DELETE", "https://api.example.com/v1/x?secret=query", {"x-api-key": "placeholder"})
    send(addon, f)
    assert f.response.status_code == 403
    assert f.response.content == (
        b"egress: blocked DELETE api.example.com:443/v1/x: no route in routes.yaml of bottle dev allows it\n"
    )
    assert f.response.headers["content-type"] == "text/plain"
    [d] = decisions(tmp_path)
    assert d["decision"] == "block" and d["route"] is None and "method DELETE" in d["reason"]
    assert (d["method"], d["scheme"], d["host"], d["port"], d["path"]) == (
        "DELETE",
        "https",
        "api.example.com",
        443,
        "/v1/x",
    )
    assert d["ts"].endswith("+00:00")
    assert "placeholder" not in (tmp_path / "requests.jsonl").read_text()
    assert "secret=query" not in (tmp_path / "requests.jsonl").read_text()


def test_allowed_request_gets_the_real_credential_instead_of_the_placeholder(egress, tmp_path) -> None:
    addon, _ = egress
    f = make_flow("POST", "https://api.example.com/v1/messages", {"X-Api-Key": "placeholder"})
    send(addon, f)
    assert f.response is None
    assert f.request.headers.get_all("x-api-key") == [SECRET]
    [d] = decisions(tmp_path)
    assert d["decision"] == "allow" and d["route"] == 0
    assert SECRET not in (tmp_path / "requests.jsonl").read_text()
    # A route without auth leaves the agent's headers alone.
    g = make_flow("GET", "https://open.example.com/", {"Authorization": "Bearer mine"})
    send(addon, g)
    assert g.response is None and g.request.headers["authorization"] == "Bearer mine"


def test_missing_credential_answers_502_naming_the_variable(egress, tmp_path) -> None:
    addon, _ = egress
    f = make_flow("GET", "https://nokey.example.com/")
    send(addon, f)
    assert f.response.status_code == 502
    assert f.response.content.startswith(b"egress: credential NOT_SET_ANYWHERE")
    assert decisions(tmp_path)[-1]["decision"] == "error"


def test_host_header_that_differs_from_the_destination_is_blocked(egress, tmp_path) -> None:
    addon, _ = egress
    f = make_flow("GET", "https://open.example.com/")
    f.request.headers["Host"] = "elsewhere.com"  # after make(): setting the URL rewrites Host
    send(addon, f)
    assert f.response.status_code == 403 and b"elsewhere.com" in f.response.content
    f = make_flow("GET", "https://open.example.com/")
    f.client_conn.sni = "fronted.example.net"
    send(addon, f)
    assert f.response.status_code == 403 and b"SNI" in f.response.content


def test_buffered_response_is_scrubbed_in_headers_and_body(egress) -> None:
    addon, _ = egress
    f = make_flow("POST", "https://api.example.com/v1/echo", {"x-api-key": "placeholder"})
    send(addon, f)
    body = f'{{"you_sent": "{SECRET}"}}'.encode()
    f.response = mhttp.Response.make(200, body, {"Content-Type": "application/json", "X-Echo": SECRET})
    addon.responseheaders(f)
    assert not f.response.stream
    addon.response(f)
    assert SECRET.encode() not in f.response.content and b"[redacted by egress]" in f.response.content
    assert f.response.headers["x-echo"] == "[redacted by egress]"
    assert f.response.headers["content-length"] == str(len(f.response.raw_content))
    assert f.id not in addon.store.scrubbers


def test_streamed_response_is_scrubbed_chunk_by_chunk(egress) -> None:
    addon, _ = egress
    f = make_flow("POST", "https://api.example.com/v1/messages", {"x-api-key": "placeholder"})
    send(addon, f)
    f.response = mhttp.Response.make(200, b"", {"Content-Type": "text/event-stream", "Content-Length": "99"})
    addon.responseheaders(f)
    assert callable(f.response.stream)
    assert "content-length" not in f.response.headers
    assert f.response.headers["transfer-encoding"] == "chunked"
    event = f"data: {SECRET}\n\n".encode()
    out = []
    for i in range(0, len(event), 4):
        out.extend(f.response.stream(event[i : i + 4]))
    out.extend(f.response.stream(b""))
    assert b"".join(out) == b"data: [redacted by egress]\n\n"


def test_responses_without_injected_credentials_are_not_touched_but_streams_pass_through(egress) -> None:
    addon, _ = egress
    f = make_flow("GET", "https://open.example.com/")
    send(addon, f)
    f.response = mhttp.Response.make(200, b"", {"Content-Type": "text/event-stream"})
    addon.responseheaders(f)
    assert f.response.stream is True
    g = make_flow("GET", "https://open.example.com/")
    send(addon, g)
    g.response = mhttp.Response.make(200, SECRET.encode(), {"Content-Type": "text/plain"})
    addon.responseheaders(g)
    addon.response(g)
    assert not g.response.stream and g.response.content == SECRET.encode()


def test_routes_reload_when_the_file_changes_and_a_bad_file_keeps_the_old_policy(egress, tmp_path) -> None:
    addon, _ = egress
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nbottle: two\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes:\n"
        "  - {host: new.example.com, ports: [443], methods: [], paths: [], schemes: [https], auth: null, dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}, model_tools: [], once: null}\n"
    )
    f = make_flow("GET", "https://new.example.com/")
    send(addon, f)
    assert f.response is None and addon.policy.bottle == "two"
    routes.write_text(
        "version: 1\nbottle: two\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: [{host: new.example.com, ports: [bad], methods: [], paths: [], schemes: [https], auth: null, dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}, model_tools: [], once: null}]\n"
    )
    f = make_flow("GET", "https://new.example.com/")
    send(addon, f)
    assert f.response is None and addon.policy.bottle == "two"
    assert "routes[0].ports" in addon.policy_error


def test_sighup_reload_picks_up_an_unchanged_looking_file(egress, tmp_path) -> None:
    addon, _ = egress
    routes = tmp_path / "routes.yaml"
    st = routes.stat()
    routes.write_text(ROUTES.replace("open.example.com", "opn.example.coms"))  # same size
    os.utime(routes, ns=(st.st_atime_ns, st.st_mtime_ns))
    addon.on_sighup()
    f = make_flow("GET", "https://open.example.com/")
    send(addon, f)
    assert f.response.status_code == 403
    assert json.loads((tmp_path / "ready").read_text())["routes_loaded"] is True


def test_raw_tcp_udp_and_dns_flows_are_refused(egress, tmp_path) -> None:
    addon, _ = egress
    for hook, flow in (
        (addon.tcp_start, tflow.ttcpflow()),
        (addon.udp_start, tflow.tudpflow()),
        (addon.dns_request, tflow.tdnsflow()),
    ):
        flow.live = True
        hook(flow)
        assert flow.server_conn.error and flow.error is not None
    assert [d["scheme"] for d in decisions(tmp_path)] == ["tcp", "udp", "dns"]
    for d in decisions(tmp_path):
        assert (d["decision"], d["method"], d["path"], d["route"]) == ("block", "", "", None)
        assert d["reason"] == f"{d['scheme']} is not HTTP: only HTTP requests leave the bottle"
        assert (d["host"], d["port"]) == ("address", 22)  # mitmproxy's test flows' server address
    f = tflow.ttcpflow()
    f.server_conn.address = None
    addon.tcp_start(f)
    assert f.server_conn.error == "egress: tcp is not HTTP: only HTTP requests leave the bottle"
    assert (decisions(tmp_path)[-1]["host"], decisions(tmp_path)[-1]["port"]) == ("?", 0)


def test_server_connect_guard_refuses_addresses_no_route_names(egress) -> None:
    addon, _ = egress
    client = tflow.tclient_conn()
    bad = connection.Server(address=("db.internal", 5432))
    addon.server_connect(server_hooks.ServerConnectionHookData(server=bad, client=client))
    assert bad.error == "egress: no route for db.internal:5432"
    [d] = decisions(addon_state(addon))
    assert {k: d[k] for k in ("decision", "method", "scheme", "host", "port", "path", "route", "reason")} == {
        "decision": "block",
        "method": "",
        "scheme": "tcp",
        "host": "db.internal",
        "port": 5432,
        "path": "",
        "route": None,
        "reason": "no route for db.internal:5432",
    }
    # A refused name whose flow is gone still fails, with the generic message.
    stray = connection.Server(address=("gone" + DEC.REFUSED_SUFFIX, 443))
    addon.server_connect(server_hooks.ServerConnectionHookData(server=stray, client=client))
    assert stray.error == "egress: blocked"
    good = connection.Server(address=("open.example.com", 443))
    addon.server_connect(server_hooks.ServerConnectionHookData(server=good, client=client))
    assert good.error is None
    # A connection that already failed, or has no address yet, is left alone and not logged.
    failed = connection.Server(address=("db.internal", 5432))
    failed.error = "earlier"
    addon.server_connect(server_hooks.ServerConnectionHookData(server=failed, client=client))
    unaddressed = connection.Server(address=None)
    addon.server_connect(server_hooks.ServerConnectionHookData(server=unaddressed, client=client))
    assert failed.error == "earlier" and unaddressed.error is None
    assert len(decisions(addon_state(addon))) == 1


def test_state_folder_defaults_to_the_bundle_mount(monkeypatch) -> None:
    monkeypatch.delenv("BOTTLE_EGRESS_STATE", raising=False)
    assert A.Egress().state_dir == "/state/egress"
    monkeypatch.setenv("BOTTLE_EGRESS_STATE", "/elsewhere")
    assert A.Egress().state_dir == "/elsewhere"


def test_ready_file_written_when_running_and_stale_one_removed_at_load(tmp_path) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    (tmp_path / "ready").write_text("stale")
    addon = Driven(A.Egress(state_dir=str(tmp_path), environ={}, dlp_rules=str(DLP_RULES)))
    with taddons.context(addon.egress) as tctx:
        assert not (tmp_path / "ready").exists()
        tctx.configure(addon.egress, listen_port=18099)
        addon.running()
        info = json.loads((tmp_path / "ready").read_text())
        assert info["pid"] == os.getpid() and info["listen_port"] == 18099 and info["routes_loaded"]
        assert info["listen_host"] == "0.0.0.0" and info["routes_error"] is None and info["at"].endswith("+00:00")
        assert info["ca_cert"].endswith("/mitmproxy-ca-cert.pem")
        addon.done()
        assert not (tmp_path / "ready").exists()


def test_upstream_ca_is_added_to_the_default_trust(tmp_path) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    extra = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
    (tmp_path / "upstream-ca.pem").write_bytes(extra)
    addon = Driven(A.Egress(state_dir=str(tmp_path), environ={}, dlp_rules=str(DLP_RULES)))
    with taddons.context(addon.egress) as tctx:
        addon.running()
        path = tctx.options.ssl_verify_upstream_trusted_ca
        assert path and Path(path).parent == tmp_path
        data = Path(path).read_bytes()
        assert data.endswith(extra) and data.count(b"BEGIN CERTIFICATE") > 10  # certifi's roots too
        (tmp_path / "upstream-ca.pem").unlink()
        addon.on_sighup()
        assert tctx.options.ssl_verify_upstream_trusted_ca is None


# --- fronting, path, method and port tricks (issue 10, points 1 and 2) ------------------------------


def tunnel_flow(method: str, target: str, authority: str, headers: dict | None = None):
    """A request inside a CONNECT tunnel to ``target`` whose request line names ``authority``
    (mitmproxy's transparent mode inside tunnels keeps the absolute-form authority)."""
    f = make_flow(method, f"https://{target}/v1/x", headers)
    f.request.authority = authority
    return f


def test_fronting_inside_a_tunnel_is_blocked_and_logged_as_the_host_it_named(egress, tmp_path) -> None:
    addon, _ = egress
    f = tunnel_flow("GET", "api.example.com", "other.example.net", {"x-api-key": "placeholder"})
    send(addon, f)
    assert f.response.status_code == 403
    assert f.response.content == (
        b"egress: blocked GET api.example.com:443/v1/x: request authority 'other.example.net' "
        b"does not match the destination api.example.com:443 (fronting) (bottle dev)\n"
    )
    assert f.request.headers["x-api-key"] == "placeholder", "the credential was injected into a fronted request"
    [d] = decisions(tmp_path)
    assert d["decision"] == "block" and d["host"] == "other.example.net" and "fronting" in d["reason"]
    # The same host with another port, in the authority or the Host header: blocked too.
    for f in (
        tunnel_flow("GET", "api.example.com", "api.example.com:8443"),
        make_flow("GET", "https://api.example.com/v1/x"),
    ):
        if f.request.authority != "api.example.com:8443":
            f.request.headers["Host"] = "api.example.com:8443"
        send(addon, f)
        assert f.response.status_code == 403 and b"port 8443" in f.response.content
    # HTTP/2 lets a client put an absolute URL in :path: the same fronting.
    f = make_flow("GET", "https://api.example.com/v1/x", {"x-api-key": "placeholder"})
    f.request.http_version = "HTTP/2.0"
    f.request.path = "http://other.example.net/v1/x"
    send(addon, f)
    assert f.response.status_code == 403 and f.request.headers["x-api-key"] == "placeholder"
    assert decisions(tmp_path)[-1]["host"] == "other.example.net"
    # Control: an authority that names the tunnel's own host and port passes.
    ok = tunnel_flow("GET", "api.example.com", "api.example.com:443")
    send(addon, ok)
    assert ok.response is None and ok.request.headers["x-api-key"] == SECRET


def test_host_header_that_differs_from_the_destination_is_blocked_in_http2_too(egress) -> None:
    addon, _ = egress
    f = make_flow("GET", "https://open.example.com/")
    f.request.http_version = "HTTP/2.0"
    f.request.authority = "open.example.com"
    f.request.headers["Host"] = "elsewhere.com"  # h2's host_header would only show :authority
    send(addon, f)
    assert f.response.status_code == 403 and b"elsewhere.com" in f.response.content


@pytest.mark.parametrize(
    "method, path, headers",
    [
        ("GET", "/v1/..;/admin", {}),
        ("GET", "/v1/x;a=b", {}),
        ("GET", "/v1/%252e%252e/admin", {}),
        ("GET", "/v1/%2e%2e/admin", {}),
        ("GET", "/v1/..%5cadmin", {}),
        ("GET", "/v1%2fadmin", {}),
        ("POST", "/v1/x", {"X-HTTP-Method-Override": "DELETE"}),
        ("POST", "/v1/x", {"X-HTTP-Method": "PUT"}),
        ("POST", "/v1/x", {"X-Method-Override": "PATCH"}),
        ("POST", "/v1/x?_method=DELETE", {}),
    ],
)
def test_path_and_method_tricks_are_blocked_before_the_credential_is_injected(egress, method, path, headers) -> None:
    addon, _ = egress
    f = make_flow(method, f"https://api.example.com{path}", {"x-api-key": "placeholder", **headers})
    send(addon, f)
    assert f.response is not None and f.response.status_code == 403, f.response
    assert f.request.headers["x-api-key"] == "placeholder"


def test_method_override_to_an_allowed_method_passes(egress) -> None:
    addon, _ = egress
    f = make_flow("POST", "https://api.example.com/v1/x", {"X-HTTP-Method-Override": "GET"})
    send(addon, f)
    assert f.response is None


# --- decide before the body (issue 10, point 3) --------------------------------------------------


def test_blocked_request_with_a_large_body_is_refused_without_reading_it(egress, tmp_path) -> None:
    addon, _ = egress
    f = make_flow(
        "POST", "https://blocked.example.org/upload", {"Content-Length": str(100 << 20), "Expect": "100-continue"}
    )
    addon.requestheaders(f)
    # No response yet (setting one would make mitmproxy buffer the body first); the request is
    # streamed to a destination that server_connect refuses, so mitmproxy answers at once.
    assert f.response is None and f.request.stream is True
    assert "expect" not in f.request.headers
    assert f.request.host.endswith(DEC.REFUSED_SUFFIX)
    server = connection.Server(address=(f.request.host, 443))
    addon.server_connect(server_hooks.ServerConnectionHookData(server=server, client=f.client_conn))
    assert server.error.startswith("egress: blocked POST blocked.example.org:443/upload: no route")
    [d] = decisions(tmp_path)  # logged once, as what was asked for
    assert d["decision"] == "block" and d["host"] == "blocked.example.org"
    assert not addon.store.refusals


def test_blocked_request_whose_body_is_unknown_but_empty_gets_the_403(egress) -> None:
    addon, _ = egress
    f = make_flow("GET", "https://blocked.example.org/")
    f.request.http_version = "HTTP/2.0"  # no Content-Length: a body may follow
    addon.requestheaders(f)
    assert f.response is None and f.request.stream is True
    addon.request(f)  # mitmproxy's next hook when the stream ended at the headers
    assert f.response.status_code == 403 and f.response.content.startswith(b"egress: blocked GET")


def test_blocked_request_with_a_small_body_is_answered_at_its_headers(egress) -> None:
    addon, _ = egress
    f = make_flow("POST", "https://blocked.example.org/", {"Content-Length": "1000"})
    addon.requestheaders(f)
    assert f.response.status_code == 403 and not f.request.stream


def test_allowed_large_body_is_streamed_and_the_credential_injected_at_the_headers(egress) -> None:
    addon, _ = egress
    # A route whose bodies DLP does not scan (dlp: {body: false}, as for an LLM API).
    f = make_flow(
        "POST",
        "https://llm.example.com/v1/upload",
        {"Content-Length": str(SCAN.STREAM_THRESHOLD + 1), "x-api-key": "p"},
    )
    addon.requestheaders(f)
    assert isinstance(f.request.stream, SCAN.RequestBodyStream)
    assert f.request.headers["x-api-key"] == SECRET
    assert f.request.stream(b"abc") == [b"abc"] and f.request.stream(b"") == []
    chunked = make_flow("POST", "https://llm.example.com/v1/upload", {"Transfer-Encoding": "chunked"})
    addon.requestheaders(chunked)
    assert isinstance(chunked.request.stream, SCAN.RequestBodyStream)
    # Where DLP scans bodies, one of known length within the cap is buffered whole and scanned.
    g = make_flow(
        "POST",
        "https://api.example.com/v1/upload",
        {"Content-Length": str(SCAN.STREAM_THRESHOLD + 1), "x-api-key": "p"},
    )
    addon.requestheaders(g)
    assert not g.request.stream and g.request.headers["x-api-key"] == "p"


def test_allowed_small_body_is_buffered_and_the_credential_injected_after_the_body(egress) -> None:
    addon, _ = egress
    f = make_flow("POST", "https://api.example.com/v1/upload", {"Content-Length": "3", "x-api-key": "p"})
    addon.requestheaders(f)
    assert not f.request.stream
    assert f.request.headers["x-api-key"] == "p"  # the DLP scan sees what the agent sent
    f.request.content = b"abc"
    addon.request(f)
    assert f.request.headers["x-api-key"] == SECRET


def test_http2_body_of_unknown_length_gets_a_content_length_for_an_http1_upstream(egress) -> None:
    addon, _ = egress
    f = make_flow("PUT", "https://llm.example.com/x")
    f.request.http_version = "HTTP/2.0"
    addon.requestheaders(f)
    assert not f.request.stream  # the upstream is not connected yet: buffer, then frame it
    f.request.data.content = b"data"  # as mitmproxy sets it: no header update
    addon.request(f)
    assert f.request.headers["content-length"] == "4"
    g = make_flow("PUT", "https://llm.example.com/x")
    g.request.http_version = "HTTP/2.0"
    g.server_conn.alpn = b"h2"
    g.server_conn.timestamp_start = time.time()  # connected
    g.server_conn.state = connection.ConnectionState.OPEN
    addon.requestheaders(g)
    assert isinstance(g.request.stream, SCAN.RequestBodyStream)  # an h2 upstream frames it itself


def test_headers_meant_for_the_proxy_stop_at_egress(egress) -> None:
    addon, _ = egress
    f = make_flow(
        "GET",
        "https://open.example.com/",
        {
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "Proxy-Connection": "keep-alive",
            "Keep-Alive": "timeout=5",
            "Proxy-Authenticate": "Basic",
            "Connection": "keep-alive, X-Private",
            "X-Private": "1",
            "X-Kept": "1",
        },
    )
    send(addon, f)
    assert f.response is None
    names = {k.lower() for k in f.request.headers}
    assert not names & {"proxy-authorization", "proxy-connection", "proxy-authenticate", "keep-alive", "x-private"}
    assert f.request.headers["connection"] == "keep-alive" and f.request.headers["x-kept"] == "1"
    # A Connection header cannot make egress drop what frames or routes the request.
    framing = {
        "Host": "open.example.com",
        "Content-Length": "3",
        "Transfer-Encoding": "chunked",
        "Upgrade": "websocket",
        "TE": "trailers",
    }
    g = make_flow(
        "POST",
        "https://open.example.com/",
        {"Connection": "Content-Length, Transfer-Encoding, Host, Upgrade, TE, X-A", **framing},
    )
    addon.requestheaders(g)
    assert {k: g.request.headers.get(k) for k in framing} == framing and g.request.headers["connection"] == "upgrade"
    # The tokens mitmproxy acts on stay; every Connection header counts.
    for conn, kept in (("close, X-A", "close"), ("Upgrade, X-A", "upgrade"), ("keep-alive, X-A", "keep-alive")):
        h = make_flow("GET", "https://open.example.com/", {"Connection": conn, "X-A": "1"})
        send(addon, h)
        assert h.request.headers["connection"] == kept and "x-a" not in h.request.headers
    two = make_flow("GET", "https://open.example.com/", {"X-A": "1", "X-B": "1"})
    two.request.headers.add("Connection", "X-A")
    two.request.headers.add("Connection", "X-B")
    send(addon, two)
    assert "x-a" not in two.request.headers and "x-b" not in two.request.headers


def test_requests_log_is_rotated_by_size(tmp_path) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    addon = Driven(A.Egress(state_dir=str(tmp_path), environ={}, log_max_bytes=2000, dlp_rules=str(DLP_RULES)))
    with taddons.context(addon.egress):
        for i in range(200):
            send(addon, make_flow("GET", f"https://blocked.example.org/{i}"))
    logs = sorted(p.name for p in tmp_path.glob("requests.jsonl*"))
    assert logs == ["requests.jsonl"] + [f"requests.jsonl.{n}" for n in range(1, DEC.LOG_KEEP + 1)]
    assert all((tmp_path / n).stat().st_size < 2000 + 400 for n in logs)
    assert json.loads((tmp_path / "requests.jsonl").read_text().splitlines()[-1])["path"] == "/199"
    newest_rotated = [json.loads(x)["path"] for x in (tmp_path / "requests.jsonl.1").read_text().splitlines()]
    first_current = decisions(tmp_path)[0]["path"]
    assert int(newest_rotated[-1][1:]) + 1 == int(first_current[1:])


# --- scrubbing every response path (issue 10, point 4) -------------------------------------------


def authed_flow(addon, method: str = "GET"):
    f = make_flow(method, "https://api.example.com/v1/echo", {"x-api-key": "placeholder"})
    send(addon, f)
    assert f.request.headers["x-api-key"] == SECRET
    return f


def test_headers_of_a_streamed_response_are_scrubbed(egress) -> None:
    addon, _ = egress
    f = authed_flow(addon)
    f.response = mhttp.Response.make(200, b"", {"Content-Type": "text/event-stream", "X-Echo": f"k={SECRET}"})
    addon.responseheaders(f)
    assert callable(f.response.stream)
    assert f.response.headers["x-echo"] == "k=[redacted by egress]"


@pytest.mark.parametrize("streamed", [False, True])
def test_trailers_are_scrubbed(egress, streamed) -> None:
    addon, _ = egress
    f = authed_flow(addon)
    ctype = "text/event-stream" if streamed else "text/plain"
    f.response = mhttp.Response.make(200, b"ok", {"Content-Type": ctype})
    addon.responseheaders(f)
    assert bool(f.response.stream) == streamed
    f.response.trailers = mhttp.Headers(x_echo=SECRET.encode(), grpc_message=f"bad key {SECRET}".encode())
    addon.response(f)  # mitmproxy sends trailers only after this hook
    assert SECRET not in str(f.response.trailers.fields)
    assert f.response.trailers["x-echo"] == "[redacted by egress]"


def test_websocket_messages_to_the_agent_are_scrubbed_text_and_binary(egress) -> None:
    addon, _ = egress
    f = authed_flow(addon)
    f.response = mhttp.Response.make(101, b"", {"Upgrade": "websocket", "Connection": "Upgrade"})
    addon.responseheaders(f)
    from mitmproxy import websocket

    f.websocket = websocket.WebSocketData()
    addon.response(f)
    assert f.id in addon.store.scrubbers  # kept for the messages that follow
    for text, content in ((True, f"echo {SECRET}".encode()), (False, b"\x00\x01" + SECRET.encode())):
        f.websocket.messages.append(websocket.WebSocketMessage(1 if text else 2, False, content))
        addon.websocket_message(f)
        assert SECRET.encode() not in f.websocket.messages[-1].content
        assert b"[redacted by egress]" in f.websocket.messages[-1].content
    # The agent's own messages go upstream untouched.
    f.websocket.messages.append(websocket.WebSocketMessage(1, True, b"hello"))
    addon.websocket_message(f)
    assert f.websocket.messages[-1].content == b"hello"
    addon.websocket_end(f)
    assert f.id not in addon.store.scrubbers


def gz(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


@pytest.mark.parametrize(
    "coding, encode",
    [
        ("gzip", gz),
        ("gzip, gzip", lambda d: gz(gz(d))),
        ("GZIP,identity", gz),
        ("x-gzip", gz),
        ("deflate, gzip", lambda d: gz(__import__("zlib").compress(d))),
        ("br", lambda d: __import__("brotli").compress(d)),
        ("gzip, br", lambda d: __import__("brotli").compress(gz(d))),
        ("zstd", lambda d: __import__("zstandard").ZstdCompressor().compress(d)),
    ],
)
def test_bodies_in_stacked_encodings_are_decoded_and_scrubbed(egress, coding, encode) -> None:
    addon, _ = egress
    f = authed_flow(addon)
    body = f'{{"echo": "{SECRET}"}}'.encode()
    f.response = mhttp.Response.make(200, b"", {"Content-Type": "application/json"})
    f.response.raw_content = encode(body)
    f.response.headers["content-encoding"] = coding  # make() drops it for an empty body
    f.response.headers["content-length"] = str(len(f.response.raw_content))
    addon.responseheaders(f)
    addon.response(f)
    assert f.response.status_code == 200
    assert f.response.raw_content == b'{"echo": "[redacted by egress]"}'
    assert "content-encoding" not in f.response.headers
    assert f.response.headers["content-length"] == str(len(f.response.raw_content))


@pytest.mark.parametrize(
    "coding, raw",
    [("compress", b"\x1f\x9d\x90secret"), ("gzip", b"not gzip"), ("gzip, snappy", b"x"), ("zstd", b"bad")],
)
def test_bodies_that_cannot_be_decoded_are_refused_with_502(egress, coding, raw) -> None:
    addon, _ = egress
    f = authed_flow(addon)
    f.response = mhttp.Response.make(200, b"")
    f.response.raw_content = raw + SECRET.encode()
    f.response.headers["content-encoding"] = coding
    addon.responseheaders(f)
    addon.response(f)
    assert f.response.status_code == 502
    assert f.response.content.startswith(b"egress: response body cannot be scrubbed")
    assert SECRET.encode() not in f.response.raw_content


def test_encoded_forms_of_the_credential_are_scrubbed_from_bodies(egress) -> None:
    import base64
    import urllib.parse

    addon, _ = egress
    f = authed_flow(addon)
    forms = [
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode(),
        SECRET.encode().hex(),
        SECRET.encode().hex().upper(),
        "".join(f"\\u{ord(c):04x}" for c in SECRET),
        urllib.parse.quote(SECRET, safe=""),
        "".join(f"%{b:02x}" for b in SECRET.encode()),
    ]
    f.response = mhttp.Response.make(200, "\n".join(forms).encode(), {"Content-Type": "text/plain"})
    addon.responseheaders(f)
    addon.response(f)
    assert f.response.content == b"\n".join([b"[redacted by egress]"] * len(forms))


# --- one real mitmdump ----------------------------------------------------------------------------


class Upstream(http.server.BaseHTTPRequestHandler):
    """Echoes the credential it received, once as a plain body and once as a chunked SSE stream."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        got = self.headers.get("x-api-key", "")
        if self.path.startswith("/v1/sse"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            data = f"data: {got}\n\n".encode()
            for i in range(0, len(data), 3):  # the secret arrives split over many chunks
                part = data[i : i + 3]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        body = f"you sent {got}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_mitmdump_argv_follows_daemons_json() -> None:
    argv = mitmdump_argv(Path("/s"), 1234)
    spec = json.loads(DAEMONS_JSON.read_text())["egress"]["argv"]
    assert [a for a in argv[2:] if a.startswith("--")] == [a for a in spec[2:] if a.startswith("--")]
    assert "connection_strategy=lazy" in argv and "confdir=/s" in argv and "1234" in argv


def test_real_mitmdump_enforces_routes_and_scrubs_streams(tmp_path) -> None:
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    up_port = upstream.server_address[1]
    (tmp_path / "routes.yaml").write_text(
        "version: 1\nbottle: e2e\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes:\n"
        f"  - {{host: 127.0.0.1, ports: [{up_port}], methods: [], paths: ['/v1/*'], schemes: [http],"
        " auth: {scheme: header, header: x-api-key, token_env: E2E_KEY}, dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}, model_tools: [], once: null}\n"
    )
    proc, port = start_mitmdump(tmp_path, {"E2E_KEY": SECRET})
    try:
        ready = json.loads((tmp_path / "ready").read_text())
        assert (ready["listen_host"], ready["listen_port"]) == ("127.0.0.1", port)
        assert ready["ca_cert"] == str(tmp_path / "mitmproxy-ca-cert.pem") and Path(ready["ca_cert"]).exists()

        def get(path: str) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"http://127.0.0.1:{up_port}{path}", headers={"x-api-key": "placeholder"})
            resp = conn.getresponse()
            try:
                return resp.status, resp.read()
            finally:
                conn.close()

        assert get("/v1/plain") == (200, b"you sent [redacted by egress]")
        assert get("/v1/sse") == (200, b"data: [redacted by egress]\n\n")
        status, body = get("/other")
        assert status == 403
        assert (
            body
            == f"egress: blocked GET 127.0.0.1:{up_port}/other: no route in routes.yaml of bottle e2e allows it\n".encode()
        )
        assert [d["decision"] for d in decisions(tmp_path)] == ["allow", "allow", "block"]

        # SIGHUP reloads (and does not kill mitmdump, whose default for SIGHUP would be to die).
        (tmp_path / "routes.yaml").write_text(
            "version: 1\nbottle: e2e\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: []\n"
        )
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert proc.poll() is None
        assert get("/v1/plain")[0] == 403
    finally:
        stop_mitmdump(proc)
        upstream.shutdown()
        upstream.server_close()
    assert not (tmp_path / "ready").exists()


def connect_tunnel(port: int, target: str) -> socket.socket:
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    assert c.recv(4096).startswith(b"HTTP/1.1 200")
    return c


def test_real_mitmdump_closes_a_tunnel_that_carries_no_http_at_once(tmp_path) -> None:
    (tmp_path / "routes.yaml").write_text(
        "version: 1\nbottle: t\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes:\n"
        "  - {host: allowed.test, ports: [22, 443], methods: [], paths: [], schemes: [https], auth: null, dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}, model_tools: [], once: null}\n"
    )
    proc, port = start_mitmdump(tmp_path, {})
    try:
        for target, payload in (
            ("allowed.test:22", b"SSH-2.0-OpenSSH_9.2\r\n"),
            ("allowed.test:443", b"\x00\x01binary"),
        ):
            c = connect_tunnel(port, target)
            c.sendall(payload)
            assert c.recv(4096) == b"", "the tunnel stayed open"  # a hang fails on the 5 s timeout
            c.close()
        # Control: HTTP inside a tunnel is answered (blocked: the route is https only).
        c = connect_tunnel(port, "allowed.test:443")
        c.sendall(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 403")
        c.close()
    finally:
        stop_mitmdump(proc)
    blocks = [d for d in decisions(tmp_path) if d["scheme"] == "tunnel"]
    assert [(d["host"], d["port"]) for d in blocks] == [("allowed.test", 22), ("allowed.test", 443)]
    for d in blocks:
        assert (d["decision"], d["method"], d["path"], d["route"]) == ("block", "", "", None)
        assert d["reason"] == "CONNECT tunnel carries something other than HTTP: only HTTP requests leave the bottle"


def test_real_mitmdump_refuses_a_large_blocked_upload_without_reading_it(tmp_path) -> None:
    (tmp_path / "routes.yaml").write_text(
        "version: 1\nbottle: t\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: []\n"
    )
    proc, port = start_mitmdump(tmp_path, {})
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(
            b"POST http://blocked.test/up HTTP/1.1\r\nHost: blocked.test\r\nContent-Length: 104857600\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        reply = c.recv(65536)  # answered on the headers: no 100 Continue, no body wanted
        c.close()
    finally:
        stop_mitmdump(proc)
    assert reply.startswith(b"HTTP/1.1 502") and b"egress: blocked POST blocked.test:80/up: no route" in reply
    [d] = decisions(tmp_path)
    assert d["decision"] == "block" and d["host"] == "blocked.test"


# --- DLP before injection ---------------------------------------------------------------------------

GHP = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
AWS = "AKIA" + "QYLPMN5HJ3ZX7TRW"


@pytest.mark.parametrize(
    "where, url, headers",
    [
        ("url path", f"https://open.example.com/upload/{GHP}", {}),
        ("query", f"https://open.example.com/q?token={GHP}", {}),
        ("header X-Debug", "https://open.example.com/h", {"X-Debug": f"token {GHP}"}),
        ("header Cookie", "https://open.example.com/c", {"Cookie": f"s={AWS}"}),
    ],
)
def test_a_secret_in_the_url_or_a_header_is_blocked_before_anything_is_injected(
    egress, tmp_path, where, url, headers
) -> None:
    addon, _ = egress
    f = make_flow("GET", url, headers)
    send(addon, f)
    assert f.response is not None and f.response.status_code == 403
    body = f.response.content.decode()
    assert body.startswith("dlp: blocked: ") and where.split()[0] in body
    assert GHP not in body and AWS not in body
    entry = decisions(tmp_path)[-1]
    assert (
        entry["decision"] == "block"
        and entry["dlp"]["findings"]
        and GHP not in json.dumps(entry)
        and AWS not in json.dumps(entry)
    )


def test_a_secret_in_a_buffered_body_is_blocked_and_the_credential_never_injected(egress, tmp_path) -> None:
    addon, _ = egress
    f = make_flow("POST", "https://api.example.com/v1/chat", {"Content-Type": "application/json", "x-api-key": "p"})
    f.request.content = json.dumps({"msg": f"here is my key {GHP}"}).encode()
    send(addon, f)
    assert f.response.status_code == 403 and f.response.content.startswith(b"dlp: blocked: github-pat in body")
    assert f.request.headers["x-api-key"] == "p", "the real credential was injected into a refused request"
    assert [d["decision"] for d in decisions(tmp_path)] == ["block"]
    # The same route passes a clean body, with the credential.
    ok = make_flow("POST", "https://api.example.com/v1/chat", {"Content-Type": "application/json", "x-api-key": "p"})
    ok.request.content = b'{"msg": "hello"}'
    send(addon, ok)
    assert ok.response is None and ok.request.headers["x-api-key"] == SECRET
    assert decisions(tmp_path)[-1]["decision"] == "allow"


def test_a_gzip_body_is_decoded_and_scanned(egress) -> None:
    addon, _ = egress
    f = make_flow("POST", "https://open.example.com/up", {"Content-Encoding": "gzip"})
    f.request.raw_content = gz(f"aws = {AWS}\n".encode())
    send(addon, f)
    assert f.response.status_code == 403 and b"aws-access-token" in f.response.content


def test_a_body_over_the_cap_is_blocked_unread_and_an_undecodable_one_too(egress) -> None:
    addon, _ = egress
    big = make_flow("POST", "https://small.example.com/up", {"Content-Length": "101"})
    addon.requestheaders(big)
    assert big.response is not None and big.response.status_code == 403
    assert (
        big.response.content.startswith(b"dlp: blocked: cannot scan") and b"100-byte scan cap" in big.response.content
    )
    bad = make_flow("POST", "https://open.example.com/up", {"Content-Encoding": "gzip"})
    bad.request.raw_content = b"not gzip at all"
    send(addon, bad)
    assert bad.response.status_code == 403 and bad.response.content.startswith(b"dlp: blocked: cannot scan")


def test_disabled_rules_and_body_false_let_their_bodies_through(egress) -> None:
    addon, _ = egress
    exempt = make_flow("POST", "https://small.example.com/up", {})
    exempt.request.content = f"{GHP}".encode()  # github-pat is disabled on this route
    send(addon, exempt)
    assert exempt.response is None
    llm = make_flow("POST", "https://llm.example.com/v1/messages", {"x-api-key": "p"})
    # (a Messages API body: egress reads it as JSON for server tools, never with DLP)
    llm.request.content = json.dumps({"messages": [{"role": "user", "content": f"code with {AWS}"}]}).encode()
    send(addon, llm)
    assert llm.response is None and llm.request.headers["x-api-key"] == SECRET
    # body: false skips the body only: a secret in the URL is still blocked.
    url = make_flow("GET", f"https://llm.example.com/v1/{AWS}", {"x-api-key": "p"})
    send(addon, url)
    assert url.response.status_code == 403


def test_a_streamed_chunked_body_with_a_secret_is_killed_and_nothing_after_it_leaves(egress, tmp_path) -> None:
    addon, _ = egress
    f = make_flow("POST", "http://open.example.com/up", {"Transfer-Encoding": "chunked"})
    f.request.scheme, f.request.port = "https", 443
    addon.requestheaders(f)
    stream = f.request.stream
    assert isinstance(stream, SCAN.RequestBodyStream)
    sent = stream(b"x" * 100_000)  # clean data leaves, less the overlap window kept back
    assert sent and len(sent[0]) < 100_000
    assert stream(f"key {GHP} tail".encode()) == []
    assert stream(b"") == []
    assert f.error is not None and "killed" in f.error.msg.lower()
    entry = decisions(tmp_path)[-1]
    assert entry["decision"] == "block" and entry["dlp"]["findings"][0]["rule"] == "github-pat"


def test_a_websocket_message_from_the_agent_with_a_secret_is_dropped(egress, tmp_path) -> None:
    from mitmproxy import websocket

    addon, _ = egress
    f = tflow.twebsocketflow()
    f.request.host, f.request.port, f.request.scheme, f.request.path = "open.example.com", 443, "https", "/ws"
    f.websocket.messages.append(websocket.WebSocketMessage(2, True, f"token={GHP}".encode()))
    addon.websocket_message(f)
    assert f.websocket.messages[-1].dropped
    assert decisions(tmp_path)[-1]["dlp"]["findings"][0]["rule"] == "github-pat"


def test_unloadable_dlp_rules_block_every_request(tmp_path) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    addon = Driven(
        A.Egress(state_dir=str(tmp_path), environ={"API_KEY": SECRET}, dlp_rules=str(tmp_path / "missing.toml"))
    )
    with taddons.context(addon.egress) as tctx:
        tctx.configure(addon.egress, confdir=str(tmp_path))
        f = make_flow("GET", "https://open.example.com/")
        send(addon, f)
        assert f.response.status_code == 403 and f.response.content.startswith(b"dlp: blocked")


def test_a_policy_that_disables_an_unknown_rule_is_refused(egress, tmp_path) -> None:
    addon, _ = egress
    (tmp_path / "routes.yaml").write_text(
        ROUTES.replace("disabled_rules: [github-pat]", "disabled_rules: [github-pats]")
    )
    assert addon.reload(force=True) is False
    assert "unknown gitleaks rule id 'github-pats'" in addon.policy_error


def test_body_limits_are_inclusive(egress) -> None:
    addon, _ = egress
    at_limit = make_flow("POST", "https://blocked.example.org/", {"Content-Length": str(DEC.BLOCKED_BODY_READ_LIMIT)})
    addon.requestheaders(at_limit)
    assert at_limit.response is not None and at_limit.response.status_code == 403
    over = make_flow("POST", "https://blocked.example.org/", {"Content-Length": str(DEC.BLOCKED_BODY_READ_LIMIT + 1)})
    addon.requestheaders(over)
    assert over.response is None and over.request.stream is True
    at_threshold = make_flow("POST", "https://open.example.com/", {"Content-Length": str(SCAN.STREAM_THRESHOLD)})
    addon.requestheaders(at_threshold)
    assert not at_threshold.request.stream


def test_an_empty_response_body_stays_empty_when_scrubbed(egress) -> None:
    addon, _ = egress
    f = authed_flow(addon)
    f.response = mhttp.Response.make(204, b"")
    addon.responseheaders(f)
    addon.response(f)
    assert f.response.status_code == 204 and not f.response.raw_content


def test_without_a_valid_routes_file_every_request_is_blocked_and_says_why(tmp_path) -> None:
    addon = Driven(A.Egress(state_dir=str(tmp_path), environ={}))
    with taddons.context(addon.egress):
        f = make_flow("GET", "https://open.example.com/x")
        send(addon, f)
    assert f.response.status_code == 403
    assert f.response.content.startswith(b"egress: blocked GET open.example.com:443/x: no valid routes.yaml: ")
    assert b"cannot read" in f.response.content
    assert decisions(tmp_path)[-1]["reason"].startswith("no valid routes.yaml: ")


@pytest.mark.parametrize(
    "data, ok",
    [
        (b"", True),
        (b"G", True),
        (b"GET", True),
        (b"GET / HTTP/1.1\r\n", True),
        (b"PRI * HTTP/2.0", True),
        (b"VERSION-CONTROL /x", True),
        (b"A" * 23, True),
        (b"A" * 24, False),
        (b"A" * 30, False),
        (b"SSH-2.0-OpenSSH", False),
        (b"\x00\x01", False),
        (b" GET", False),
        (b"GET\r\n", False),
        (b"\x16\x03\x01", False),
    ],
)
def test_what_may_still_become_an_http_request(data, ok) -> None:
    assert TUN.starts_like_http(data) == ok


def test_reload_reports_whether_the_policy_changed(egress, tmp_path) -> None:
    addon, _ = egress
    routes = tmp_path / "routes.yaml"
    assert addon.reload() is False  # unchanged since load
    assert addon.reload(force=True) is True
    routes.write_text(ROUTES.replace("open.example.com", "new.example.com"))
    assert addon.reload() is True and addon.policy.routes[1].host == "new.example.com"
    routes.write_text("version: 2\n")
    assert addon.reload() is False and addon.policy.routes[1].host == "new.example.com"
    assert addon.reload() is False


def test_an_upstream_trust_set_on_the_command_line_is_kept(tmp_path) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    (tmp_path / "upstream-ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n")
    addon = Driven(A.Egress(state_dir=str(tmp_path), environ={}))
    with taddons.context(addon.egress) as tctx:
        tctx.configure(addon.egress, ssl_verify_upstream_trusted_ca="/operator/ca.pem")
        addon.running()
        assert tctx.options.ssl_verify_upstream_trusted_ca == "/operator/ca.pem"
        assert not list(tmp_path.glob("upstream-trust-*.pem"))


def test_real_mitmdump_checks_what_a_tls_tunnel_carries_after_the_handshake(tmp_path) -> None:
    import ssl

    (tmp_path / "routes.yaml").write_text(
        "version: 1\nbottle: t\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes:\n"
        "  - {host: allowed.test, ports: [443], methods: [GET], paths: ['/v1/*'], schemes: [https], auth: null, dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}, model_tools: [], once: null}\n"
    )
    proc, port = start_mitmdump(tmp_path, {})
    try:
        context = ssl.create_default_context(cafile=str(tmp_path / "mitmproxy-ca-cert.pem"))
        answers = []
        for payload in (b"GET /other HTTP/1.1\r\nHost: allowed.test\r\n\r\n", b"SSH-2.0-OpenSSH_9.2\r\n"):
            raw = connect_tunnel(port, "allowed.test:443")
            tls = context.wrap_socket(raw, server_hostname="allowed.test")  # TLS passes to the TLS layer
            tls.sendall(payload)
            try:
                answers.append(tls.recv(4096))
            except (ssl.SSLError, ConnectionError):
                answers.append(b"")
            tls.close()
    finally:
        stop_mitmdump(proc)
    assert answers[0].startswith(b"HTTP/1.1 403")
    assert any(d["path"] == "/other" and d["decision"] == "block" for d in decisions(tmp_path))
    assert answers[1] == b"", "a TLS tunnel that carries no HTTP stayed open"
    [d] = [d for d in decisions(tmp_path) if d["scheme"] == "tunnel"]
    assert d["reason"] == "TLS tunnel carries something other than HTTP: only HTTP requests leave the bottle"


def test_which_responses_stream(egress) -> None:
    addon, _ = egress

    def streamed(method="GET", status=200, headers=None, http_version="HTTP/1.1", authed=False):
        f = authed_flow(addon, method) if authed else make_flow(method, "https://open.example.com/")
        if not authed:
            send(addon, f)
        f.request.http_version = http_version
        f.response = mhttp.Response.make(status, b"")
        f.response.headers.pop("content-length", None)
        for k, v in (headers or {}).items():
            f.response.headers[k] = v
        addon.responseheaders(f)
        return f

    big = {"Content-Length": str(SCAN.STREAM_THRESHOLD + 1)}
    assert streamed(headers=big).response.stream is True
    assert not streamed(headers={"Content-Length": str(SCAN.STREAM_THRESHOLD)}).response.stream
    assert streamed(headers={}).response.stream is True  # unknown length
    assert not streamed("HEAD", headers=big).response.stream
    assert (
        not streamed(status=204, headers=big).response.stream and not streamed(status=304, headers=big).response.stream
    )
    assert not streamed(status=101, headers=big).response.stream
    # With a credential to scrub: identity bodies stream through the scrubber, re-framed for HTTP/1.1.
    f = streamed(headers=big, authed=True)
    assert callable(f.response.stream) and f.response.headers["transfer-encoding"] == "chunked"
    h2 = streamed(headers=big, authed=True, http_version="HTTP/2.0")
    assert callable(h2.response.stream) and "transfer-encoding" not in h2.response.headers
    assert not streamed(headers={**big, "Content-Encoding": "gzip"}, authed=True).response.stream
    assert not streamed(headers=big, authed=True, http_version="HTTP/1.0").response.stream


def test_credential_errors_are_labelled_as_errors(egress) -> None:
    addon, _ = egress
    f = make_flow("GET", "https://nokey.example.com/")
    send(addon, f)
    assert f.response.headers["x-egress-decision"] == "error"
    g = make_flow("GET", "https://blocked.example.org/")
    send(addon, g)
    assert g.response.headers["x-egress-decision"] == "blocked"


def test_every_override_header_counts_even_when_repeated(egress) -> None:
    addon, _ = egress
    f = make_flow("POST", "https://api.example.com/v1/x")
    f.request.headers.add("X-HTTP-Method-Override", "GET")
    f.request.headers.add("X-HTTP-Method-Override", "DELETE")
    send(addon, f)
    assert f.response.status_code == 403


def test_a_buffered_body_keeps_its_own_framing(egress) -> None:
    addon, _ = egress
    f = make_flow("PUT", "https://open.example.com/x", {"Transfer-Encoding": "chunked"})
    f.request.http_version = "HTTP/2.0"
    f.request.headers.pop("transfer-encoding")
    addon.requestheaders(f)
    addon.request(f)  # no body: nothing to frame
    assert "content-length" not in f.request.headers


# --- scrubbing in every form the request side decodes (issue 14, item 7) --------------------------


def test_the_credential_is_scrubbed_from_the_reason_phrase(egress) -> None:
    addon, _ = egress
    f = authed_flow(addon)
    f.response = mhttp.Response.make(401, b"", {})
    f.response.reason = f"bad key {SECRET}"
    addon.responseheaders(f)
    addon.response(f)
    assert SECRET not in f.response.reason and "[redacted by egress]" in f.response.reason


@pytest.mark.parametrize("form", ["wrapped76", "wrapped-crlf", "base64-twice", "gzip-undeclared", "hex-wrapped"])
def test_the_credential_is_scrubbed_in_wrapped_double_and_undeclared_forms(egress, form) -> None:
    import base64
    import gzip
    import textwrap

    addon, _ = egress
    f = authed_flow(addon)
    pad = b"x" * 50 + SECRET.encode() + b"y" * 50
    body = {
        "wrapped76": "\n".join(textwrap.wrap(base64.b64encode(pad).decode(), 76)).encode(),
        "wrapped-crlf": "\r\n".join(textwrap.wrap(base64.b64encode(pad).decode(), 76)).encode(),
        "base64-twice": base64.b64encode(base64.b64encode(SECRET.encode())),
        "gzip-undeclared": gzip.compress(b"echo: " + SECRET.encode()),
        "hex-wrapped": "\n".join(textwrap.wrap(SECRET.encode().hex(), 16)).encode(),
    }[form]
    f.response = mhttp.Response.make(200, body, {"Content-Type": "application/octet-stream"})
    addon.responseheaders(f)
    addon.response(f)
    out = f.response.content
    assert b"[redacted by egress]" in out
    decoded = out.replace(b"\r", b"").replace(b"\n", b"")
    for probe in (decoded, base64.b64decode(decoded + b"==", validate=False) if form.startswith("wrapped") else b""):
        assert SECRET.encode() not in probe


def test_a_websocket_message_wrapped_at_76_columns_is_scrubbed(egress) -> None:
    import base64
    import textwrap

    from mitmproxy import websocket

    addon, _ = egress
    f = authed_flow(addon)
    f.response = mhttp.Response.make(101, b"", {"Upgrade": "websocket"})
    addon.responseheaders(f)
    f.websocket = websocket.WebSocketData()
    addon.response(f)
    text = "\n".join(textwrap.wrap(base64.b64encode(b"z" * 60 + SECRET.encode()).decode(), 76)).encode()
    f.websocket.messages.append(websocket.WebSocketMessage(1, False, text))
    addon.websocket_message(f)
    assert b"[redacted by egress]" in f.websocket.messages[-1].content
