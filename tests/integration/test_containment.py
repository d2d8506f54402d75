"""A real bottle on the real engine: nothing outside answers the agent except through egress."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.support.bottles import ALLOWED, AUTHED, BLOCKED, LIMITED, SECRET, Bottle, sh

pytestmark = pytest.mark.integration

CURL = ("curl", "-sS", "--max-time", "5")
# 3 MB through egress and back: how long that takes is the machine's load (other workers' bottles
# starting), not egress; a request that never completes still fails.
UPLOAD_CURL = ("curl", "-sS", "--max-time", "45")


@pytest.fixture(scope="module")
def host_server():
    """An HTTP server on the host's 0.0.0.0, which the agent must not reach by any address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "0.0.0.0", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/tmp",
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


def gateway(network: str) -> str:
    out = sh("docker", "network", "inspect", "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", network)
    return out.stdout.strip()


def test_agent_cannot_reach_the_host_by_any_gateway(bottle: Bottle, host_server: int) -> None:
    addresses = {gateway(bottle.network("internal")), gateway(bottle.network("egress")), gateway("bridge")}
    addresses.discard("")
    assert addresses, "the engine reported no gateway addresses to try"
    # Control: the sidecars (on the egress network) do reach it, so a refusal below means something.
    egress_gw = gateway(bottle.network("egress"))
    probe = (
        f"import urllib.request; print(urllib.request.urlopen('http://{egress_gw}:{host_server}/', timeout=5).status)"
    )
    ctl = sh("docker", "exec", bottle.sidecars, "python3", "-c", probe, check=False)
    assert ctl.stdout.strip() == "200", f"control failed: the sidecars could not reach the host server: {ctl.stderr}"
    for addr in sorted(addresses):
        r = bottle.exec(*CURL, "--noproxy", "*", f"http://{addr}:{host_server}/")
        assert r.returncode != 0, f"agent reached the host at {addr}:{host_server}: {r.stdout[:200]}"


def test_agent_cannot_reach_fake_internet_directly(bottle: Bottle) -> None:
    r = bottle.exec(*CURL, "--noproxy", "*", f"http://{bottle.fake_ip}/")  # type: ignore[attr-defined]
    assert r.returncode != 0
    assert "fake_internet" not in r.stdout


def test_no_outside_name_resolves_in_the_agent(bottle: Bottle) -> None:
    names = (ALLOWED, BLOCKED, "example.com")
    # Lookups run at once, each cut at 3 s: the embedded DNS of an internal network answers nothing.
    script = " ".join(f"(timeout 3 getent hosts {n} && echo RESOLVED {n}) &" for n in names) + " wait"
    r = bottle.exec("sh", "-c", script, timeout=30)
    assert "RESOLVED" not in r.stdout, f"a name resolved inside the agent: {r.stdout}"
    # Control: the sidecars resolve the fake internet's names, and the agent resolves egress.
    assert sh("docker", "exec", bottle.sidecars, "getent", "hosts", ALLOWED, check=False).returncode == 0
    assert bottle.exec("getent", "hosts", "egress").returncode == 0


def test_allowed_host_passes_through_egress(bottle: Bottle) -> None:
    r = bottle.exec(*CURL, f"http://{ALLOWED}/hello?x=1")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["fake_internet"] is True and doc["host"] == ALLOWED and doc["path"] == "/hello?x=1"


def test_allowed_host_over_tls_is_intercepted_with_the_bottle_ca(bottle: Bottle) -> None:
    r = bottle.exec(*CURL, "-v", f"https://{ALLOWED}/tls")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["path"] == "/tls"
    # The agent trusts only its bottle's egress CA, which signed the certificate it was shown.
    assert f"bottle-tui egress CA {bottle.slug}" in r.stderr


def test_host_not_on_the_list_gets_403_marker_and_is_logged(bottle: Bottle) -> None:
    r = bottle.exec(*CURL, "-w", "\n%{http_code}", f"http://{BLOCKED}/secret-path")
    body, _, code = r.stdout.rpartition("\n")
    assert code == "403"
    assert body.startswith("egress: blocked")
    assert "fake_internet" not in body
    log = bottle.home / "state" / bottle.slug / "egress" / "requests.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(
        e["decision"] == "block" and e["host"] == BLOCKED and e["path"].startswith("/secret-path") for e in entries
    )


