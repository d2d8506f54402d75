"""The bundle's daemons against a hostile agent, on one real bottle with a git gate (an HTTPS
upstream with basic auth), supervise and the status daemon: floods of idle and half-sent
connections on every port the agent reaches, a route allowed once under a burst and under a full
queue, a lying clock, public-suffix wildcards, and what drafts propose. Everything the agent does
here it does from inside its container, as a prompt-injected agent would."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from bottle_contract import layout, ports, serving
from bottle_tui import ops, proposals

# The git gate's fake upstream (the HTTPS git host of the fake internet) is conftest's `upstream`.
from tests.integration.test_git_gate import agent_sh
from tests.support.bottles import (
    ALLOWED,
    BLOCKED,
    GIT_HOST,
    GIT_SECRET,
    UPSTREAM_URL,
    Bottle,
    connect_fake_internet,
    sh,
    start_bottle,
    stop_bottle,
    write_home,
)
from tests.support.flood import Flood
from tests.support.supervise import call_tool, install_mcp_client, start_call
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

MANIFESTS = {
    "agents/abuser.md": "---\nbottle: abusebox\n---\nYou are a test agent that misbehaves.\n",
    "bottles/abusebox.md": f"""---
description: the abuse tests' bottle, with every daemon of the bundle
egress:
  routes:
    - host: {ALLOWED}
git:
  upstream: {UPSTREAM_URL}
  branch: main
  credentials_env: BOTTLE_TEST_GIT_TOKEN
