"""The sidecar bundle inside a real bottle: routes hot-reload on SIGHUP, and init restarting egress
(on request and after a crash) without touching the agent. The bottle runs egress as workers
(``egress.workers`` is auto, and this machine has two CPUs): requests land on each, a reload
reaches each, and one killed comes back without the other noticing."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from bottle_contract import workers
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


def workers_status(bottle: Bottle) -> dict[str, dict]:
    """init's status of each egress worker, by name (egress.1, egress.2, ...)."""
    out = sh("docker", "exec", bottle.sidecars, *INIT, "status")
    return {n: d for n, d in json.loads(out.stdout)["daemons"].items() if d.get("group") == "egress"}


def egress_status(bottle: Bottle) -> dict:
    return workers_status(bottle)["egress.1"]


def workers_deciding(bottle: Bottle, url: str, count: int = 40) -> tuple[set[int], set[str]]:
    """Send ``count`` requests to ``url`` from the agent, each its own connection: the workers
    whose decisions the log shows for them, and the status codes they got."""
    log = bottle.state / "egress" / "requests.jsonl"
    start = len(log.read_text().splitlines())
    curl = " ".join(shlex.quote(a) for a in CURL)
    script = f"for i in $(seq {count}); do {curl} -o /dev/null '{url}?n='$i; echo; done"
    run = bottle.exec("sh", "-c", script, timeout=120)
    codes = {c for c in run.stdout.split() if c}
    entries = [json.loads(line) for line in log.read_text().splitlines()[start:]]
    assert entries, (run.stdout[-500:], run.stderr[-500:])
    return {e.get("worker", 1) for e in entries}, codes


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
        # every worker took it: each request, whichever worker it lands on, gets the new route
        landed, codes = workers_deciding(bottle, f"http://{BLOCKED}/v1/x")
        assert landed == {1, 2} and codes == {"200"}
        assert sh("docker", "inspect", "-f", "{{.State.StartedAt}}", bottle.agent).stdout == agent_started
    finally:
        write_in_place(routes_file, original, st.st_mtime_ns)
        sh("docker", "kill", "--signal", "HUP", bottle.sidecars)
    wait_until(lambda: status_of(bottle, f"http://{BLOCKED}/v1/x") == "403", "the old routes to come back")


def test_init_restarts_egress_on_request_and_after_a_crash(bottle: Bottle) -> None:
    first = egress_status(bottle)
    out = sh("docker", "exec", bottle.sidecars, *INIT, "restart", "egress")
    assert "restarted egress.1" in out.stdout and "restarted egress.2" in out.stdout  # every worker
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


def test_requests_land_on_every_worker_and_the_log_says_which(bottle: Bottle) -> None:
    assert set(workers_status(bottle)) == {"egress.1", "egress.2"}
    landed, codes = workers_deciding(bottle, f"http://{ALLOWED}/")
    assert landed == {1, 2} and codes == {"200"}
    ready = json.loads((bottle.state / "egress" / "ready").read_text())
    assert ready["workers"] == 2 and set(ready["worker"]) == {"1", "2"} and ready["routes_loaded"]


def test_a_sighup_reaches_every_worker(bottle: Bottle) -> None:
    ready = bottle.state / "egress" / "ready"
    before = json.loads(ready.read_text())
    sh("docker", "kill", "--signal", "HUP", bottle.sidecars)
    after = wait_until(
        lambda: (doc := json.loads(ready.read_text())) and workers.reloaded(before, doc) and doc,
        "both workers to reload",
    )
    for n in ("1", "2"):
        assert after["worker"][n]["pid"] == before["worker"][n]["pid"]
        assert after["worker"][n]["loads"] == before["worker"][n]["loads"] + 1


def test_a_killed_worker_comes_back_and_the_other_serves_meanwhile(bottle: Bottle) -> None:
    first = workers_status(bottle)
    victim, steady = first["egress.2"], first["egress.1"]
    sh("docker", "exec", bottle.sidecars, "python3", "-c", f"import os; os.kill({victim['pid']}, 9)")
    # new connections go to the worker still listening, at once
    assert status_of(bottle, f"http://{ALLOWED}/") == "200"
    back = wait_until(
        lambda: (
            (s := workers_status(bottle)["egress.2"])["pid"] not in (None, victim["pid"])
            and s["state"] == "running"
            and s
        ),
        "egress.2 to be restarted",
    )
    now = workers_status(bottle)["egress.1"]
    assert now["pid"] == steady["pid"] and now["restarts"] == steady["restarts"]
    assert back["restarts"] == victim["restarts"] + 1
    wait_until(lambda: workers_deciding(bottle, f"http://{ALLOWED}/", 20)[0] == {1, 2}, "both workers to serve again")