def test_allowed_host_on_another_port_is_blocked(bottle: Bottle) -> None:
    r = bottle.exec(*CURL, "-w", "\n%{http_code}", f"http://{ALLOWED}:8081/")
    assert "fake_internet" not in r.stdout
    assert r.stdout.endswith("403") and "egress: blocked" in r.stdout


def test_credential_is_injected_and_never_reaches_the_agent(bottle: Bottle) -> None:
    env = bottle.exec("printenv", "BOTTLE_TEST_TOKEN").stdout.strip()
    assert env and env != SECRET, "the agent holds the real credential"
    r = bottle.exec(*CURL, "-i", "-H", f"X-Api-Key: {env}", f"https://{AUTHED}/v1/thing")
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout, "egress handed the real credential back to the agent"
    body = json.loads(r.stdout[r.stdout.index("{") :])
    assert body["x_api_key_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest(), (
        "upstream did not get the real credential"
    )


def test_claude_runs_as_non_root_user(bottle: Bottle) -> None:
    uid = bottle.exec("id", "-u")
    assert uid.returncode == 0 and uid.stdout.strip() != "0"
    version = bottle.exec("claude", "--version", timeout=60)
    assert version.returncode == 0, version.stderr
    assert "Claude Code" in version.stdout


def test_state_folder_layout_and_modes(bottle: Bottle) -> None:
    state = bottle.home / "state" / bottle.slug
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "egress" / "mitmproxy-ca.pem").stat().st_mode & 0o777 == 0o600
    meta = json.loads((state / "metadata.json").read_text())
    assert meta["slug"] == bottle.slug and meta["agent"] == "tester" and meta["bottle"] == "sandbox"
    assert "ready" in {p.name for p in (state / "egress").iterdir()}
    # The agent sees the CA certificate but not its key.
    assert bottle.exec("test", "-r", "/etc/bottle/ca/egress-ca.pem").returncode == 0
    assert bottle.exec("sh", "-c", "ls /etc/bottle/ca").stdout.split() == ["egress-ca.pem"]


# --- ways past the checks (issue 10 points 1-3, issue 5 part 4), each through the real bottle ------


def decisions(bottle: Bottle) -> list[dict]:
    log = bottle.state / "egress" / "requests.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def status_and_body(r: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    body, _, code = r.stdout.rpartition("\n")
    return code, body


def curl(bottle: Bottle, *args: str, timeout: float = 60) -> tuple[str, str]:
    return status_and_body(bottle.exec(*CURL, "-w", "\n%{http_code}", *args, timeout=timeout))


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_fronting_inside_a_tunnel_is_blocked_and_logged_as_the_host_it_named(bottle: Bottle, http: str) -> None:
    token = bottle.exec("printenv", "BOTTLE_TEST_TOKEN").stdout.strip()
    # Inside the CONNECT tunnel to the authed host, the request line names another host (over
    # HTTP/2 curl puts the absolute URL in :path).
    code, body = curl(
        bottle,
        http,
        "-H",
        f"X-Api-Key: {token}",
        "--request-target",
        f"http://{BLOCKED}/v1/x",
        f"https://{AUTHED}/v1/x",
    )
    assert code == "403" and "fake_internet" not in body, body
    last = decisions(bottle)[-1]
    assert last["decision"] == "block" and last["host"] == BLOCKED and "fronting" in last["reason"], last
    # The same host with another port in the request line: blocked too. Control: its own name passes.
    code, body = curl(bottle, http, "--request-target", f"https://{AUTHED}:8443/v1/x", f"https://{AUTHED}/v1/x")
    assert code == "403" and "port 8443" in body
    code, body = curl(bottle, http, "-H", f"X-Api-Key: {token}", f"https://{AUTHED}/v1/x")
    assert code == "200" and json.loads(body)["fake_internet"] is True


