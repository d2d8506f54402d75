"""The egress mitmproxy addon (sidecars/egress/addon.py): hooks driven with mitmproxy's test helpers,
and one real mitmdump in front of a local upstream."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# mitmproxy is a test extra (the version the sidecars image pins): no skip, a missing one fails.
from mitmproxy import connection, http as mhttp  # noqa: E402
from mitmproxy.proxy import server_hooks  # noqa: E402
from mitmproxy.test import taddons, tflow  # noqa: E402

from tests.sidecar_modules import EGRESS_DIR, egress_module  # noqa: E402

A = egress_module("addon")

SECRET = "sk-real-0123456789"
ROUTES = """
version: 1
bottle: dev
routes:
  - host: api.example.com
    ports: [443]
    methods: [POST, GET]
    paths: ["/v1/*"]
    auth: {scheme: header, header: x-api-key, token_env: API_KEY}
  - host: open.example.com
    ports: [443]
  - host: nokey.example.com
    ports: [443]
    auth: {scheme: bearer, token_env: NOT_SET_ANYWHERE}
"""


@pytest.fixture
def egress(tmp_path):
    (tmp_path / "routes.yaml").write_text(ROUTES)
    addon = A.Egress(state_dir=str(tmp_path), environ={"API_KEY": SECRET})
    with taddons.context(addon) as tctx:
        tctx.configure(addon, confdir=str(tmp_path))
        yield addon, tctx


def make_flow(method: str, url: str, headers: dict | None = None):
    req = mhttp.Request.make(method, url, b"", headers or {})
    f = tflow.tflow(req=req)
    f.client_conn.sni = req.host if req.scheme == "https" else None
    return f


def decisions(tmp_path) -> list[dict]:
    path = tmp_path / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_blocked_request_gets_403_with_marker_and_is_logged(egress, tmp_path) -> None:
    addon, _ = egress
    f = make_flow("DELETE", "https://api.example.com/v1/x?secret=query", {"x-api-key": "placeholder"})
    addon.request(f)
    assert f.response.status_code == 403
    assert f.response.content == (
        b"egress: blocked DELETE api.example.com:443/v1/x: no route in routes.yaml of bottle dev allows it\n"
    )
    assert f.response.headers["content-type"] == "text/plain"
    [d] = decisions(tmp_path)
    assert d["decision"] == "block" and d["route"] is None and "method DELETE" in d["reason"]
    assert (d["method"], d["scheme"], d["host"], d["port"], d["path"]) == ("DELETE", "https", "api.example.com", 443, "/v1/x")
    assert d["ts"].endswith("+00:00")
    assert "placeholder" not in (tmp_path / "requests.jsonl").read_text()
    assert "secret=query" not in (tmp_path / "requests.jsonl").read_text()


def test_allowed_request_gets_the_real_credential_instead_of_the_placeholder(egress, tmp_path) -> None:
    addon, _ = egress
    f = make_flow("POST", "https://api.example.com/v1/messages", {"X-Api-Key": "placeholder"})
    addon.request(f)
    assert f.response is None
    assert f.request.headers.get_all("x-api-key") == [SECRET]
    [d] = decisions(tmp_path)
    assert d["decision"] == "allow" and d["route"] == 0
    assert SECRET not in (tmp_path / "requests.jsonl").read_text()
    # A route without auth leaves the agent's headers alone.
    g = make_flow("GET", "https://open.example.com/", {"Authorization": "Bearer mine"})
    addon.request(g)
    assert g.response is None and g.request.headers["authorization"] == "Bearer mine"


def test_missing_credential_answers_502_naming_the_variable(egress, tmp_path) -> None:
    addon, _ = egress
    f = make_flow("GET", "https://nokey.example.com/")
    addon.request(f)
    assert f.response.status_code == 502
    assert f.response.content.startswith(b"egress: credential NOT_SET_ANYWHERE")
    assert decisions(tmp_path)[-1]["decision"] == "error"


def test_host_header_that_differs_from_the_destination_is_blocked(egress, tmp_path) -> None:
    addon, _ = egress
    f = make_flow("GET", "https://open.example.com/")
    f.request.headers["Host"] = "elsewhere.com"  # after make(): setting the URL rewrites Host
    addon.request(f)
    assert f.response.status_code == 403 and b"elsewhere.com" in f.response.content
    f = make_flow("GET", "https://open.example.com/")
    f.client_conn.sni = "fronted.example.net"
    addon.request(f)
    assert f.response.status_code == 403 and b"SNI" in f.response.content


def test_buffered_response_is_scrubbed_in_headers_and_body(egress) -> None:
    addon, _ = egress
    f = make_flow("POST", "https://api.example.com/v1/echo", {"x-api-key": "placeholder"})
    addon.request(f)
    body = f'{{"you_sent": "{SECRET}"}}'.encode()
    f.response = mhttp.Response.make(200, body, {"Content-Type": "application/json", "X-Echo": SECRET})
    addon.responseheaders(f)
    assert not f.response.stream
    addon.response(f)
    assert SECRET.encode() not in f.response.content and b"[redacted by egress]" in f.response.content
    assert f.response.headers["x-echo"] == "[redacted by egress]"
    assert f.response.headers["content-length"] == str(len(f.response.raw_content))
    assert f.id not in addon._scrubbers


def test_streamed_response_is_scrubbed_chunk_by_chunk(egress) -> None:
    addon, _ = egress
    f = make_flow("POST", "https://api.example.com/v1/messages", {"x-api-key": "placeholder"})
    addon.request(f)
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
    addon.request(f)
    f.response = mhttp.Response.make(200, b"", {"Content-Type": "text/event-stream"})
    addon.responseheaders(f)
    assert f.response.stream is True
    g = make_flow("GET", "https://open.example.com/")
    addon.request(g)
    g.response = mhttp.Response.make(200, SECRET.encode(), {"Content-Type": "text/plain"})
    addon.responseheaders(g)
    addon.response(g)
    assert not g.response.stream and g.response.content == SECRET.encode()


def test_routes_reload_when_the_file_changes_and_a_bad_file_keeps_the_old_policy(egress, tmp_path) -> None:
    addon, _ = egress
    routes = tmp_path / "routes.yaml"
    routes.write_text("version: 1\nbottle: two\nroutes:\n  - host: new.example.com\n")
    f = make_flow("GET", "https://new.example.com/")
    addon.request(f)
    assert f.response is None and addon.policy.bottle == "two"
    routes.write_text("version: 1\nroutes: [{host: new.example.com, ports: [bad]}]\n# longer, so size differs\n")
    f = make_flow("GET", "https://new.example.com/")
    addon.request(f)
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
    addon.request(f)
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
    assert all(d["decision"] == "block" for d in decisions(tmp_path))


def test_server_connect_guard_refuses_addresses_no_route_names(egress) -> None:
    addon, _ = egress
    client = tflow.tclient_conn()
    bad = connection.Server(address=("db.internal", 5432))
    addon.server_connect(server_hooks.ServerConnectionHookData(server=bad, client=client))
    assert bad.error and "db.internal:5432" in bad.error
    good = connection.Server(address=("open.example.com", 443))
    addon.server_connect(server_hooks.ServerConnectionHookData(server=good, client=client))
    assert good.error is None


def test_ready_file_written_when_running_and_stale_one_removed_at_load(tmp_path) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    (tmp_path / "ready").write_text("stale")
    addon = A.Egress(state_dir=str(tmp_path), environ={})
    with taddons.context(addon) as tctx:
        assert not (tmp_path / "ready").exists()
        tctx.configure(addon, listen_port=18099)
        addon.running()
        info = json.loads((tmp_path / "ready").read_text())
        assert info["pid"] == os.getpid() and info["listen_port"] == 18099 and info["routes_loaded"]
        addon.done()
        assert not (tmp_path / "ready").exists()


def test_upstream_ca_is_added_to_the_default_trust(tmp_path) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    extra = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
    (tmp_path / "upstream-ca.pem").write_bytes(extra)
    addon = A.Egress(state_dir=str(tmp_path), environ={})
    with taddons.context(addon) as tctx:
        addon.running()
        path = tctx.options.ssl_verify_upstream_trusted_ca
        assert path and Path(path).parent == tmp_path
        data = Path(path).read_bytes()
        assert data.endswith(extra) and data.count(b"BEGIN CERTIFICATE") > 10  # certifi's roots too
        (tmp_path / "upstream-ca.pem").unlink()
        addon.on_sighup()
        assert tctx.options.ssl_verify_upstream_trusted_ca is None


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_mitmdump_enforces_routes_and_scrubs_streams(tmp_path) -> None:
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    up_port = upstream.server_address[1]
    (tmp_path / "routes.yaml").write_text(
        "version: 1\nbottle: e2e\nroutes:\n"
        f"  - {{host: 127.0.0.1, ports: [{up_port}], paths: ['/v1/*'], schemes: [http],"
        " auth: {scheme: header, header: x-api-key, token_env: E2E_KEY}}\n"
    )
    port = free_port()
    argv = [
        sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()",
        "--listen-host", "127.0.0.1", "--listen-port", str(port),
        "--set", f"confdir={tmp_path}", "--set", "connection_strategy=lazy", "--set", "rawtcp=false",
        "--set", "termlog_verbosity=warn", "--set", "flow_detail=0", "-s", str(EGRESS_DIR / "addon.py"),
    ]  # fmt: skip
    env = {**os.environ, "BOTTLE_EGRESS_STATE": str(tmp_path), "E2E_KEY": SECRET}
    log = open(tmp_path / "mitmdump.log", "wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "mitmdump.log").read_text()
            time.sleep(0.05)
        assert json.loads((tmp_path / "ready").read_text())["listen_port"] == port

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
        assert body == f"egress: blocked GET 127.0.0.1:{up_port}/other: no route in routes.yaml of bottle e2e allows it\n".encode()
        assert [d["decision"] for d in decisions(tmp_path)] == ["allow", "allow", "block"]

        # SIGHUP reloads (and does not kill mitmdump, whose default for SIGHUP would be to die).
        (tmp_path / "routes.yaml").write_text("version: 1\nbottle: e2e\nroutes: []\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert proc.poll() is None
        assert get("/v1/plain")[0] == 403
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        upstream.shutdown()
        upstream.server_close()
    assert not (tmp_path / "ready").exists()
