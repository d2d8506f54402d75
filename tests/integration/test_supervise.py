"""Supervise end to end on a real bottle: real MCP clients inside the agent (the SDK's, and Claude
Code's `claude mcp list`), the operator deciding through the library the CLI and console share,
and the agent's next request going through (or not) because egress picked up the new policy."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from bottle_tui import ops, proposals
from tests.support.bottles import ALLOWED, BLOCKED, Bottle, sh
from tests.support.supervise import call_tool, client_argv, finish_call, install_mcp_client, start_call
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

CURL = ("curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}")
TOOLS = {"request-egress-route", "request-dlp-exemption", "list-egress-routes", "list-my-requests", "report-blocked"}


@pytest.fixture(scope="module")
def sbottle(bottle: Bottle) -> Bottle:
    install_mcp_client(bottle)
    return bottle


def status_of(bottle: Bottle, url: str, method: str = "GET") -> str:
    return bottle.exec(*CURL, "-X", method, url).stdout.strip()


def pending_for(bottle: Bottle, host: str, path: str, *, draft: bool | None = None) -> proposals.Proposal:
    def find():
        for p in proposals.list_all(bottle.home):
            if (
                p.slug == bottle.slug
                and p.change.get("host") == host
                and path in (p.change.get("paths") or [])
                and (draft is None or bool(p.data.get("draft")) == draft)
            ):
                return p
        return None

    return wait_for(find, timeout=15, what=f"a pending proposal for {host}{path}", interval=0.05)


def decide(bottle: Bottle, pid: str, action: str, **kw) -> ops.Decided:
    """Decide as the CLI and the console do: through ops, which reloads the bundle."""
    out = asyncio.run(ops.decide(bottle.home, pid, action, by="integration test", **kw))
    assert out.reload_warning is None, out.reload_warning
    return out


def test_claude_code_in_the_agent_sees_supervise_connected(sbottle: Bottle) -> None:
    out = sbottle.exec("claude", "mcp", "list", timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("supervise:"))
    assert "http://supervise:8765/mcp" in line and "✔ Connected" in line


def test_the_sdk_client_lists_the_tools_with_schemas_and_none_decides(sbottle: Bottle) -> None:
    tools = json.loads(sh(*client_argv(sbottle, "--list")).stdout)
    assert {t["name"] for t in tools} == TOOLS
    for t in tools:
        assert t["description"] and t["input_schema"]["type"] == "object"
    req = next(t for t in tools if t["name"] == "request-egress-route")
    assert set(req["input_schema"]["required"]) == {"host", "reason"}


def test_blocked_request_becomes_a_draft_and_approving_it_lets_the_same_request_through(sbottle: Bottle) -> None:
    url = f"http://{BLOCKED}/draft/one"
    assert status_of(sbottle, url) == "403"
    assert status_of(sbottle, url) == "403"
    draft = wait_for(
        lambda: (p := pending_for(sbottle, BLOCKED, "/draft/one", draft=True)).data.get("count") == 2 and p,
        timeout=10,
        what="the draft to count both blocks",
    )
    # The draft proposes what was seen: port 80 and plain http, not both schemes.
    assert draft.change == {
        "host": BLOCKED,
        "ports": [80],
        "methods": ["GET"],
        "paths": ["/draft/one"],
        "schemes": ["http"],
    }
    assert decide(sbottle, draft.id, "approve").policy_changed
    assert status_of(sbottle, url) == "200"
    assert status_of(sbottle, url, "POST") == "403"  # only what was blocked, not the whole host


def test_request_modified_to_a_narrower_path_keeps_the_wider_one_blocked(sbottle: Bottle) -> None:
    call = start_call(
        sbottle,
        "request-egress-route",
        {"host": BLOCKED, "ports": [80], "methods": ["GET"], "paths": ["/mod/*"], "reason": "fetch build inputs"},
    )
    p = pending_for(sbottle, BLOCKED, "/mod/*", draft=False)
    assert p.data["reason"] == "fetch build inputs"
    decide(sbottle, p.id, "modify", change={**p.change, "paths": ["/mod/ok/*"]})
    answer = finish_call(call)
    assert not answer["is_error"] and answer["text"].startswith("Approved with changes")
    assert json.loads(answer["text"].split("\n", 1)[1])["final_change"]["paths"] == ["/mod/ok/*"]
    assert status_of(sbottle, f"http://{BLOCKED}/mod/ok/file") == "200"
    assert status_of(sbottle, f"http://{BLOCKED}/mod/other") == "403"


def test_rejected_request_returns_the_operators_note_to_the_agent(sbottle: Bottle) -> None:
    call = start_call(
        sbottle, "request-egress-route", {"host": "rejected.fake.test", "reason": "[bold]please[/bold]\x1b[31m"}
    )
    p = wait_for(
        lambda: next(
            (q for q in proposals.list_all(sbottle.home) if q.change.get("host") == "rejected.fake.test"), None
        ),
        timeout=15,
        what="the request to reach the queue",
    )
    assert p.data["reason"] == "[bold]please[/bold]\x1b[31m"  # stored exactly as the agent sent it
    decide(sbottle, p.id, "reject", note="use the internal mirror instead")
    answer = finish_call(call)
    assert "Rejected" in answer["text"] and "use the internal mirror instead" in answer["text"]
    mine = json.loads(call_tool(sbottle, "list-my-requests", {})["text"])
    assert next(m for m in mine if m["id"] == p.id)["status"] == "rejected"


def test_bad_input_is_a_tool_error_and_the_server_keeps_serving(sbottle: Bottle) -> None:
    for args, words in (
        ({"host": "http://evil.example.com/x", "reason": "r"}, "bare host name"),
        ({"host": "10.0.0.1", "reason": "r"}, "IP address"),
        ({"host": "ok.example.com", "reason": "r", "paths": ["no-slash"]}, "must start with '/'"),
        ({"host": "ok.example.com", "reason": "x" * 10000}, "reason"),
    ):
        answer = call_tool(sbottle, "request-egress-route", args)
        assert answer["is_error"] and words in answer["text"], answer
    answer = call_tool(sbottle, "request-egress-route", {"host": "slow.fake.test", "reason": "r", "wait_seconds": 1})
    assert (
        not answer["is_error"] and answer["text"].startswith("Still pending") and "list-my-requests" in answer["text"]
    )
    routes = json.loads(call_tool(sbottle, "list-egress-routes", {})["text"])["routes"]
    assert any(r["host"] == BLOCKED for r in routes)


def test_report_blocked_adds_the_agents_words_to_the_draft(sbottle: Bottle) -> None:
    assert status_of(sbottle, f"http://{BLOCKED}/report/me") == "403"
    draft = pending_for(sbottle, BLOCKED, "/report/me", draft=True)
    answer = call_tool(
        sbottle,
        "report-blocked",
        {
            "host": BLOCKED,
            "method": "GET",
            "path": "/report/me",
            "port": 80,
            "why": "the test suite downloads fixtures from here",
        },
    )
    assert not answer["is_error"]
    again = proposals.find(sbottle.home, draft.id)[1]
    assert again.data["context"] == "the test suite downloads fixtures from here" and again.data["count"] == 1


def test_nothing_in_the_agent_can_write_the_queue_the_policy_or_a_decision(sbottle: Bottle) -> None:
    mounts = json.loads(sh("docker", "inspect", "--format", "{{json .Mounts}}", sbottle.agent).stdout)
    # the CA read-only, and the agent's own home: its work volume, which no other container mounts
    work = f"bottle-tui-work-{sbottle.slug}"
    assert sorted((m["Destination"], m["RW"], m.get("Name")) for m in mounts) == [
        ("/etc/bottle/ca", False, None),
        ("/home/agent", True, work),
    ]
    users = sh("docker", "ps", "-a", "--filter", f"volume={work}", "--format", "{{.Names}}").stdout.split()
    assert users == [sbottle.agent], users
    probe = sbottle.exec(
        "sh",
        "-c",
        "ls /state; find / -xdev \\( -name routes.yaml -o -path '*queue*' \\) 2>/dev/null; "
        "touch /etc/bottle/ca/x 2>&1; echo done",
    )
    assert "No such file" in probe.stdout + probe.stderr and "routes.yaml" not in probe.stdout
    assert "Read-only file system" in probe.stdout and probe.stdout.strip().endswith("done")
    # The server answers only Host: supervise, and only on the internal network: the agent's name
    # for the bundle's other alias gets a refusal, not a session.
    bad_host = sbottle.exec(
        "curl",
        "-sS",
        "--noproxy",
        "*",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        "Host: evil.example.com",
        "-H",
        "Content-Type: application/json",
        "-d",
        "{}",
        "http://supervise:8765/mcp",
    )
    assert bad_host.stdout.strip() in ("400", "421"), bad_host
    # No tool decides: the agent's call leaves its own proposal pending.
    call_tool(sbottle, "request-egress-route", {"host": "self.fake.test", "reason": "r", "wait_seconds": 0})
    p = next(q for q in proposals.list_all(sbottle.home) if q.change.get("host") == "self.fake.test")
    assert p.pending and p.data["decision"] is None


def test_a_bundle_restart_loses_no_proposal(sbottle: Bottle) -> None:
    call_tool(sbottle, "request-egress-route", {"host": "restart.fake.test", "reason": "r", "wait_seconds": 0})
    before = {p.id for p in proposals.list_all(sbottle.home) if p.slug == sbottle.slug}
    sh("docker", "restart", "-t", "2", sbottle.sidecars)
    wait_for(
        lambda: (
            sbottle.exec(
                "curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", "http://supervise:8765/mcp"
            ).stdout.strip()
            not in ("", "000")
        ),
        timeout=30,
        what="supervise to answer after the restart",
        interval=0.2,
    )
    mine = json.loads(call_tool(sbottle, "list-my-requests", {})["text"])
    assert before <= {m["id"] for m in mine}


def test_approved_once_lets_one_request_through_then_the_route_is_withdrawn(sbottle: Bottle) -> None:
    call = start_call(
        sbottle,
        "request-egress-route",
        {"host": BLOCKED, "ports": [80], "methods": ["GET"], "paths": ["/once/*"], "reason": "one download"},
    )
    p = pending_for(sbottle, BLOCKED, "/once/*", draft=False)
    decide(sbottle, p.id, "approve", scope="once")
    assert finish_call(call)["text"].startswith("Approved")
    assert status_of(sbottle, f"http://{BLOCKED}/once/file") == "200"
    wait_for(
        lambda: proposals.find(sbottle.home, p.id)[1].data.get("once_used"),
        timeout=10,
        what="the once route to be withdrawn",
    )
    wait_for(
        lambda: status_of(sbottle, f"http://{BLOCKED}/once/file") == "403", timeout=10, what="egress to block it again"
    )


def test_a_dlp_exemption_lets_the_blocked_body_through(sbottle: Bottle) -> None:
    # A body with a GitHub token shape (a test fixture the agent says is not a real secret).
    token = "ghp_" + "Fx7kQ2mZ9vR4tB8nW1cY6pL3sD5hJ0aE2gUi"
    send = (
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-X",
        "POST",
        "--data-binary",
        f"fixture: {token}",
        f"http://{ALLOWED}/upload",
    )
    first = sbottle.exec(*send)
    assert first.stdout.startswith("dlp: blocked: github-pat in body"), first.stdout
    call = start_call(
        sbottle,
        "request-dlp-exemption",
        {"route": ALLOWED, "rule": "github-pat", "reason": "the fixture token is a test value"},
    )
    p = wait_for(
        lambda: next((q for q in proposals.list_all(sbottle.home) if q.kind == "dlp-exemption" and q.pending), None),
        timeout=15,
        what="the exemption request to reach the queue",
    )
    assert p.change == {"host": ALLOWED, "rule": "github-pat"}
    decide(sbottle, p.id, "approve")
    assert finish_call(call)["text"].startswith("Approved")
    routes = yaml.safe_load((sbottle.state / "egress" / "routes.yaml").read_text())["routes"]
    assert all("github-pat" in r["dlp"]["disabled_rules"] for r in routes if r["host"] == ALLOWED)
    # The same body now passes (egress reloaded the policy without a restart); other rules still hold.
    again = wait_for(
        lambda: (r := sbottle.exec(*send)).stdout.startswith("{") and r, timeout=10, what="the body to pass"
    )
    assert json.loads(again.stdout)["fake_internet"] is True
    aws = sbottle.exec(
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-X",
        "POST",
        "--data-binary",
        "k=AKIAQYLPMN5HJ3ZX7TRW",
        f"http://{ALLOWED}/upload",
    )
    assert aws.stdout.startswith("dlp: blocked: aws-access-token")


def test_supervise_listens_on_the_internal_network_only_with_the_bottles_timeout(sbottle: Bottle) -> None:
    ready = json.loads((sbottle.state / "supervise" / "ready").read_text())
    nets = json.loads(
        sh("docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", sbottle.sidecars).stdout
    )
    assert (
        ready["host"] == nets[sbottle.network("internal")]["IPAddress"] != nets[sbottle.network("egress")]["IPAddress"]
    )
    logs = sh("docker", "logs", sbottle.sidecars).stderr
    assert (
        "decisions time out after 900 s" in logs
    )  # supervise.timeout_seconds, from state/<slug>/supervise/settings.json