def test_host_header_with_another_port_is_blocked(bottle: Bottle) -> None:
    code, body = curl(bottle, "-H", f"Host: {ALLOWED}:8443", f"http://{ALLOWED}/")
    assert code == "403" and "port 8443" in body
    code, body = curl(bottle, "-H", f"Host: {ALLOWED}:8443", f"https://{ALLOWED}/")
    assert code == "403" and "port 8443" in body


@pytest.mark.parametrize(
    "path",
    [
        "/v1/..;/admin",
        "/v1/x;jsessionid=1",
        "/v1/%252e%252e/admin",
        "/v1/%2e%2e/admin",
        "/v1/..%5cadmin",
        "/v1/%5c..%5cadmin",
        "/v1%2fadmin",
        "/v1/%252f..",
        "/v1/../admin",
    ],
)
def test_path_tricks_are_blocked(bottle: Bottle, path: str) -> None:
    code, body = curl(bottle, "--path-as-is", f"https://{LIMITED}{path}")
    assert code == "403" and body.startswith("egress: blocked") and "fake_internet" not in body, (path, body)


def test_method_override_headers_are_blocked_on_a_route_limited_by_method(bottle: Bottle) -> None:
    assert curl(bottle, f"https://{LIMITED}/v1/ok")[0] == "200"  # control
    for header in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
        code, body = curl(bottle, "-H", f"{header}: DELETE", f"https://{LIMITED}/v1/ok")
        assert code == "403" and "method override" in body, header
    assert curl(bottle, f"https://{LIMITED}/v1/ok?_method=DELETE")[0] == "403"
    assert curl(bottle, "-X", "DELETE", f"https://{LIMITED}/v1/ok")[0] == "403"


def egress_rss_mib(bottle: Bottle) -> int:
    """What egress's workers hold, together (a request lands on any one of them)."""
    status = sh("docker", "exec", bottle.sidecars, "python3", "/opt/bottle/init/bottle_init.py", "status")
    daemons = json.loads(status.stdout)["daemons"].values()
    pids = [d["pid"] for d in daemons if d.get("group") == "egress" and d.get("pid")]
    total = 0
    for pid in pids:
        proc = sh("docker", "exec", bottle.sidecars, "cat", f"/proc/{pid}/status").stdout
        total += int(next(line for line in proc.splitlines() if line.startswith("VmRSS:")).split()[1])
    return total // 1024


def test_a_100_mib_post_to_a_blocked_host_is_refused_without_growing_egress(bottle: Bottle) -> None:
    assert bottle.exec("sh", "-c", "head -c 104857600 /dev/zero > /tmp/big").returncode == 0
    before = egress_rss_mib(bottle)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], egress_rss_mib(bottle))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for url in (f"http://{BLOCKED}/upload", f"https://{BLOCKED}/upload"):
            code, body = curl(bottle, "--data-binary", "@/tmp/big", url, timeout=120)
            assert code in ("403", "502") and "egress: blocked POST" in body, (url, code, body[:300])
        # Unknown length (chunked) too.
        code, body = curl(
            bottle, "-T", "/tmp/big", "-H", "Transfer-Encoding: chunked", "-X", "POST", f"http://{BLOCKED}/upload"
        )
        assert "egress: blocked POST" in body, (code, body[:300])
    finally:
        done.set()
        sampler.join()
        bottle.exec("rm", "-f", "/tmp/big")
    print(f"egress RSS during 100 MiB POSTs to a blocked host: {before} MiB before, peak {peak[0]} MiB")
    assert peak[0] - before < 30, f"egress grew from {before} to {peak[0]} MiB: the blocked body was read"


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_every_byte_of_an_upload_arrives_streamed_or_buffered(bottle: Bottle, http: str) -> None:
    setup = "printf data > /tmp/small && head -c 3000000 /dev/urandom > /tmp/large"
    assert bottle.exec("sh", "-c", setup).returncode == 0
    sums = bottle.exec("sha256sum", "/tmp/small", "/tmp/large").stdout.split()
    want = {"/tmp/small": (4, sums[0]), "/tmp/large": (3000000, sums[2])}
    for name, (length, digest) in want.items():
        for how in (["--data-binary", f"@{name}"], ["-T", "-"]):  # known length; unknown length from a pipe
            cmd = " ".join([*UPLOAD_CURL, http, "-v", *how, f"https://{ALLOWED}/x"])
            r = bottle.exec("sh", "-c", f"cat {name} | {cmd}", timeout=60)
            assert r.returncode == 0, r.stderr[-500:]
            if http == "--http2":
                assert "using HTTP/2" in r.stderr or "HTTP/2 200" in r.stderr, r.stderr[-800:]
            doc = json.loads(r.stdout)
            assert (doc["body_len"], doc["body_sha256"]) == (length, digest), (http, name, how, doc)
    # Plain HTTP through the proxy, chunked from a pipe.
    r = bottle.exec(
        "sh", "-c", " ".join(["cat /tmp/large |", *UPLOAD_CURL, "-T", "-", f"http://{ALLOWED}/x"]), timeout=60
    )
    assert json.loads(r.stdout)["body_sha256"] == want["/tmp/large"][1]


