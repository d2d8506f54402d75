"""The contract package both sides import (sidecars/common/bottle_contract): file operations, host
patterns, routes.yaml and proposals. The host's and the daemons' own tests exercise it through
their callers; these pin the rules themselves."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from bottle_contract import files, hosts, layout, policy, proposal


def test_append_line_rotates_at_the_cap_and_keeps_that_many_files(tmp_path: Path) -> None:
    log = tmp_path / "x.jsonl"
    for i in range(200):
        files.append_jsonl(log, {"n": i, "pad": "x" * 40}, max_bytes=1000, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["x.jsonl", "x.jsonl.1", "x.jsonl.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    newest = [json.loads(line)["n"] for line in log.read_text().splitlines()]
    assert newest[-1] == 199 and newest == sorted(newest)
    with pytest.raises(ValueError, match="over the 1000-byte cap"):
        files.append_line(log, b"y" * 1000, max_bytes=1000, keep=2)


def test_keep_zero_drops_the_full_file(tmp_path: Path) -> None:
    log = tmp_path / "r"
    for _ in range(30):
        files.append_line(log, b"name", max_bytes=50, keep=0)
    assert log.stat().st_size <= 50 and [p.name for p in tmp_path.iterdir()] == ["r"]


def _writer(path: str, n: int) -> None:
    for i in range(n):
        files.append_jsonl(path, {"w": os.getpid(), "i": i, "pad": "p" * 200}, max_bytes=1 << 20, keep=1)


def test_concurrent_appends_never_interleave_a_line(tmp_path: Path) -> None:
    log = str(tmp_path / "c.jsonl")
    procs = [multiprocessing.Process(target=_writer, args=(log, 300)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    lines = Path(log).read_text().splitlines()
    assert len(lines) == 1200 and all(json.loads(line)["pad"] == "p" * 200 for line in lines)


def test_atomic_write_sets_the_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f"
    files.atomic_write(target, "one", mode=0o644)
    files.atomic_write(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two" and oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


@pytest.mark.parametrize(
    "pattern, host, ok",
    [
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "evilexample.com", False),
        ("api.example.com", "API.Example.com.", True),
        ("api.example.com", "xapi.example.com", False),
    ],
)
def test_host_matching(pattern: str, host: str, ok: bool) -> None:
    assert hosts.host_matches(pattern, host) is ok


@pytest.mark.parametrize(
    "inner, outer, ok",
    [
        ("a.example.com", "*.example.com", True),
        ("*.a.example.com", "*.example.com", True),
        ("*.example.com", "a.example.com", False),
        ("example.com", "*.example.com", False),
        ("*.xexample.com", "*.example.com", False),
        ("a.example.com", "a.example.com", True),
    ],
)
def test_host_within(inner: str, outer: str, ok: bool) -> None:
    assert hosts.host_within(inner, outer) is ok


def test_host_rules_for_operators_and_agents() -> None:
    assert hosts.host_problem("10.0.0.1") is None and hosts.host_problem("::1") is None
    assert "IP address" in (hosts.host_problem("10.0.0.1", allow_ip=False) or "")
    assert "labels" in (hosts.host_problem("localhost", min_labels=2) or "")
    assert "too broad" in (hosts.host_problem("*.com") or "")
    assert "bad wildcard" in (hosts.host_problem("a.*.com") or "")
    assert "not a valid host name" in (hosts.host_problem("a_b.com") or "")


ROUTE = policy.Route(
    host="api.example.com",
    ports=(443,),
    methods=("POST",),
    paths=("/v1/*",),
    auth=policy.Auth("header", "KEY", "x-api-key"),
    schemes=("https",),
    dlp=policy.DlpSettings(body=False, disabled_rules=("jwt",)),
    model_tools=("web_search",),
    once="20261202t000000000-abcdef01",
)


def test_a_policy_renders_and_reads_back_through_yaml() -> None:
    p = policy.Policy(bottle="dev", routes=(ROUTE,), dlp=policy.DlpSettings())
    text = policy.yaml_text(p.to_doc())
    assert "&" not in text and "*id" not in text
    assert policy.load_policy_text(text) == p
    assert p.without_once(ROUTE.once).routes == () and p.without_once("other").routes == (ROUTE,)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"model_tools": ["browse"]}, "routes[0].model_tools"),
        ({"once": "../x"}, "routes[0].once"),
        ({"methods": ["FETCH"]}, "routes[0].methods"),
        ({"paths": ["/a b"]}, "routes[0].paths"),
        ({"host": "*.com"}, "routes[0].host"),
    ],
)
def test_bad_values_name_their_key(change: dict, key: str) -> None:
    doc = policy.Policy(bottle="dev", routes=(ROUTE,)).to_doc()
    doc["routes"][0].update(change)
    with pytest.raises(policy.PolicyError) as info:
        policy.parse_policy(doc, "r.yaml")
    assert str(info.value).startswith(f"r.yaml: {key}: ") and "\n" not in str(info.value)


def test_a_change_in_normal_form_and_what_narrows_it() -> None:
    asked = proposal.validate_change(
        "egress-route", {"host": "*.Example.com", "methods": ["get", "GET"], "schemes": ["HTTPS"]}
    )
    assert asked == {"host": "*.example.com", "ports": [80, 443], "methods": ["GET"], "paths": [], "schemes": ["https"]}
    narrower = {**asked, "host": "api.example.com", "ports": [443]}
    assert proposal.narrower_problem("egress-route", narrower, asked) is None
    wider = proposal.narrower_problem("egress-route", {**asked, "schemes": ["http", "https"]}, asked)
    assert wider is not None and wider.key == "schemes"
    with pytest.raises(proposal.ChangeError) as info:
        proposal.validate_change("egress-route", {"host": "10.1.2.3"})
    assert info.value.key == "host" and "IP address" in info.value.problem
    tool = proposal.validate_change("model-tool", {"host": "api.anthropic.com", "tool": "web_search"})
    assert proposal.summary("model-tool", tool) == "model tool web_search on api.anthropic.com"


def test_the_queue_skips_what_is_not_a_proposal(tmp_path: Path) -> None:
    q = proposal.Queue(tmp_path / layout.QUEUE)
    p = proposal.new_proposal(
        "b-1", "egress-route", proposal.validate_change("egress-route", {"host": "a.example.com"}), "r"
    )
    with q.lock():
        q.write(p)
    (tmp_path / layout.QUEUE / "20261202t000000000-deadbeef.json").write_text("{torn")
    (tmp_path / layout.QUEUE / "not-an-id!.json").write_text("{}")
    (tmp_path / layout.QUEUE / f"{proposal.new_id()}.json").write_text(json.dumps({**p, "id": "other"}))
    assert [x["id"] for x in q.all()] == [p["id"]]
    with pytest.raises(proposal.ChangeError):
        q.path("../../etc/passwd")


@pytest.mark.parametrize(
    "host, words",
    [
        ("*.co.uk", "'co.uk', a public suffix"),
        ("*.github.io", "'github.io', a public suffix"),
        ("*.s3.amazonaws.com", "'s3.amazonaws.com', a public suffix"),
        ("*.com.au", "'com.au', a public suffix"),
        # amazonaws.com is one owner's name, but public suffixes lie beneath it: the wildcard spans them
        ("*.amazonaws.com", "public suffixes such as"),
    ],
)
def test_wildcards_over_a_public_suffix_are_refused_on_both_sides(host: str, words: str) -> None:
    from bottle_tui import proposals
    from bottle_tui.errors import BottleError

    with pytest.raises(proposal.ChangeError) as info:
        proposal.validate_change("egress-route", {"host": host})
    assert (
        info.value.key == "host" and words in info.value.problem and "ask for the hosts you need" in info.value.problem
    )
    with pytest.raises(BottleError, match="change.host: .*ask for the hosts you need"):
        proposals.validate_change("egress-route", {"host": host})  # the host decides with the same rule


@pytest.mark.parametrize(
    "host",
    [
        "*.example.com",
        "*.example.co.uk",
        "*.mysite.github.io",
        "*.mybucket.s3.amazonaws.com",
        "github.io",
        "co.uk",
        "s3.amazonaws.com",
        "api.amazonaws.com",
    ],
)
def test_one_owners_wildcards_and_plain_names_pass(host: str) -> None:
    assert proposal.validate_change("egress-route", {"host": host})["host"] == host


def test_the_public_suffix_list_is_the_pinned_packages() -> None:
    from importlib.metadata import version

    pinned = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert f'"publicsuffixlist=={version("publicsuffixlist")}"' in pinned.read_text()
    assert (
        f'"publicsuffixlist=={version("publicsuffixlist")}"' in (pinned.parent / "sidecars" / "Dockerfile").read_text()
    )
    assert hosts.public_suffix_problem("co.uk") is None  # a plain name is one host, whatever it is


def test_the_queue_keeps_only_the_newest_decided_proposals(tmp_path: Path) -> None:
    q = proposal.Queue(tmp_path / layout.QUEUE)
    change = proposal.validate_change("egress-route", {"host": "a.example.com"})
    made = []
    with q.lock():
        for i in range(6):
            p = proposal.new_proposal("b-1", "egress-route", change, f"r{i}")
            if i != 2:  # one stays pending: never removed
                p.update(
                    status="rejected",
                    decision={
                        "by": "op",
                        "at": f"2026-12-03T00:00:0{i}+00:00",
                        "scope": None,
                        "change": None,
                        "note": "",
                    },
                )
            q.write(p)
            made.append(p["id"])
        assert q.prune_decided(keep=2) == 3
    # which stay, not their order: proposals made in the same millisecond sort by their random tail
    assert {p["id"] for p in q.all()} == {made[2], made[4], made[5]}
    assert q.prune_decided(keep=2) == 0


@pytest.mark.parametrize("raw", ["/%76%31/x", "/v1/x?token=1", "", "/caf%C3%A9", "/%7Euser/file", "/plain"])
def test_a_path_as_route_path_gives_it_is_the_path_egress_matches(raw: str) -> None:
    # supervise's drafts propose route_path(what egress logged): approving one must allow the very
    # request that made it, on a route limited to that path.
    from tests.support.sidecars import egress_module

    routes = egress_module("routes")
    glob = policy.route_path(raw)
    route = policy.Route(host="a.example.com", ports=(443,), paths=(glob,), schemes=("https",))
    doc = policy.Policy(bottle="b", routes=(route,)).to_doc()
    decision = routes.match(policy.parse_policy(doc, "r.yaml"), "GET", "https", "a.example.com", 443, raw or "/")
    assert decision.allowed, decision.reason
