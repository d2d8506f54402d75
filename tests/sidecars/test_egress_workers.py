"""Several egress workers over one egress folder (issue 20, item 2): what one worker decides binds
the others. Two addon instances (and, for the log, two processes) on the same files: a budget
reached through one refuses the next call through the other, a token handed out through one is
known to the other's DLP, a route allowed once admits one request of all of them, the decision
log's lines stay whole across rotations, and the ready file holds every worker. And init runs a
daemon as workers: each its own child, SIGHUP to each, a restart of one or of all."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from mitmproxy.test import taddons

from bottle_contract import proposal as contract
from bottle_contract import workers
from bottle_contract.files import append_line
from bottle_contract.usage import Budget, Metered, Metering, default_prices, read_usage, write_metering
from tests.sidecars.test_bottle_init import DAEMON, alive
from tests.sidecars.test_bottle_init import bundle as bundle  # the fixture
from tests.sidecars.test_egress_metering import AUTH, KEY, NO_BODY_DLP, call, one_answer_cost
from tests.support.egress import DLP_RULES, Driven, decisions, make_flow, route_line, routes_yaml, send
from tests.support.sidecars import egress_module
from tests.support.waiting import wait_for

A = egress_module("addon")
prov = egress_module("dlp.provenance")

ROUTES = routes_yaml(route_line("api.anthropic.com", auth=AUTH, dlp=NO_BODY_DLP), route_line("other.example.com"))


@contextlib.contextmanager
def two_workers(state, routes: str = ROUTES, environ: dict | None = None):
    """Workers 1 and 2 of a bundle over the egress folder ``state``, in one mitmproxy test context."""
    (state / "routes.yaml").write_text(routes)
    eg = [
        A.Egress(state_dir=str(state), environ=environ or {}, dlp_rules=str(DLP_RULES), worker=(n, 2)) for n in (1, 2)
    ]
    # One test context each (mitmproxy names addons by class: one master holds one Egress).
    with taddons.context(eg[0]) as t1, taddons.context(eg[1]) as t2:
        for e, tctx in zip(eg, (t1, t2), strict=True):
            tctx.configure(e, confdir=str(state))
        yield [Driven(e) for e in eg]


@pytest.fixture
def state(tmp_path):
    (tmp_path / "supervise" / "queue").mkdir(parents=True)
    (tmp_path / "egress").mkdir()
    return tmp_path / "egress"


# --- the budget ------------------------------------------------------------------------------------


def test_a_budget_reached_through_one_worker_refuses_the_next_call_through_the_other(state) -> None:
    limit = round(one_answer_cost() * 2.5, 6)
    write_metering(
        state / "metering.json",
        Metering(
            slug="b-1",
            metered=(Metered("api.anthropic.com", "anthropic"),),
            prices=default_prices(),
            budget=Budget(usd=limit),
        ),
    )
    with two_workers(state, environ={"ANTHROPIC_API_KEY": KEY}) as (one, two):
        assert call(one, stream=True).response.status_code == 200
        assert call(two, stream=False).response.status_code == 200
        assert call(one, stream=True).response.status_code == 200  # the third crosses the line
        # usage.json adds up what both counted, whichever wrote last
        doc = read_usage(state / "usage.json")
        assert doc["models"]["claude-sonnet-4-5-20250929"]["requests"] == 3
        assert doc["budget"]["level"] == "reached"
        f = call(two, stream=False)  # worker 2 counted only one answer itself
        assert f.response.status_code == 429
        assert json.loads(f.response.content)["error"]["type"] == "rate_limit_error"
        assert call(one, stream=False).response.status_code == 429
        # one proposal for the bottle, whichever worker saw the budget reached first
        assert len(contract.Queue(state.parent / "supervise" / "queue").all()) == 1


def test_counts_written_by_one_worker_are_not_lost_to_the_others_writes(state) -> None:
    write_metering(
        state / "metering.json",
        Metering(slug="b-1", metered=(Metered("api.anthropic.com", "anthropic"),), prices=default_prices()),
    )
    with two_workers(state, environ={"ANTHROPIC_API_KEY": KEY}) as (one, two):
        for _ in range(4):
            call(one, stream=False)
            call(two, stream=True)
        assert read_usage(state / "usage.json")["totals"]["requests"] == 8
    # a worker that starts again (a restart) goes on from the bottle's counts, not its own
    with two_workers(state, environ={"ANTHROPIC_API_KEY": KEY}) as (one, _two):
        call(one, stream=False)
    assert read_usage(state / "usage.json")["totals"]["requests"] == 9


# --- provenance ------------------------------------------------------------------------------------


def test_a_token_one_worker_handed_out_is_known_to_the_other(tmp_path) -> None:
    one, two = prov.Provenance(shared=str(tmp_path)), prov.Provenance(shared=str(tmp_path))
    cursor = "Qm9vdHN0cmFwLXRva2VuLTAxMjM0NTY3ODk"
    one.learn("api.example.com", [], json.dumps({"next": cursor}).encode())
    assert two.known("api.example.com", cursor.encode())
    assert not two.known("evil.example.net", cursor.encode())
    # the key is the workers' (a store of its own would hash otherwise), and so is the log
    assert two._digest(b"x" * 20) == one._digest(b"x" * 20)
    assert prov.Provenance()._digest(b"x" * 20) != one._digest(b"x" * 20)
    log = (tmp_path / prov.LOG_FILE).read_bytes()
    assert cursor.encode() not in log  # hashes, never values


def test_provenance_read_across_a_rotation_of_the_shared_log(tmp_path) -> None:
    small = 64 * prov.ENTRY_BYTES  # a log generation of a few KB
    one, two = prov.Provenance(small, shared=str(tmp_path)), prov.Provenance(small, shared=str(tmp_path))
    first = [f"tok{i:03d}-Zq8Xr2Lw9Vp4Nb7Mk1Jh" for i in range(40)]
    for t in first:
        one.add("a.example", t.encode())
    assert two.known("a.example", first[0].encode())  # two read up to here
    later = [f"tok{i:03d}-Yp3Wd6Fs8Gt1Qa5Ec0Rb" for i in range(50)]  # the log rotates on the way
    for t in later:
        one.add("a.example", t.encode())
    assert (tmp_path / (prov.LOG_FILE + ".1")).exists()
    assert two.known("a.example", later[-1].encode())
    assert two.known("a.example", later[0].encode())  # from the generation rotated away
    assert len(two) <= two.max_entries


def test_the_dlp_of_one_worker_lets_a_token_from_the_other_go_back(state) -> None:
    token = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"  # a GitHub token's shape
    routes = routes_yaml(route_line("api.github.com"), route_line("other.example.com"))
    with two_workers(state, routes) as (one, two):
        handed = one.store.dlp.provenance
        handed.learn("api.github.com", [("Location", f"https://api.github.com/next?t={token}")])
        back = make_flow("GET", f"https://api.github.com/repos?t={token}")
        send(two, back)
        assert back.response is None  # worker 2 knew where it came from
        elsewhere = make_flow("GET", f"https://other.example.com/?t={token}")
        send(two, elsewhere)
        assert elsewhere.response is not None and elsewhere.response.status_code == 403


# --- a route allowed once ---------------------------------------------------------------------------


def test_a_route_allowed_once_admits_one_request_of_all_workers(state) -> None:
    routes = routes_yaml(route_line("once.example.com", paths="['/dl/*']").replace("once: null", "once: p-1"))
    with two_workers(state, routes) as (one, two):
        first = make_flow("GET", "https://once.example.com/dl/file")
        send(one, first)
        assert first.response is None
        again = make_flow("GET", "https://once.example.com/dl/file")
        send(two, again)
        assert again.response is not None and again.response.status_code == 403
        assert "allowed once and has been used" in again.response.text
    assert json.loads((state / "once-used.json").read_text()) == ["p-1"]


# --- the decision log and the ready file ----------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import json, sys
    from bottle_contract.files import append_line
    path, lock, who = sys.argv[1], sys.argv[2], sys.argv[3]
    for i in range(1500):
        line = json.dumps({"who": who, "i": i, "pad": "x" * (i % 97)}).encode()
        append_line(path, line, max_bytes=20000, keep=40, mode=0o644, lock=lock)
    """
)