def test_headers_meant_for_the_proxy_stop_at_egress(bottle: Bottle) -> None:
    proxy_headers = [
        "-H",
        "Proxy-Authorization: Basic dXNlcjpwYXNz",
        "-H",
        "Proxy-Connection: keep-alive",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "Connection: X-Hop",
        "-H",
        "X-Hop: 1",
        "-H",
        "X-Kept: 1",
    ]
    for http, url in (
        ("--http1.1", f"http://{ALLOWED}/hop"),
        ("--http1.1", f"https://{ALLOWED}/hop"),
        ("--http2", f"https://{ALLOWED}/hop"),
    ):
        r = bottle.exec(*CURL, http, *proxy_headers, "--proxy-header", "Proxy-Authorization: Basic dXNlcjpwYXNz", url)
        got = set(json.loads(r.stdout)["headers"])
        assert "x-kept" in got, got
        assert not got & {"proxy-authorization", "proxy-connection", "keep-alive"}, (url, got)
        if http == "--http1.1":  # HTTP/2 has no Connection header: there X-Hop is an ordinary header
            assert "x-hop" not in got, (url, got)


def test_a_tunnel_that_carries_no_http_is_closed_at_once_and_logged(bottle: Bottle) -> None:
    script = (
        "import socket, sys, time\n"
        "for target, data in (('%s:443', b'SSH-2.0-OpenSSH_9.2\\r\\n'), ('%s:443', b'\\x00\\x01binary')):\n"
        "    c = socket.create_connection(('egress', 8080), timeout=10)\n"
        "    c.sendall(b'CONNECT ' + target.encode() + b' HTTP/1.1\\r\\nHost: ' + target.encode() + b'\\r\\n\\r\\n')\n"
        "    assert c.recv(4096).startswith(b'HTTP/1.1 200')\n"
        "    t0 = time.monotonic(); c.sendall(data)\n"
        "    got = c.recv(4096)\n"
        "    print(repr(got), round(time.monotonic() - t0, 2))\n"
    ) % (ALLOWED, ALLOWED)
    r = bottle.exec("python3", "-c", script, timeout=60)
    assert r.returncode == 0, r.stderr[-800:]
    for line in r.stdout.splitlines():
        got, seconds = line.rsplit(" ", 1)
        assert got == "b''" and float(seconds) < 5, line  # closed, not left hanging
    tunnels = [d for d in decisions(bottle) if d["scheme"] == "tunnel"]
    assert len(tunnels) >= 2 and all(d["decision"] == "block" and d["host"] == ALLOWED for d in tunnels)


def test_stacked_and_unknown_encodings_never_bring_the_credential_back(bottle: Bottle) -> None:
    token = bottle.exec("printenv", "BOTTLE_TEST_TOKEN").stdout.strip()
    r = bottle.exec(*CURL, "-i", "-H", f"X-Api-Key: {token}", f"https://{AUTHED}/enc/gzip,gzip")
    assert r.returncode == 0 and SECRET not in r.stdout
    assert "[redacted by egress]" in r.stdout and '"fake_internet": true' in r.stdout
    code, body = curl(bottle, "-H", f"X-Api-Key: {token}", f"https://{AUTHED}/enc/compress")
    assert code == "502" and "cannot be scrubbed" in body and SECRET not in body
