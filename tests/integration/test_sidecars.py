"""The sidecar bundle inside a real bottle: routes hot-reload on SIGHUP, and init restarting egress
(on request and after a crash) without touching the agent."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.bottles import ALLOWED, BLOCKED, LIMITED, Bottle, sh
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

CURL = ("curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}")
INIT = ("python3", "/opt/bottle/init/bottle_init.py")


def status_of(bottle: Bottle, url: str) -> str:
    return bottle.exec(*CURL, url).stdout.rsplit("\n", 1)[-1]


def write_in_place(path, text: str, mtime_ns: int) -> None:
    """Rewrite ``path`` through its own inode and put its mtime back."""
    with open(path, "r+", encoding="utf-8") as f:
        f.write(text)
        f.truncate()
    os.utime(path, ns=(mtime_ns, mtime_ns))


def egress_status(bottle: Bottle) -> dict:
    out = sh("docker", "exec", bottle.sidecars, *INIT, "status")
    return json.loads(out.stdout)["daemons"]["egress"]


def wait_until(predicate, what: str):
    return wait_for(predicate, timeout=30.0, what=what, interval=0.1)


def test_routes_reload_on_sighup_without_restarting_anything(bottle: Bottle) -> None:
    routes_file = bottle.state / "egress" / "routes.yaml"
    original = routes_file.read_text()
    before = egress_status(bottle)
    agent_started = sh("docker", "inspect", "-f", "{{.State.StartedAt}}", bottle.agent).stdout
    assert status_of(bottle, f"http://{BLOCKED}/") == "403"
    # The route limited to GET /v1/* moves to BLOCKED: a name of the same length, so the file
    # keeps its size.
    assert len(LIMITED) == len(BLOCKED) and LIMITED in original
    changed = original.replace(LIMITED, BLOCKED)
    st = routes_file.stat()
    try:
        # Written in place (same inode, size and mtime): egress's own change check sees nothing
        # new, so only the SIGHUP handler can make the route take effect.
        write_in_place(routes_file, changed, st.st_mtime_ns)
        assert (routes_file.stat().st_ino, routes_file.stat().st_size) == (st.st_ino, st.st_size)
        assert status_of(bottle, f"http://{BLOCKED}/v1/x") == "403"  # no reload without the signal
        sh("docker", "kill", "--signal", "HUP", bottle.sidecars)
        wait_until(lambda: status_of(bottle, f"http://{BLOCKED}/v1/x") == "200", "the new route to take effect")
        assert status_of(bottle, f"http://{BLOCKED}/closed") == "403"  # only the paths the route names
        assert bottle.exec(*CURL, "-X", "POST", f"http://{BLOCKED}/v1/x").stdout.endswith("403")
        after = egress_status(bottle)
        assert after["pid"] == before["pid"] and after["restarts"] == before["restarts"]
        assert sh("docker", "inspect", "-f", "{{.State.StartedAt}}", bottle.agent).stdout == agent_started
    finally:
        write_in_place(routes_file, original, st.st_mtime_ns)
        sh("docker", "kill", "--signal", "HUP", bottle.sidecars)
    wait_until(lambda: status_of(bottle, f"http://{BLOCKED}/v1/x") == "403", "the old routes to come back")


def test_init_restarts_egress_on_request_and_after_a_crash(bottle: Bottle) -> None:
    first = egress_status(bottle)
    out = sh("docker", "exec", bottle.sidecars, *INIT, "restart", "egress")
    assert "restarted egress" in out.stdout
    second = egress_status(bottle)
    assert second["pid"] != first["pid"] and second["restarts"] == first["restarts"] + 1
    wait_until(lambda: status_of(bottle, f"http://{ALLOWED}/") == "200", "egress to serve after the restart")
    # A crash: the bundle stays up and init brings egress back.
    sh("docker", "exec", bottle.sidecars, "python3", "-c", f"import os; os.kill({second['pid']}, 9)")
    third = wait_until(
        lambda: (s := egress_status(bottle))["pid"] not in (None, second["pid"]) and s["state"] == "running" and s,
        "egress to be restarted after SIGKILL",
    )
    assert third["last_exit"] is not None
    wait_until(lambda: status_of(bottle, f"http://{ALLOWED}/") == "200", "egress to serve after the crash")
    assert sh("docker", "inspect", "-f", "{{.State.Running}}", bottle.sidecars).stdout.strip() == "true"