resources: {{cpus: 1, memory: 1g, pids: 256}}
---
""",
}
SIDECARS_PIDS = 256  # the bundle's pids limit (bottle_tui.backends.docker.compose)
FLOOD_PORTS = {"egress": ports.EGRESS, "supervise": ports.SUPERVISE, "status": ports.STATUS, "git-gate": ports.GIT_GATE}


@pytest.fixture(scope="module")
def abot(tmp_path_factory: pytest.TempPathFactory, built_images: dict[str, str], upstream: str):
    home = write_home(tmp_path_factory.mktemp("abuse-home"))
    for rel, text in MANIFESTS.items():
        (home / rel).write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BOTTLE_TEST_GIT_TOKEN", GIT_SECRET)
        b = start_bottle(home, "abuser")
    try:
        b.fake_ip = connect_fake_internet(b, upstream, (GIT_HOST,))
        install_mcp_client(b)
        yield b
    finally:
        stop_bottle(b, upstream)


def status_code(bottle: Bottle, *curl: str, timeout: float = 60) -> str:
    return bottle.exec(
        "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", *curl, timeout=timeout
    ).stdout.strip()


def sidecar_pids(bottle: Bottle) -> int:
    return int(sh("docker", "exec", bottle.sidecars, "cat", "/sys/fs/cgroup/pids/pids.current").stdout)


def timed(fn):
    started = time.monotonic()
    out = fn()
    return out, round(time.monotonic() - started, 3)


def test_floods_of_idle_and_half_sent_connections_leave_every_daemon_answering(abot: Bottle) -> None:
    assert "refs/heads/main" in agent_sh(abot, "git ls-remote origin", check=True).stdout
    (_, b_gate), (_, b_mcp), (_, b_egress) = (
        timed(lambda: agent_sh(abot, "git ls-remote origin")),
        timed(lambda: call_tool(abot, "list-egress-routes", {})),
        timed(lambda: status_code(abot, f"http://{ALLOWED}/calm")),
    )
    before = sidecar_pids(abot)
    flood = Flood(abot, FLOOD_PORTS, idle=1000, half=400)
    try:
        held = flood.held
        pids = [sidecar_pids(abot)]
        (egress, t_egress) = timed(lambda: status_code(abot, f"http://{ALLOWED}/flood"))
        (gate, t_gate) = timed(lambda: agent_sh(abot, "git ls-remote origin", timeout=120))
        (mcp, t_mcp) = timed(lambda: call_tool(abot, "list-egress-routes", {}, timeout=120))
        (hook, t_hook) = timed(
            lambda: status_code(
                abot,
                "--noproxy",
                "*",
                "-H",
                "content-type: application/json",
                "--data-binary",
                '{"hook_event_name": "Stop"}',
                "http://status:8766/hook",
            )
        )
        pids.append(sidecar_pids(abot))
        # a second round a while later: the attacker has reopened whatever the servers closed
        time.sleep(12)
        (gate2, t_gate2) = timed(lambda: agent_sh(abot, "git ls-remote origin", timeout=120))
        (mcp2, t_mcp2) = timed(lambda: call_tool(abot, "list-egress-routes", {}, timeout=120))
        (egress2, t_egress2) = timed(lambda: status_code(abot, f"http://{ALLOWED}/flood"))
        pids.append(sidecar_pids(abot))
    finally:
        report = flood.stop()
    print(
        f"\nflood: held at start {held}\nflood: {json.dumps(report)}\n"
        f"flood: pids in the bundle before {before}, during {pids} (limit {SIDECARS_PIDS})\n"
        f"flood: answers while held: egress {egress} in {t_egress} s, gate rc {gate.returncode} in {t_gate} s, "
        f"supervise {'ok' if not mcp['is_error'] else mcp} in {t_mcp} s, status {hook} in {t_hook} s; "
        f"12 s later: gate rc {gate2.returncode} in {t_gate2} s, supervise in {t_mcp2} s, egress {egress2} in {t_egress2} s\n"
        f"flood: the same without a flood: gate {b_gate} s, supervise {b_mcp} s, egress {b_egress} s"
    )
    assert all(n == 1400 for n in held.values()), held
    assert egress == "200" and egress2 == "200"
    assert gate.returncode == 0 and "refs/heads/main" in gate.stdout, gate.stdout
    assert gate2.returncode == 0 and "refs/heads/main" in gate2.stdout, gate2.stdout
    assert not mcp["is_error"] and not mcp2["is_error"] and ALLOWED in mcp["text"]
    assert hook == "204"
    assert max(pids) < SIDECARS_PIDS - 64, pids  # far from the limit: the floods cost no threads
    # the servers with a cap kept to it: what they closed, the agent reopened
    for name in ("supervise", "status", "git-gate"):
        assert report["stats"][f"{name}:{FLOOD_PORTS[name]}"]["closed_by_server"] > 0, report


def test_a_lying_clock_does_not_freeze_the_agents_status(abot: Bottle) -> None:
    status = abot.state / "status" / layout.STATUS_FILE
    lie = '{"hook_event_name": "PreToolUse", "t": 99999999999999999999}'
    assert (
        status_code(
            abot,
            "--noproxy",
            "*",
            "-H",
            "content-type: application/json",
            "--data-binary",
            lie,
            "http://status:8766/hook",
        )
        == "204"
    )
    wait_for(lambda: json.loads(status.read_text())["state"] == "working", timeout=10, what="the lie to be applied")
    # claude's own hook, as it runs on the next event
    abot.exec("sh", "-c", 'echo \'{"hook_event_name": "Stop"}\' | /opt/bottle/claude/report-status', check=True)
    wait_for(
        lambda: json.loads(status.read_text())["state"] == "idle", timeout=10, what="a genuine event after the lie"
    )


def pending_draft(bottle: Bottle, host: str, path: str) -> proposals.Proposal:
    return wait_for(
        lambda: next(
            (
                p
                for p in proposals.list_all(bottle.home)
                if p.pending
                and p.data.get("draft")
                and p.change.get("host") == host
                and path in p.change.get("paths", [])
            ),
            None,
        ),
        timeout=15,
        what=f"a draft for {host}{path}",
        interval=0.05,
    )


def test_drafts_propose_the_scheme_and_path_that_were_seen(abot: Bottle) -> None:
    assert status_code(abot, f"https://{BLOCKED}/tls/only") == "403"
    assert pending_draft(abot, BLOCKED, "/tls/only").change["schemes"] == ["https"]
    assert status_code(abot, f"http://{BLOCKED}/%76%31/seen") == "403"
    assert pending_draft(abot, BLOCKED, "/v1/seen").change["schemes"] == ["http"]


def approve_once(bottle: Bottle, pid: str) -> None:
    import asyncio

    out = asyncio.run(ops.decide(bottle.home, pid, "approve", by="abuse test", scope="once"))
    assert out.policy_changed and out.reload_warning is None, out.reload_warning


BURST = (
    "for i in 1 2 3 4 5 6 7 8 9 10; do curl -s -o /dev/null -w '%{http_code}\\n' --max-time 20 "
    '"http://$1/%76%31/x" & done; wait'
)


def once_routes(bottle: Bottle) -> list[str]:
    return [
        r["once"] for r in yaml.safe_load((bottle.state / "egress" / layout.ROUTES).read_text())["routes"] if r["once"]
    ]


def test_a_route_allowed_once_lets_exactly_one_request_of_a_burst_through(abot: Bottle) -> None:
    host = BLOCKED
    call = start_call(
        abot,
        "request-egress-route",
        {"host": host, "ports": [80], "methods": ["GET"], "paths": ["/v1/*"], "reason": "one download"},
    )
    p = wait_for(
        lambda: next(
            (
                q
                for q in proposals.list_all(abot.home)
                if q.pending and not q.data.get("draft") and q.change.get("paths") == ["/v1/*"]
            ),
            None,
        ),
        timeout=15,
        what="the request",
    )
    approve_once(abot, p.id)
    call.communicate(timeout=30)
    codes = agent_sh(abot, BURST, host).stdout.split()
    assert sorted(codes) == ["200"] + ["403"] * 9, codes
    wait_for(lambda: p.id not in once_routes(abot), timeout=15, what="the route to be withdrawn")
    assert proposals.find(abot.home, p.id)[1].data["once_used"]["request"].startswith(f"GET {host}:80/")


def test_a_full_queue_does_not_keep_a_route_allowed_once(abot: Bottle) -> None:
    host = BLOCKED
    # the agent fills its queue with drafts of blocked requests, up to the cap
    pending = sum(1 for p in proposals.list_all(abot.home) if p.pending and p.slug == abot.slug)
    agent_sh(
        abot,
        f"i=0; while [ $i -lt {layout.MAX_PENDING - pending} ]; do "
        f"curl -s -o /dev/null --max-time 5 http://{host}/noise/$i; i=$((i+1)); done",
        timeout=300,
    )
    wait_for(
        lambda: (
            sum(1 for p in proposals.list_all(abot.home) if p.pending and p.slug == abot.slug) >= layout.MAX_PENDING
        ),
        timeout=60,
        what="the queue to fill",
    )
    assert call_tool(abot, "request-egress-route", {"host": "more." + BLOCKED, "reason": "r", "wait_seconds": 0})[
        "is_error"
    ]
    draft = next(p for p in proposals.list_all(abot.home) if p.pending and p.change.get("paths") == ["/noise/7"])
    approve_once(abot, draft.id)
    # new noise keeps the queue full while the route is used
    script = (
        f"for i in $(seq 1000 1040); do curl -s -o /dev/null --max-time 5 http://{host}/noise/$i; done; "
        f"curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 20 http://{host}/noise/7; "
        f"for i in $(seq 2000 2040); do curl -s -o /dev/null --max-time 5 http://{host}/noise/$i; done"
    )
    assert agent_sh(abot, script, timeout=300).stdout.split()[-1] == "200"
    wait_for(lambda: draft.id not in once_routes(abot), timeout=15, what="the route to be withdrawn under a full queue")
    assert status_code(abot, f"http://{host}/noise/7") == "403"
    assert proposals.find(abot.home, draft.id)[1].data["once_used"]


@pytest.mark.parametrize("host", ["*.co.uk", "*.github.io", "*.amazonaws.com"])
def test_wildcards_over_a_public_suffix_are_refused_with_a_way_forward(abot: Bottle, host: str) -> None:
    answer = call_tool(abot, "request-egress-route", {"host": host, "reason": "all of it", "wait_seconds": 0})
    assert answer["is_error"] and "public suffix" in answer["text"] and "ask for the hosts you need" in answer["text"]
    assert not any(p.change.get("host") == host for p in proposals.list_all(abot.home))


def test_the_engine_keeps_a_bounded_log_of_the_bundle(abot: Bottle) -> None:
    config = json.loads(sh("docker", "inspect", "--format", "{{json .HostConfig.LogConfig}}", abot.sidecars).stdout)
    assert config == {
        "Type": "json-file",
        "Config": {
            "max-size": f"{layout.BUNDLE_LOG_CAP.max_bytes >> 20}m",
            "max-file": str(layout.BUNDLE_LOG_CAP.keep + 1),
        },
    }


SESSIONS = r"""
import json, sys, urllib.error, urllib.request
port, n = int(sys.argv[1]), int(sys.argv[2])
init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "flood", "version": "1"}}}
codes = []
for _ in range(n):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/mcp", json.dumps(init).encode(),
                                 {"content-type": "application/json", "accept": "application/json, text/event-stream"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            r.read()
            codes.append(r.status)
    except urllib.error.HTTPError as e:
        codes.append(e.code)
print(json.dumps(codes))
"""


def test_supervise_keeps_a_bounded_number_of_mcp_sessions(abot: Bottle) -> None:
    # A second supervise in the bundle, on loopback with state of its own: the bottle's own one
    # stays usable for the other tests.
    port = "18765"
    server = subprocess.Popen(
        [
            "docker",
            "exec",
            "-e",
            "BOTTLE_SUPERVISE_STATE=/tmp/sessions/s",
            "-e",
            "BOTTLE_EGRESS_STATE=/tmp/sessions/e",
            "-e",
            "PYTHONPATH=/opt/bottle/common:/opt/bottle/supervise",
            abot.sidecars,
            "sh",
            "-c",
            "mkdir -p /tmp/sessions/s /tmp/sessions/e && exec /opt/supervise/bin/python "
            f"/opt/bottle/supervise/server.py --host 127.0.0.1 --port {port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: (
                sh("docker", "exec", abot.sidecars, "test", "-f", "/tmp/sessions/s/ready", check=False).returncode == 0
            ),
            timeout=30,
            what="the second supervise to be ready",
        )
        codes = json.loads(
            sh(
                "docker",
                "exec",
                abot.sidecars,
                "python3",
                "-c",
                SESSIONS,
                port,
                str(serving.SUPERVISE_MAX_SESSIONS + 20),
                timeout=300,
            ).stdout
        )
    finally:
        sh(
            "docker",
            "exec",
            abot.sidecars,
            "python3",
            "-c",
            "import json, os, signal; os.kill(json.load(open('/tmp/sessions/s/ready'))['pid'], signal.SIGTERM)",
            check=False,
        )
        server.wait(timeout=30)
    assert codes[: serving.SUPERVISE_MAX_SESSIONS] == [200] * serving.SUPERVISE_MAX_SESSIONS
    assert set(codes[serving.SUPERVISE_MAX_SESSIONS :]) == {503}