def test_two_writing_processes_leave_only_whole_lines_and_lose_none_at_rotation(tmp_path) -> None:
    log, lock = tmp_path / "requests.jsonl", tmp_path / "requests.lock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(lock), who], env=env) for who in ("one", "two")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    files = [log] + sorted(tmp_path.glob("requests.jsonl.*"))
    assert len(files) > 10  # it rotated, many times, under both writers
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    for who in ("one", "two"):
        assert sorted(e["i"] for e in lines if e["who"] == who) == list(range(1500))
    assert all(f.stat().st_size <= 20000 + 200 for f in files)


def test_both_workers_log_to_one_file_and_share_the_ready_file(state) -> None:
    with two_workers(state) as (one, two):
        for w in (one, two):
            w.running()
        send(one, make_flow("GET", "https://other.example.com/a"))
        send(two, make_flow("GET", "https://blocked.example.org/b"))
        ready = json.loads((state / "ready").read_text())
        assert ready["workers"] == 2 and set(ready["worker"]) == {"1", "2"} and ready["routes_loaded"]
        before = ready
        one.lifecycle.on_sighup()
        half = json.loads((state / "ready").read_text())
        assert not workers.reloaded(before, half)  # worker 2 has not reloaded yet
        two.lifecycle.on_sighup()
        assert workers.reloaded(before, json.loads((state / "ready").read_text()))
        one.done()
        left = json.loads((state / "ready").read_text())
        assert set(left["worker"]) == {"2"} and not left["routes_loaded"]  # one of two is gone
        two.done()
        assert not (state / "ready").exists()
    assert [(d["path"], d["worker"]) for d in decisions(state)] == [("/a", 1), ("/b", 2)]


