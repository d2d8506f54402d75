"""Least privilege inside a real bundle: each daemon holds only its own secrets, init's
environment is unreadable to them, and from the agent only the daemons' service ports answer."""

from __future__ import annotations

import json

import pytest

from bottle_contract import ports
from tests.support.bottles import SECRET, Bottle, sh

pytestmark = pytest.mark.integration

# Ports the agent may reach on the bundle, by daemon. Anything else answering is a finding.
SERVICE_PORTS = {"egress": ports.EGRESS, "supervise": ports.SUPERVISE, "status": ports.STATUS}


def daemon_pids(bottle: Bottle) -> dict[str, int]:
    """Each daemon's pid as the host sees it (init reports pids in the container's namespace)."""
    status = sh("docker", "exec", bottle.sidecars, "python3", "/opt/bottle/init/bottle_init.py", "status").stdout
    inner = {name: d["pid"] for name, d in json.loads(status)["daemons"].items() if d.get("pid")}
    host_pids = sh("docker", "top", bottle.sidecars, "-o", "pid").stdout.split()[1:]
    found = {}
    for host_pid in host_pids:
        with open(f"/proc/{host_pid}/status") as fh:
            nspid = next(line.split()[-1] for line in fh if line.startswith("NSpid:"))
        for name, pid in inner.items():
            if int(nspid) == pid:
                found[name] = int(host_pid)
    assert set(found) == set(inner), f"could not map daemon pids {inner} to host pids"
    return found


def environ(pid: int) -> dict[str, str]:
    """A process's environment, read from the host (the test runs as root, as CI does)."""
    try:
        raw = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
    except PermissionError:
        pytest.fail("reading a bundle daemon's /proc/PID/environ needs root on the host (CI runs as root)")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def test_egress_holds_only_the_route_secrets(bottle: Bottle) -> None:
    pids = daemon_pids(bottle)
    env = environ(pids["egress.1"])
    assert env["BOTTLE_TEST_TOKEN"] == SECRET
    allowed = {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TZ",
        "BOTTLE_NAME",
        "BOTTLE_SLUG",
        "BOTTLE_EGRESS_SECRETS",
        "BOTTLE_EGRESS_WORKERS",
        "BOTTLE_EGRESS_WORKER",
        "BOTTLE_TEST_TOKEN",
        "PYTHONPATH",
    }
    assert set(env) <= allowed, f"egress got more than it needs: {sorted(set(env) - allowed)}"
    assert env["PYTHONPATH"] == "/opt/bottle/common:/opt/bottle/egress"  # its daemons.json pythonpath, nothing else
    for name, pid in pids.items():
        if not name.startswith("egress."):
            assert SECRET not in "".join(environ(pid).values()), f"{name} holds egress's secret"


def test_a_daemon_cannot_read_inits_environment(bottle: Bottle) -> None:
    # As the daemons' own uid, without extra privileges: init is not dumpable.
    r = sh("docker", "exec", bottle.sidecars, "cat", "/proc/1/environ", check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert SECRET not in r.stdout


def test_from_the_agent_only_service_ports_answer(bottle: Bottle) -> None:
    scan = """
import socket, sys
from concurrent.futures import ThreadPoolExecutor
addr = socket.gethostbyname("egress")
def probe(port):
    s = socket.socket()
    s.settimeout(1.0)
    try:
        s.connect((addr, port))
        return port
    except OSError:
        return None
    finally:
        s.close()
with ThreadPoolExecutor(64) as pool:
    print(" ".join(str(p) for p in pool.map(probe, range(1, 65536)) if p))
"""
    r = bottle.exec("python3", "-c", scan, timeout=300)
    assert r.returncode == 0, r.stderr
    open_ports = {int(p) for p in r.stdout.split()}
    assert open_ports == set(SERVICE_PORTS.values()), f"answering on the bundle: {sorted(open_ports)}"
