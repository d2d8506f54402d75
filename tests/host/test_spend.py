"""Spend and budgets on the host (issue 19, items 2 and 3): the manifest's budget and ``usage``
route key and config.yaml's prices and default budget, with one-line errors; the metering.json a
plan renders; a budget proposal decided (approve raises, modify sets, reject keeps it closed);
`bottle-tui usage` for running, kept and archived bottles; `ls --json` with each bottle's
totals; stop archives usage.json; the console watcher knows the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bottle_contract import proposal as contract
from bottle_contract.usage import Budget, load_metering, read_usage
from bottle_tui import cli, ops, proposals
from bottle_tui.config import load_config
from bottle_tui.errors import BottleError
from bottle_tui.manifest import ManifestError, Manifests, parse_agent, parse_bottle
from bottle_tui.plan import resolve
from bottle_tui.state import StateDir, archive_dir, changed_file, state_dir
from tests.support.console import info, make_state, write_usage

BOTTLE = Path("bottles/web.md")
MANIFEST = """---
egress:
  routes:
    - host: api.anthropic.com
      auth: {scheme: header, header: x-api-key, token_env: ANTHROPIC_API_KEY}
    - host: llm.example.com
      usage: anthropic
    - host: pypi.org
budget: {usd: 12.5}
---
"""


def bottle(front: str = MANIFEST):
    return parse_bottle(BOTTLE, front)


def test_a_manifest_budget_and_metered_routes() -> None:
    b = bottle()
    assert b.budget == Budget(usd=12.5, tokens=None)
    assert b.metered == ("api.anthropic.com", "llm.example.com")
    assert bottle("---\n---\n").budget is None and bottle("---\n---\n").metered == ("api.anthropic.com",)


@pytest.mark.parametrize(
    ("front", "key", "part"),
    [
        ("budget: {usd: -1}", "budget.usd", "amount of US dollars"),
        ("budget: {tokens: 1.5}", "budget.tokens", "whole number of tokens"),
        ("budget: {}", "budget", "set usd, tokens or both"),
        ("budget: {dollars: 3}", "budget", "unknown key 'dollars'"),
        ("budget: 10", "budget", "expected a mapping"),
        ("egress: {routes: [{host: a.example.com, usage: openai}]}", "egress.routes[0].usage", "unknown usage API"),
    ],
)
def test_bad_budgets_and_usage_keys_are_one_line(front: str, key: str, part: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_bottle(BOTTLE, f"---\n{front}\n---\n")
    message = str(err.value)
    assert "\n" not in message and err.value.key == key and part in message, message


def test_config_prices_override_and_the_default_budget(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "prices:\n  claude-x-1: {input: 1, output: 2, cache_write_5m: 1.25, cache_write_1h: 2, cache_read: 0.1}\n"
        "budget: {tokens: 1000000}\n"
    )
    config = load_config(tmp_path)
    assert config.budget == Budget(tokens=1_000_000) and config.prices[0][0] == "claude-x-1"
    (tmp_path / "config.yaml").write_text("prices:\n  claude-x-1: {input: 1}\n")
    with pytest.raises(BottleError, match=r"config.yaml: prices.claude-x-1: unknown key|missing|output"):
        load_config(tmp_path)
    (tmp_path / "config.yaml").write_text("budget: {usd: free}\n")
    with pytest.raises(BottleError, match=r"config.yaml: budget: usd: must be an amount"):
        load_config(tmp_path)


def plan_of(tmp_path: Path, front: str = MANIFEST, config_text: str = ""):
    agent = parse_agent(Path("agents/coder.md"), "---\nbottle: web\n---\nhi\n")
    manifests = Manifests(
        home=tmp_path, agents={"coder": agent}, bottles={"web": bottle(front)}, agents_from_defaults=False
    )
    (tmp_path / "config.yaml").write_text(config_text)
    return resolve(
        manifests,
        "coder",
        slug="coder-abc123",
        images={"agent": "a:1", "sidecars": "s:1"},
        started_at="",
        state=StateDir(tmp_path / "state" / "coder-abc123"),
        config=load_config(tmp_path),
    )


def test_the_plan_renders_metering_with_the_budget_and_prices(tmp_path: Path) -> None:
    from bottle_tui.backends.docker.compose import render_compose, render_metering

    plan = plan_of(
        tmp_path,
        config_text="budget: {usd: 99}\nprices:\n  claude-x-1: {input: 1, output: 2, cache_write_5m: 1.25, cache_write_1h: 2, cache_read: 0.1}\n",
    )
    doc = render_metering(plan)
    assert doc["slug"] == "coder-abc123" and doc["budget"] == {"usd": 12.5, "tokens": None}  # the manifest's wins
    assert [m["host"] for m in doc["metered"]] == ["api.anthropic.com", "llm.example.com"]
    assert "claude-x-1" in doc["prices"] and "claude-sonnet-4-5" in doc["prices"]
    mounts = [v["target"] for v in render_compose(plan, host_uid=1, host_gid=1)["services"]["sidecars"]["volumes"]]
    assert "/state/supervise" in mounts  # egress queues the budget proposal there
    plain = plan_of(tmp_path, front="---\nsupervise: {enabled: false}\n---\n", config_text="budget: {usd: 99}\n")
    assert render_metering(plain)["budget"] == {"usd": 99.0, "tokens": None}  # config.yaml's default
    assert "budget     $99.00" in ops.describe(plain)


# --- deciding a budget proposal ----------------------------------------------------------------------


@pytest.fixture
def metered(tmp_path: Path):
    from bottle_contract.files import atomic_write
    from bottle_tui.backends.docker.compose import render_metering

    home = tmp_path / "home"
    plan = plan_of(tmp_path)
    state = make_state(home, "coder-abc123")
    atomic_write(state.metering, json.dumps(render_metering(plan)))
    p = contract.new_proposal(
        state.slug,
        "budget",
        {"usd": 25.0, "tokens": None},
        "spent $12.60 of $12.50",
        budget={"usd": 12.5, "tokens": None},
    )
    q = contract.Queue(state.queue)
    with q.lock():  # creates the folder, as supervise's first proposal would
        q.write(p)
    return home, state, p["id"]


def test_approving_a_budget_raises_it_and_modify_sets_the_amount(metered) -> None:
    home, state, pid = metered
    d = proposals.decide(home, pid, "approve", by="op")
    assert d.policy_changed and load_metering(state.metering).budget == Budget(usd=25.0)
    p2 = contract.new_proposal(
        state.slug, "budget", {"usd": 50.0, "tokens": None}, "", budget={"usd": 25.0, "tokens": None}
    )
    contract.Queue(state.queue).write(p2)
    proposals.decide(home, p2["id"], "modify", by="op", change={"usd": 30, "tokens": 2000000})
    assert load_metering(state.metering).budget == Budget(usd=30.0, tokens=2_000_000)
    with pytest.raises(BottleError, match="change.usd: must be an amount"):
        proposals.validate_change("budget", {"usd": "lots"})


def test_show_says_what_approving_a_budget_does(metered, capsys) -> None:
    home, state, pid = metered
    assert cli.main(["--home", str(home), "proposals", "show", pid]) == 0
    out = capsys.readouterr().out
    assert "raise the budget to $25.00" in out
    assert "metering.json: the budget goes from $12.50 to $25.00" in out
    assert cli.main(["--home", str(home), "proposals", "approve", pid]) == 0
    assert "(metering.json updated)" in capsys.readouterr().err


def test_rejecting_a_budget_keeps_it_closed_with_the_note(metered) -> None:
    home, state, pid = metered
    before = state.metering.read_text()
    d = proposals.decide(home, pid, "reject", by="op", note="enough for today")
    assert not d.policy_changed and state.metering.read_text() == before
    assert d.proposal.data["decision"]["note"] == "enough for today"
    assert proposals.load(state.queue / f"{pid}.json").summary() == "raise the budget to $25.00"


# --- seeing it --------------------------------------------------------------------------------------


def test_usage_lists_running_kept_and_archived_bottles(tmp_path: Path, capsys) -> None:
    home = tmp_path / "home"
    write_usage(home, "coder-aaaaaa", output_tokens=1000, budget=Budget(usd=1.0))
    write_usage(home, "coder-bbbbbb", output_tokens=5, model="claude-future-9")
    (state_dir(home, "coder-bbbbbb").preserve_marker).write_text("")
    write_usage(home, "coder-cccccc", output_tokens=7)
    state_dir(home, "coder-cccccc").archive_to(archive_dir(home, "coder-cccccc"))
    state_dir(home, "coder-cccccc").remove()
    found = {u.slug: u.where for u in ops.usage(home)}
    assert found == {"coder-aaaaaa": "running", "coder-bbbbbb": "kept", "coder-cccccc": "archived"}
    assert cli.main(["--home", str(home), "usage"]) == 0
    out = capsys.readouterr().out
    assert "claude-sonnet-4-5-20250929" in out and "price unknown" in out and "of $1.00" in out
    assert cli.main(["--home", str(home), "usage", "coder-cccccc", "--json"]) == 0
    [doc] = json.loads(capsys.readouterr().out)
    assert doc["where"] == "archived" and doc["models"]["claude-sonnet-4-5-20250929"]["output_tokens"] == 7
    assert cli.main(["--home", str(home), "usage", "coder-zzzzzz"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no usage recorded for 'coder-zzzzzz'" in err


def test_ls_json_carries_each_bottles_totals(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_usage(home, "coder-aaaaaa", output_tokens=1000)
    [one, other] = ops.bottles_json([info("coder-aaaaaa"), info("coder-bbbbbb")], home)
    assert one["usage"]["totals"]["output_tokens"] == 1000 and one["usage"]["budget"] is None
    assert other["usage"] is None and one["slug"] == "coder-aaaaaa"


def test_the_watcher_knows_usage_files(tmp_path: Path) -> None:
    state = state_dir(tmp_path, "coder-aaaaaa")
    assert changed_file(tmp_path, state.usage) == ("usage", state)
    assert read_usage(state.usage) is None


def test_spend_cells(tmp_path: Path) -> None:
    write_usage(tmp_path, "a-1", output_tokens=48_000, budget=Budget(usd=0.5))
    u = ops.usage(tmp_path, "a-1")[0]
    assert ops.spend_cell(u) == "199.2k tok · $0.77 of $0.50 (reached)"
    assert ops.spend_cell(None) == "-"


# --- the console -------------------------------------------------------------------------------------


async def test_the_console_shows_spend_live_and_approves_a_budget_without_a_scope(tmp_path: Path) -> None:
    from bottle_contract.files import atomic_write
    from bottle_tui.backends.docker.compose import render_metering
    from bottle_tui.console.messages import UsageRead
    from bottle_tui.console.screens import ConfirmScreen
    from tests.support.console import FakeEngine, make_app, rows, text_of, until, write_proposal

    home = tmp_path / "home"
    slug = "coder-abc123"
    state = make_state(home, slug)
    atomic_write(state.metering, json.dumps(render_metering(plan_of(tmp_path))))
    write_usage(home, slug, output_tokens=1000, budget=Budget(usd=12.5))
    p = write_proposal(home, slug, kind="budget", change={"usd": 25.0, "tokens": None}, reason="spent")
    fake = FakeEngine()
    fake.bottles = [info(slug)]
    app = make_app(home, fake)
    async with app.run_test(size=(170, 30)) as pilot:
        await until(pilot, lambda: rows(app, "bottles") and app.proposals_pane.loaded, "the first load")
        assert rows(app, "bottles")[0][7] == "152.2k tok · $0.06 of $12.50"
        assert "$0.06 spent" in text_of(app, "#engine")
        # egress rewrote usage.json: the watcher's message updates the cell and the header
        write_usage(home, slug, output_tokens=900_000, budget=Budget(usd=12.5))
        app.agents_pane.post_message(UsageRead({slug: ops.usage(home, slug)[0]}))
        await until(pilot, lambda: "$13.55" in rows(app, "bottles")[0][7], "the new spend")
        assert rows(app, "bottles")[0][7] == "1.1M tok · $13.55 of $12.50 (reached)"  # the cell widened
        assert "$13.55 spent" in text_of(app, "#engine")
        await pilot.press("tab", "a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirm (no scope question)")
        await pilot.press("y")
        await until(pilot, lambda: proposals.load(p.path).status == "approved", "the decision")
    assert load_metering(state.metering).budget == Budget(usd=25.0)