def test_ready_of_a_bad_policy_names_the_worker_that_refused_it(state) -> None:
    doc = workers.ready_with(None, 1, 2, {"pid": 10, "routes_loaded": True, "routes_error": None, "loads": 1}, {})
    doc = workers.ready_with(doc, 2, 2, {"pid": 11, "routes_loaded": True, "routes_error": "bad", "loads": 2}, {})
    assert doc["routes_loaded"] and doc["routes_error"] == "bad" and doc["pid"] == 10
    assert set(workers.ready_with(doc, 1, 1, {"pid": 12}, {})["worker"]) == {"1"}  # fewer workers now


# --- the worker count and init ------------------------------------------------------------------------


@pytest.mark.parametrize("value, count", [(None, 1), ("1", 1), ("3", 3), ("auto", min(workers.AUTO_MAX, 6))])
def test_the_worker_count_init_resolves(value, count) -> None:
    assert workers.resolve(value, 6) == count


@pytest.mark.parametrize("value", ["0", "9", "two", "-1", ""])
def test_a_bad_worker_count_is_one_line(value) -> None:
    if value == "":
        assert workers.resolve(value, 2) == 1
        return
    with pytest.raises(ValueError, match=r"^BOTTLE_EGRESS_WORKERS='.*' must be a whole number from 1 to 8"):
        workers.resolve(value, 2)


def test_the_cpu_allowance_follows_a_cgroup_quota(tmp_path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert workers.cpu_allowance(str(tmp_path)) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert workers.cpu_allowance(str(tmp_path)) == len(os.sched_getaffinity(0))
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert workers.cpu_allowance(str(v1)) == 1


def worker_daemon(script) -> list[str]:
    """The test daemon of test_bottle_init, named after the worker it is (w.1, w.2)."""
    code = (
        "import os, runpy, sys; n = os.environ['BOTTLE_EGRESS_WORKER']; "
        "assert os.environ['BOTTLE_EGRESS_WORKERS'] == '2'; "
        f"sys.argv = ['d', 'w.' + n, sys.argv[1], 'sleep']; runpy.run_path({str(script)!r}, run_name='__main__')"
    )
    return [sys.executable, "-c", code]


def test_init_runs_workers_each_restarted_alone_or_all_together(bundle, tmp_path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(DAEMON)
    out = tmp_path / "out"
    spec = {
        "w": {"argv": [*worker_daemon(script), str(out)], "reload_signal": "HUP", "workers_from": "W_COUNT"},
        "other": {},
    }
    b = bundle(spec, "w,other")
    b.stop()  # started without the count; again with it
    b.env["W_COUNT"] = "2"
    b.start()
    w1 = wait_for(lambda: b.running("w.1"), what="worker 1 running")
    w2 = wait_for(lambda: b.running("w.2"), what="worker 2 running")
    assert set(b.status()) == {"w.1", "w.2", "other"} and b.daemon("w.2")["group"] == "w"
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: b.signals("w.1") == ["SIGHUP"] and b.signals("w.2") == ["SIGHUP"], what="SIGHUP to both")
    # one worker killed: init brings it back, the other keeps serving as it was
    os.kill(w2["pid"], signal.SIGKILL)
    w2b = wait_for(lambda: (d := b.running("w.2")) and d["pid"] != w2["pid"] and d, timeout=10, what="w.2 back")
    assert b.running("w.1")["pid"] == w1["pid"] and w2b["restarts"] == 1
    # a restart of one worker by its name, then of all by the daemon's
    result = b.client("restart", "w.1")
    assert result.returncode == 0 and "restarted w.1" in result.stdout
    assert b.daemon("w.2")["pid"] == w2b["pid"]
    result = b.client("restart", "w")
    assert result.returncode == 0, result.stderr
    assert "restarted w.1" in result.stdout and "restarted w.2" in result.stdout
    assert not alive(w1["pid"]) and b.running("other")


def test_a_bad_worker_count_stops_init_with_one_line(bundle) -> None:
    b = bundle({"w": {"workers_from": "W_COUNT"}}, "w")
    b.stop()
    b.env["W_COUNT"] = "many"
    b.start()
    assert b.proc.wait(timeout=5) == 2
    [line] = b.stderr.strip().splitlines()
    assert line == "init: w: W_COUNT='many' must be a whole number from 1 to 8, or auto " + (
        f"(the bundle's CPUs, up to {workers.AUTO_MAX})"
    )


def test_one_process_log_append_needs_no_lock(tmp_path) -> None:
    append_line(tmp_path / "x.jsonl", b"{}", max_bytes=100, keep=1)
    assert (tmp_path / "x.jsonl").read_text() == "{}\n"
