"""The supervise daemon's queue side (sidecars/supervise/inbox.py, stdlib only): input validation
the agent hits, drafts made from egress's blocks, the cursor across restarts, and that what it
writes is what bottle_tui/proposals.py decides (and what it waits for)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bottle_contract.files import atomic_write
from bottle_tui import proposals
from bottle_tui.state import StateDir
from tests.support.sidecars import supervise_module

inbox = supervise_module("inbox")

ROUTES = "version: 1\nbottle: sandbox\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: []\n"


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    s = StateDir(tmp_path / "home" / "state" / "tester-cccccc")
    s.create()
    atomic_write(s.egress / "routes.yaml", ROUTES)
    return s


@pytest.fixture
def queue(state: StateDir):
    return inbox.Queue(str(state.supervise), state.slug)


@pytest.mark.parametrize(
    "host, words",
    [
        ("", "give a host"),
        ("https://a.example.com", "bare host"),
        ("a.example.com:443", "bare host"),
        ("a.example.com/x", "bare host"),
        ("user@a.example.com", "bare host"),
        ("10.0.0.1", "IP address"),
        ("::1", "IP address"),
        ("*.com", "too broad"),
        ("*", "too broad"),
        ("localhost", "at least 2 labels"),
        ("a..example.com", "not a valid host name"),
        ("a b.example.com", "not a valid host name"),
        ("x" * 300 + ".com", "253"),
        ("a.*.example.com", "bad wildcard"),
        ("*.co.uk", "'co.uk', a public suffix .*ask for the hosts you need"),
        ("*.github.io", "'github.io', a public suffix"),
        ("*.amazonaws.com", "public suffixes such as '.*amazonaws.com'.*ask for the hosts you need"),
    ],
)
def test_bad_hosts_are_errors_the_agent_can_read(host: str, words: str) -> None:
    with pytest.raises(inbox.InputError, match=words):
        inbox.check_host(host)


def test_good_input_is_normalised() -> None:
    assert inbox.route_change("API.Example.COM.", [443, 443], ["get"], ["/v1/*"]) == {
        "host": "api.example.com",
        "ports": [443],
        "methods": ["GET"],
        "paths": ["/v1/*"],
        "schemes": ["http", "https"],
    }
    assert inbox.route_change("*.docs.example.com")["ports"] == [80, 443]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"ports": [0]}, "ports"),
        ({"ports": [True]}, "ports"),
        ({"ports": list(range(1, 30))}, "ports"),
        ({"methods": ["FETCH"]}, "methods"),
        ({"paths": ["v1"]}, "paths"),
        ({"paths": ["/a b"]}, "paths"),
        ({"paths": ["/a?x=1"]}, "paths"),
        ({"paths": ["/" + "a" * 3000]}, "paths"),
        ({"paths": ["/a\nb"]}, "paths"),
    ],
)
def test_bad_ports_methods_paths(kwargs: dict, words: str) -> None:
    with pytest.raises(inbox.InputError, match=words):
        inbox.route_change("a.example.com", **kwargs)


def test_reason_is_required_and_bounded() -> None:
    with pytest.raises(inbox.InputError, match="reason"):
        inbox.check_reason("  ")
    with pytest.raises(inbox.InputError, match="at most"):
        inbox.check_reason("x" * (1 << 20))
    hostile = "[red]x[/red]\x1b[2J\nline"
    assert inbox.check_reason(hostile) == hostile  # stored as sent; the console shows it inert


def test_what_the_daemon_writes_the_library_decides_and_the_daemon_sees(state: StateDir, queue) -> None:
    p = queue.request("egress-route", inbox.route_change("a.example.com", [443], ["GET"], ["/x/*"]), "need it")
    home = state.path.parent.parent
    loaded = proposals.find(home, p["id"])[1]
    assert loaded.pending and loaded.change == p["change"] and loaded.data["reason"] == "need it"

    async def scenario():
        waiter = asyncio.create_task(queue.wait(p["id"], timeout=10))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await asyncio.to_thread(proposals.decide, home, p["id"], "reject", by="op", note="use the mirror")
        return await waiter

    decided = asyncio.run(scenario())
    assert decided["status"] == "rejected"
    assert inbox.for_agent(decided)["note"] == "use the mirror"


def test_wait_gives_up_after_its_timeout(queue) -> None:
    p = queue.request("egress-route", inbox.route_change("a.example.com"), "r")
    assert asyncio.run(queue.wait(p["id"], timeout=0.2)) is None


def test_blocks_become_one_draft_per_host_method_path(queue) -> None:
    records = [
        {
            "ts": "2026-11-27T00:00:01",
            "decision": "block",
            "method": "GET",
            "host": "b.example.com",
            "port": 443,
            "path": "/x",
        },
        {
            "ts": "2026-11-27T00:00:02",
            "decision": "block",
            "method": "GET",
            "host": "b.example.com",
            "port": 80,
            "path": "/x",
        },
        {
            "ts": "2026-11-27T00:00:03",
            "decision": "block",
            "method": "POST",
            "host": "b.example.com",
            "port": 443,
            "path": "/x",
        },
        {
            "ts": "2026-11-27T00:00:04",
            "decision": "allow",
            "method": "GET",
            "host": "c.example.com",
            "port": 443,
            "path": "/",
        },
        {"ts": "2026-11-27T00:00:05", "decision": "block", "method": "", "host": "10.1.2.3", "port": 22, "path": ""},
        {
            "ts": "2026-11-27T00:00:06",
            "decision": "block",
            "method": "GET",
            "host": "10.1.2.3",
            "port": 80,
            "path": "/",
        },
    ]
    assert inbox.drafts_from(queue, records) == 3
    drafts = queue.all()
    assert len(drafts) == 2 and all(d["draft"] and d["status"] == "pending" for d in drafts)
    get = next(d for d in drafts if d["change"]["methods"] == ["GET"])
    assert get["count"] == 2 and get["last_seen"] == "2026-11-27T00:00:02" and get["change"]["ports"] == [80, 443]
    # report-blocked adds the agent's words to the same draft without counting a block
    queue.note_block("GET", "b.example.com", 443, "/x", context="the build needs it")
    again = queue.get(get["id"])
    assert again["context"] == "the build needs it" and again["count"] == 2


def test_blocks_of_names_in_the_invalid_tld_make_no_draft(queue) -> None:
    """selftest's attacks are blocked at *.selftest.invalid; they must not leave the operator a
    queue of drafts for names that resolve nowhere."""
    records = [
        {"ts": f"2026-11-27T00:00:0{i}", "decision": "block", "method": "GET", "host": host, "port": 443, "path": "/x"}
        for i, host in enumerate(
            ["blocked.selftest.invalid", "Allowed.Selftest.INVALID.", "invalid", "b.invalid.example"]
        )
    ]
    assert inbox.drafts_from(queue, records) == 1
    assert [d["change"]["host"] for d in queue.all()] == ["b.invalid.example"]
    assert queue.note_block("POST", "auth.selftest.invalid", 443, "/") is None


def test_a_request_for_exactly_a_drafts_route_takes_the_draft_over(queue) -> None:
    inbox.drafts_from(
        queue, [{"decision": "block", "method": "GET", "host": "b.example.com", "port": 443, "path": "/x"}]
    )
    p = queue.request("egress-route", inbox.route_change("b.example.com", [443], ["GET"], ["/x"]), "please")
    assert len(queue.all()) == 1 and p["draft"] is False and p["reason"] == "please"


def test_a_decided_draft_makes_room_for_a_new_one(state: StateDir, queue) -> None:
    block = {"decision": "block", "method": "GET", "host": "b.example.com", "port": 443, "path": "/x"}
    inbox.drafts_from(queue, [block])
    first = queue.all()[0]
    proposals.decide(state.path.parent.parent, first["id"], "reject", by="op")
    inbox.drafts_from(queue, [block])
    assert len(queue.all()) == 2


def test_the_agent_cannot_flood_the_queue(queue, monkeypatch) -> None:
    monkeypatch.setattr(inbox, "MAX_PENDING", 3)
    for i in range(3):
        queue.request("egress-route", inbox.route_change(f"h{i}.example.com"), "r")
    with pytest.raises(inbox.InputError, match="already waiting"):
        queue.request("egress-route", inbox.route_change("h9.example.com"), "r")


def test_ids_from_the_agent_never_name_a_path(queue) -> None:
    for bad in ("../../egress/routes", "a/b", ".lock", ""):
        with pytest.raises(inbox.InputError):
            queue.path(bad)


def test_egress_tail_resumes_after_a_restart_and_waits_for_whole_lines(tmp_path: Path) -> None:
    log, cursor = tmp_path / "requests.jsonl", tmp_path / "cursor.json"
    line = lambda n: json.dumps({"decision": "block", "n": n}) + "\n"
    log.write_text(line(1) + line(2))
    tail = inbox.EgressTail(str(log), str(cursor))
    assert [r["n"] for r in tail.poll()] == [1, 2]
    with log.open("a") as f:
        f.write(line(3) + '{"decision": "blo')  # half a line: egress is mid-write
    assert [r["n"] for r in tail.poll()] == [3]
    restarted = inbox.EgressTail(str(log), str(cursor))  # the daemon restarted: nothing read twice
    with log.open("a") as f:
        f.write('ck", "n": 4}\n')
    assert [r["n"] for r in restarted.poll()] == [4]
    log.write_text(line(5))  # truncated (rotated in place): read from the start
    assert [r["n"] for r in restarted.poll()] == [5]


def test_a_route_allowed_once_is_withdrawn_after_one_request_went_through(state: StateDir, queue) -> None:
    import yaml

    home = state.path.parent.parent
    keep = queue.request("egress-route", inbox.route_change("keep.example.com", [443], ["GET"], ["/k"]), "r")
    once = queue.request("egress-route", inbox.route_change("once.example.com", [443], ["GET"], ["/dl/*"]), "r")
    proposals.decide(home, keep["id"], "approve", by="op", scope="always")
    proposals.decide(home, once["id"], "approve", by="op", scope="once")
    routes = str(state.egress / "routes.yaml")
    hosts = lambda: [r["host"] for r in yaml.safe_load(open(routes))["routes"]]
    assert hosts() == ["keep.example.com", "once.example.com"]
    # egress's log line of a request through a route allowed once names the proposal (its "once"):
    # the route is withdrawn by that id, never matched again by host and path.
    other = {"decision": "allow", "method": "GET", "host": "keep.example.com", "port": 443, "path": "/k"}
    assert inbox.withdraw_once(queue, [other], routes) == 0
    used = {
        "decision": "allow",
        "method": "GET",
        "host": "once.example.com",
        "port": 443,
        "path": "/dl/file",
        "once": once["id"],
    }
    assert inbox.withdraw_once(queue, [other, used], routes) == 1
    assert hosts() == ["keep.example.com"]
    assert queue.get(once["id"])["once_used"]["request"] == "GET once.example.com:443/dl/file"
    assert inbox.withdraw_once(queue, [used], routes) == 0  # withdrawn once, not again
    proposals.parse_policy(open(routes).read(), state.egress / "routes.yaml")  # still a valid policy


def test_drafts_propose_the_scheme_that_was_seen(queue) -> None:
    https = {
        "decision": "block",
        "method": "GET",
        "scheme": "https",
        "host": "tls.example.com",
        "port": 443,
        "path": "/a",
    }
    inbox.drafts_from(queue, [https])
    (draft,) = queue.all()
    assert draft["change"]["schemes"] == ["https"]
    # report-blocked (no scheme) adds words, never a scheme nobody used
    queue.note_block("GET", "tls.example.com", 443, "/a", context="needed")
    assert queue.get(draft["id"])["change"]["schemes"] == ["https"]
    inbox.drafts_from(queue, [{**https, "scheme": "http", "port": 80}])
    assert queue.get(draft["id"])["change"]["schemes"] == ["http", "https"]  # both were seen
    # a draft report-blocked makes before egress's line lands: the port's scheme, both for others
    assert queue.note_block("GET", "first.example.com", 443, "/b", context="x")["change"]["schemes"] == ["https"]
    assert queue.note_block("GET", "first.example.com", 80, "/c", context="x")["change"]["schemes"] == ["http"]
    assert queue.note_block("GET", "first.example.com", 8443, "/d", context="x")["change"]["schemes"] == [
        "http",
        "https",
    ]


def test_drafts_propose_the_path_as_egress_matches_it(queue) -> None:
    block = {"decision": "block", "method": "GET", "scheme": "https", "host": "enc.example.com", "port": 443}
    inbox.drafts_from(queue, [{**block, "path": "/%76%31/x"}, {**block, "path": "/v1/x"}])
    (draft,) = queue.all()  # one request, however it was spelt
    assert draft["change"]["paths"] == ["/v1/x"] and draft["count"] == 2
    # a literal '*' would be a wildcard in a route: no draft proposes it
    assert inbox.drafts_from(queue, [{**block, "path": "/%2A"}]) == 0 and len(queue.all()) == 1


def once_route(state: StateDir, queue, host: str = "once.example.com") -> tuple[dict, str]:
    p = queue.request("egress-route", inbox.route_change(host, [443], ["GET"], ["/v1/*"]), "r")
    proposals.decide(state.path.parent.parent, p["id"], "approve", by="op", scope="once")
    return p, str(state.egress / "routes.yaml")


def log_lines(path: Path, *records: dict) -> None:
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def test_a_full_queue_never_holds_back_the_withdraw(state: StateDir, queue) -> None:
    import yaml

    p, routes = once_route(state, queue)
    for i in range(inbox.MAX_PENDING):  # the queue at its cap: 200 pending
        queue.request("egress-route", inbox.route_change(f"h{i}.example.com"), "noise")
    assert sum(1 for x in queue.all() if x["status"] == "pending") == inbox.MAX_PENDING
    log = state.egress / "requests.jsonl"
    noise = [
        {"decision": "block", "method": "GET", "scheme": "https", "host": f"n{i}.example.com", "port": 443, "path": "/"}
        for i in range(20)
    ]
    used = {
        "decision": "allow",
        "method": "GET",
        "scheme": "https",
        "host": "once.example.com",
        "port": 443,
        "path": "/%76%31/x",
        "once": p["id"],
    }
    log_lines(log, *noise[:10], used, *noise[10:])
    intake = inbox.Intake(queue, inbox.EgressTail(str(log), str(state.supervise / "cursor.json")), routes)
    assert intake.step() == 1
    assert yaml.safe_load(open(routes))["routes"] == []
    assert queue.get(p["id"])["once_used"]["request"] == "GET once.example.com:443/%76%31/x"
    assert not any(
        x["change"]["host"].startswith("n") for x in queue.all()
    )  # the drafts were dropped, not the withdraw


def test_a_withdraw_that_fails_is_owed_until_it_succeeds(state: StateDir, queue) -> None:
    import yaml

    p, routes = once_route(state, queue)
    good = Path(routes).read_text()
    log = state.egress / "requests.jsonl"
    log_lines(
        log,
        {
            "decision": "allow",
            "method": "GET",
            "host": "once.example.com",
            "port": 443,
            "path": "/v1/a",
            "once": p["id"],
        },
    )
    intake = inbox.Intake(queue, inbox.EgressTail(str(log), str(state.supervise / "cursor.json")), routes)
    Path(routes).write_text("version: [unreadable")  # the policy cannot be read right now
    assert intake.step() == 0 and p["id"] in intake.owed
    Path(routes).write_text(good)
    assert intake.step() == 1  # no new line in the log: the owed withdraw runs anyway
    assert yaml.safe_load(open(routes))["routes"] == [] and not intake.owed


def test_decided_proposals_beyond_the_cap_leave_the_operators_disk(state: StateDir, queue, monkeypatch) -> None:
    from bottle_contract import layout

    monkeypatch.setattr(layout, "MAX_DECIDED", 3)
    home = state.path.parent.parent
    for i in range(6):
        p = queue.request("egress-route", inbox.route_change(f"h{i}.example.com"), "r")
        proposals.decide(home, p["id"], "reject", by="op")
    last = queue.request("egress-route", inbox.route_change("last.example.com"), "r")
    kept = queue.all()
    assert len(kept) == 4 and kept[-1]["id"] == last["id"]
    assert [p["change"]["host"] for p in kept[:3]] == ["h3.example.com", "h4.example.com", "h5.example.com"]


def test_a_batch_of_blocks_reads_the_queue_once_and_writes_each_draft_once(queue, monkeypatch) -> None:
    reads, writes = [], []
    real_all, real_write = queue.all, queue._write
    monkeypatch.setattr(queue, "all", lambda: reads.append(1) or real_all())
    monkeypatch.setattr(queue, "_write", lambda p: writes.append(p["id"]) or real_write(p))
    block = {"decision": "block", "method": "GET", "scheme": "https", "host": "many.example.com", "port": 443}
    assert inbox.drafts_from(queue, [{**block, "path": f"/p/{i % 5}"} for i in range(500)]) == 500
    assert len(reads) <= 2 and len(writes) == 5  # (the cap on decided proposals reads it once more)
    assert sorted(d["count"] for d in real_all()) == [100] * 5
