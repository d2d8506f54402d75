"""A real bottle on the real engine: nothing outside answers the agent except through egress."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time

import pytest

from .support import ALLOWED, AUTHED, BLOCKED, SECRET, Bottle, sh

pytestmark = pytest.mark.integration

CURL = ("curl", "-sS", "--max-time", "5")


@pytest.fixture(scope="module")
def host_server():
    """An HTTP server on the host's 0.0.0.0, which the agent must not reach by any address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "0.0.0.0", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
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
    probe = f"import urllib.request; print(urllib.request.urlopen('http://{egress_gw}:{host_server}/', timeout=5).status)"
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
    assert any(e["decision"] == "block" and e["host"] == BLOCKED and e["path"].startswith("/secret-path") for e in entries)


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
    body = json.loads(r.stdout[r.stdout.index("{"):])
    assert body["x_api_key_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest(), "upstream did not get the real credential"


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
