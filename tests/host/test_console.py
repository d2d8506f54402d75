"""The console driven by Pilot: every key and flow that needs no engine, on fixed discovery data
(a fake engine at the docker CLI boundary) and real proposal files decided by the real library."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from bottle_tui import proposals
from bottle_tui.backends.docker.engine import EngineStatus
from bottle_tui.console import keys
from bottle_tui.console.messages import ProposalsLoaded
from bottle_tui.console.panes import AgentsPane, ProposalsPane
from bottle_tui.console.screens import (
    ConfirmScreen,
    EditorScreen,
    LogScreen,
    NoteScreen,
    PickerScreen,
    ProposalDetail,
    ScopeScreen,
)
from bottle_tui.console.settings import console_settings
from bottle_tui.errors import BottleError
from tests.support.console import (
    FakeEngine,
    info,
    make_app,
    make_state,
    rows,
    text_of,
    until,
    write_proposal,
    write_status,
)

SLUG = "implementer-aaaaaa"


async def loaded(pilot, app) -> None:
    await until(pilot, lambda: app.proposals_pane.loaded and app.versions is not None, "the first load")


# --- layout -------------------------------------------------------------------------------------


async def test_header_counts_both_panes_and_in_place_updates(home: Path, fake: FakeEngine) -> None:
    write_proposal(home, SLUG)
    app = make_app(home, fake)
    async with app.run_test(size=(140, 30)) as pilot:
        await loaded(pilot, app)
        header = text_of(app, "#engine")
        assert "2 agents · 1 pending proposal · engine 20.10.24 · compose 2.40.3" == header
        agents = rows(app, "bottles")
        assert [r[0] for r in agents] == [SLUG, "reviewer-bbbbbb"]
        assert agents[0][1:7] == ["implementer", "docker", "1h ago", "up", "1", "agent running"]
        assert agents[1][4] == "created"  # sidecars not up yet
        table = app.query_one("#bottles")
        await pilot.press("j")
        assert table.cursor_row == 1
        row_obj = table.rows[next(iter(table.rows))]
        # One bottle stops, another appears: rows change in place and unchanged rows are kept.
        fake.bottles = [info("reviewer-bbbbbb"), info("reviewer-cccccc", agent="reviewer")]
        await pilot.press("f5")
        await until(
            pilot,
            lambda: [r[0] for r in rows(app, "bottles")] == ["reviewer-bbbbbb", "reviewer-cccccc"],
            "the new rows",
        )
        assert rows(app, "bottles")[0][4] == "up"
        assert row_obj is not None and "2 agents" in text_of(app, "#engine")
        await pilot.press("q")
    assert app.return_code == 0


async def test_tab_switches_panes_each_keeping_its_cursor(home: Path, fake: FakeEngine) -> None:
    for i in range(3):
        write_proposal(home, SLUG, host=f"h{i}.example.org", created_at=f"2026-11-27T07:5{i}:00.000+00:00")
    app = make_app(home, fake)
    async with app.run_test(size=(140, 30)) as pilot:
        await loaded(pilot, app)
        agents, props = app.query_one("#bottles"), app.query_one("#proposals")
        assert app.focused is agents
        await pilot.press("down")
        await pilot.press("tab")
        assert app.focused is props
        await pilot.press("j", "j")
        assert props.cursor_row == 2
        await pilot.press("k")
        assert props.cursor_row == 1
        await pilot.press("tab")
        assert app.focused is agents and agents.cursor_row == 1
        await pilot.press("up")
        assert agents.cursor_row == 0
        await pilot.press("tab")
        assert props.cursor_row == 1


async def test_footer_offers_only_the_keys_that_do_something(home: Path, fake: FakeEngine) -> None:
    write_proposal(home, SLUG)
    app = make_app(home, fake)
    async with app.run_test(size=(160, 30)) as pilot:
        await loaded(pilot, app)

        def active() -> set[str]:
            return {b.binding.action.removeprefix("app.") for b in app.screen.active_bindings.values() if b.enabled}

        on_agents = active()
        assert {"stop", "edit_routes", "logs", "open", "new_agent"} <= on_agents
        assert not {"approve", "modify", "reject"} & on_agents
        await pilot.press("tab")
        on_proposals = active()
        assert {"approve", "modify", "reject", "open"} <= on_proposals
        assert not {"stop", "edit_routes", "logs"} & on_proposals
        # With nothing to act on, the row keys go.
        fake.bottles = []
        await pilot.press("tab", "f5")
        await until(pilot, lambda: not rows(app, "bottles"), "the empty agents pane")
        assert not {"stop", "logs", "open"} & active()
        assert "press n to start one" in text_of(app, "#hint")


async def test_engine_down_banner_recovers(home: Path, fake: FakeEngine) -> None:
    fake.status = EngineStatus(False, problem="no Docker engine answers (connection refused): run `make engine`")
    app = make_app(home, fake)
    async with app.run_test(size=(120, 20)) as pilot:
        await until(pilot, lambda: app.query_one("#engine").has_class("-down"), "the banner")
        line = text_of(app, "#engine")
        assert "no Docker engine answers" in line and "make engine" in line
        assert rows(app, "bottles") == []
        assert app.check_action("new_agent", ()) is None  # shown, greyed out
        fake.status = EngineStatus(True, "20.10.24", "2.40.3")
        await pilot.press("f5")
        await until(pilot, lambda: not app.query_one("#engine").has_class("-down"), "recovery")
        assert "engine 20.10.24" in text_of(app, "#engine") and len(rows(app, "bottles")) == 2
        await pilot.press("q")
    assert app.return_code == 0


class BrokenEngine(FakeEngine):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    async def engine_status(self) -> EngineStatus:
        raise self.error


async def test_any_worker_error_is_a_banner_not_an_exit(home: Path) -> None:
    from bottle_tui.runner import CommandError

    for error in (
        CommandError(["docker", "compose", "version"], None, "", "timed out after 15 s"),
        json.JSONDecodeError("Expecting value", "", 0),
        RuntimeError("boom"),
    ):
        fake = BrokenEngine(error)
        fake.bottles = [info(SLUG)]
        app = make_app(home, fake)
        async with app.run_test(size=(120, 20)) as pilot:
            await until(pilot, lambda: app.query_one("#engine").has_class("-down"), "the banner")  # noqa: B023 - awaited here
            assert app.is_running
            assert "engine:" in text_of(app, "#engine")


async def test_labels_and_agent_text_are_inert(home: Path, fake: FakeEngine) -> None:
    fake.bottles = [info("x-000000", agent="[bold red]evil[/]\x1b[2J")]
    write_proposal(home, "x-000000", reason="[link=http://x]click[/link]\x1b]8;;evil\x07 and more\nsecond line")
    app = make_app(home, fake)
    async with app.run_test(size=(160, 20)) as pilot:
        await loaded(pilot, app)
        agent = rows(app, "bottles")[0][1]
        reason = rows(app, "proposals")[0][3]
        assert agent.startswith("[bold red]evil[/]") and "\x1b" not in agent
        assert reason.startswith("[link=http://x]click[/link]") and "\x1b" not in reason and "\x07" not in reason
        assert "second line" not in reason  # first line only
        for table_id in ("bottles", "proposals"):
            table = app.query_one(f"#{table_id}")
            shown = "\n".join(table.render_line(y).text for y in range(table.size.height))
            assert "\x1b" not in shown


# --- proposals pane -----------------------------------------------------------------------------


async def test_proposal_rows_mark_drafts_and_show_age(home: Path, fake: FakeEngine) -> None:
    write_proposal(home, SLUG, host="a.example.org", created_at="2026-11-27T07:55:00.000+00:00")
    write_proposal(home, SLUG, host="b.example.org", draft=True, created_at="2026-11-27T07:59:30.000+00:00")
    app = make_app(home, fake)
    async with app.run_test(size=(160, 20)) as pilot:
        await loaded(pilot, app)
        shown = rows(app, "proposals")
        assert [r[0] for r in shown] == [SLUG, SLUG]
        assert shown[0][1:3] == ["egress-route", "GET a.example.org:443 /simple/*"]
        assert shown[0][4:] == ["5m", "pending"]
        assert shown[1][4:] == ["30s", "draft x1"]


async def test_enter_opens_the_detail_with_reason_policy_diff_and_history(home: Path, fake: FakeEngine) -> None:
    write_proposal(home, SLUG, reason="pip install needs the index\nsecond paragraph [b]x[/b]")
    app = make_app(home, fake)
    async with app.run_test(size=(160, 50)) as pilot:
        await loaded(pilot, app)
        await pilot.press("tab", "enter")
        await until(pilot, lambda: isinstance(app.screen, ProposalDetail), "the detail screen")
        body = "\n".join(str(w.render()) for w in app.screen.query(".section"))
        assert "pip install needs the index\nsecond paragraph [b]x[/b]" in body
        assert "+- host: pypi.example.org" in body and "routes.yaml (in force)" in body and "+  - /simple/*" in body
        assert "asked" in body
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ProposalDetail), "the detail to close")
        assert len(rows(app, "proposals")) == 1


async def test_approve_asks_once_or_always_and_updates_the_policy(home: Path, fake: FakeEngine) -> None:
    p = write_proposal(home, SLUG)
    app = make_app(home, fake)
    async with app.run_test(size=(160, 30)) as pilot:
        await loaded(pilot, app)
        await pilot.press("tab", "a")
        await until(pilot, lambda: isinstance(app.screen, ScopeScreen), "the scope question")
        await pilot.press("escape")  # cancelled: still pending
        await until(pilot, lambda: not isinstance(app.screen, ScopeScreen), "the question to close")
        assert proposals.load(p.path).pending
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ScopeScreen), "the scope question")
        await pilot.press("o")
        await until(pilot, lambda: not rows(app, "proposals"), "the row to go")
        decided = proposals.load(p.path)
        assert decided.status == "approved" and decided.data["decision"]["scope"] == "once"
        assert decided.data["decision"]["by"].endswith("(console)")
        _, doc = proposals.read_policy(make_state(home, SLUG))
        assert any(r["host"] == "pypi.example.org" for r in doc["routes"])
        assert "0 pending proposals" in text_of(app, "#engine")


async def test_approve_from_the_detail_screen(home: Path, fake: FakeEngine) -> None:
    p = write_proposal(home, SLUG)
    app = make_app(home, fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot, app)
        await pilot.press("tab", "enter")
        await until(pilot, lambda: isinstance(app.screen, ProposalDetail), "the detail")
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ScopeScreen), "the scope question")
        await pilot.press("a")
        await until(pilot, lambda: proposals.load(p.path).status == "approved", "the decision")
        assert proposals.load(p.path).data["decision"]["scope"] == "always"


async def test_modify_validates_in_the_editor_and_only_narrows(home: Path, fake: FakeEngine) -> None:
    p = write_proposal(home, SLUG)
    app = make_app(home, fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot, app)
        await pilot.press("tab", "m")
        await until(pilot, lambda: isinstance(app.screen, EditorScreen), "the editor")
        editor = app.screen.query_one("TextArea")
        assert yaml.safe_load(editor.text) == p.change
        wider = dict(p.change, host="evil.example.org")
        editor.text = yaml.safe_dump(wider)
        await pilot.press("ctrl+s")
        await pilot.pause()
        error = text_of(app, "#editor-error")
        assert "change.host" in error and "not within" in error
        assert isinstance(app.screen, EditorScreen)
        editor.text = "host: [unclosed"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "invalid YAML" in text_of(app, "#editor-error")
        editor.text = yaml.safe_dump(dict(p.change, paths=["/simple/requests/*"]))
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ScopeScreen), "the scope question")
        await pilot.press("a")
        await until(pilot, lambda: proposals.load(p.path).status == "modified", "the decision")
        assert proposals.load(p.path).data["decision"]["change"]["paths"] == ["/simple/requests/*"]


async def test_reject_sends_a_note(home: Path, fake: FakeEngine) -> None:
    p = write_proposal(home, SLUG)
    app = make_app(home, fake)
    async with app.run_test(size=(160, 30)) as pilot:
        await loaded(pilot, app)
        await pilot.press("tab", "r")
        await until(pilot, lambda: isinstance(app.screen, NoteScreen), "the note")
        await pilot.press(*"use the mirror", "enter")
        await until(pilot, lambda: proposals.load(p.path).status == "rejected", "the decision")
        assert proposals.load(p.path).data["decision"]["note"] == "use the mirror"
        assert not rows(app, "proposals")


async def test_already_decided_elsewhere_says_so(home: Path, fake: FakeEngine) -> None:
    p = write_proposal(home, SLUG)
    app = make_app(home, fake)
    async with app.run_test(size=(160, 30)) as pilot:
        await loaded(pilot, app)
        await pilot.press("tab", "r")
        await until(pilot, lambda: isinstance(app.screen, NoteScreen), "the note")
        proposals.decide(home, p.id, "reject", by="someone (cli)", note="no")
        await pilot.press("enter")
        await until(
            pilot,
            lambda: any("already rejected by someone" in str(n.message) for n in app._notifications),
            "the warning",
        )
        assert not rows(app, "proposals")


async def test_a_new_proposal_alerts_but_startup_does_not(home: Path, fake: FakeEngine) -> None:
    write_proposal(home, SLUG, host="old.example.org", created_at="2026-11-27T07:00:00.000+00:00")
    app = make_app(home, fake, watch_files=True)
    async with app.run_test(size=(160, 30)) as pilot:
        await loaded(pilot, app)
        await pilot.pause(0.3)  # the watch is armed
        assert app.bells == 0 and not app._notifications
        assert app.focused is app.query_one("#bottles")
        await asyncio.to_thread(write_proposal, home, SLUG, host="new.example.org", reason="[red]x[/red]")
        props = app.query_one("#proposals")
        await until(pilot, lambda: len(rows(app, "proposals")) == 2, "the new row (through the file watch)")
        assert app.bells == 1
        assert app.focused is props and props.cursor_row == 1 and props.has_class("-alert")
        assert any(n.title == "New proposal" and "new.example.org" in n.message for n in app._notifications)
        # A decision made elsewhere (the CLI) takes the row away through the same watch.
        await asyncio.to_thread(proposals.decide, home, app.proposals_pane.selected().id, "reject", by="cli")
        await until(pilot, lambda: len(rows(app, "proposals")) == 1, "the decided row to go")
        assert app.bells == 1


async def test_a_file_event_before_the_first_full_load_does_not_ring(home: Path, fake: FakeEngine) -> None:
    p = write_proposal(home, SLUG, host="queued.example.org", created_at="2026-11-27T07:00:00.000+00:00")
    q = write_proposal(home, SLUG, host="also-queued.example.org", created_at="2026-11-27T07:01:00.000+00:00")
    app = make_app(home, fake)
    async with app.run_test(size=(160, 30)) as pilot:
        await loaded(pilot, app)
        # Replay startup in the order a race can give: a watch event for one queued proposal
        # (its lock file touched, say) lands before the first full load.
        app.proposals_pane.loaded, app.proposals_pane.seen = False, set()
        loaded_p = proposals.load(p.path)
        loaded_q = proposals.load(q.path)
        app.proposals_pane.post_message(ProposalsLoaded({loaded_p.id: loaded_p}, {loaded_p.id}))
        app.proposals_pane.post_message(ProposalsLoaded({loaded_p.id: loaded_p, loaded_q.id: loaded_q}))
        await pilot.pause()
        assert app.bells == 0 and not app._notifications


# --- agents pane --------------------------------------------------------------------------------


async def test_another_homes_bottles_are_marked_with_their_home(home: Path, fake: FakeEngine, tmp_path: Path) -> None:
    import dataclasses

    other = tmp_path / "elsewhere" / "home"
    home.mkdir(parents=True)
    fake.bottles = [
        dataclasses.replace(info(SLUG), home=str(home)),
        dataclasses.replace(info("reviewer-bbbbbb", agent="reviewer"), home=str(other)),
        info("legacy-cccccc", agent="legacy"),
    ]  # no home label (started before there was one): not marked
    app = make_app(home, fake)
    async with app.run_test(size=(180, 30)) as pilot:
        await loaded(pilot, app)
        agents = {r[0]: r[1] for r in rows(app, "bottles")}
        assert agents[SLUG] == "implementer" and agents["legacy-cccccc"] == "legacy"
        assert agents["reviewer-bbbbbb"].startswith("reviewer (home ") and agents["reviewer-bbbbbb"].endswith(
            "elsewhere/home)"
        )


async def test_agent_status_from_the_hooks_file(home: Path, fake: FakeEngine) -> None:
    write_status(home, SLUG, "waiting", event="Notification\x1b[2J[b]")
    write_status(home, "reviewer-bbbbbb", "working", since="2026-11-27T07:58:00+00:00")
    app = make_app(home, fake, watch_files=True)
    async with app.run_test(size=(160, 30)) as pilot:
        await loaded(pilot, app)
        await until(pilot, lambda: rows(app, "bottles")[0][6] == "waiting for input 30s", "the status column")
        assert rows(app, "bottles")[1][6] == "working 2m"
        assert app.query_one("#bottles").has_class("-alert") and app.bells == 0  # waiting already at startup
        assert "1 waiting for input" in text_of(app, "#engine")
        await pilot.pause(0.3)
        write_status(home, SLUG, "ended", since="2026-11-27T07:59:59+00:00", event="SessionEnd")
        await until(pilot, lambda: rows(app, "bottles")[0][6] == "ended 1s", "the new status through the watch")
        assert not app.query_one("#bottles").has_class("-alert")
        write_status(home, SLUG, "waiting", since="2026-11-27T07:59:59+00:00")
        await until(pilot, lambda: app.bells == 1, "the bell for a new wait")
        assert app.query_one("#bottles").has_class("-alert")
        assert any(n.title == "Waiting" for n in app._notifications)


async def test_picker_filters_and_esc_clears_then_closes(home: Path, fake: FakeEngine) -> None:
    app = make_app(home, fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await loaded(pilot, app)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, PickerScreen), "the picker")
        options = app.screen.query_one("OptionList")
        labels = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert labels and labels[0].startswith("implementer (1 running)")
        await pilot.press(*"zzz")
        assert options.option_count == 0
        await pilot.press("escape")
        assert isinstance(app.screen, PickerScreen) and app.screen.query_one("Input").value == ""
        assert options.option_count == len(labels)
        await pilot.press(*"impl")
        assert options.option_count == 1
        await pilot.press("escape", "escape")
        await until(pilot, lambda: not isinstance(app.screen, PickerScreen), "the picker to close")


async def test_picker_then_preflight_no_starts_nothing(home: Path, fake: FakeEngine) -> None:
    app = make_app(home, fake)
    async with app.run_test(size=(140, 50)) as pilot:
        await loaded(pilot, app)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, PickerScreen), "the picker")
        await pilot.press(*"impl", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the preflight")
        body = str(app.screen.query_one(".section").render())
        assert "agent      implementer" in body and "egress" in body and "claude     claude" in body
        await pilot.press("n")
        await until(pilot, lambda: len(app.screen_stack) == 1, "the preflight to close")
        assert not (home / "state").exists() or not any((home / "state").iterdir())


async def test_n_runs_the_backends_preflight_before_anything_starts(
    tmp_path: Path, fake: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console's start is ops.start, as the CLI's: a microVM bottle on a host where microVMs do
    not boot stops at smolvm's preflight (its one line in the log and a notification) before an
    image is looked at or a state folder made. The real smolvm CLI (pinned wheel) answers the
    version check; the probe's answer for this host is the cached one written here."""
    from bottle_tui.backends.smolvm.probe import CACHE_ENV, host_key
    from bottle_tui.backends.smolvm.smolvm_cli import Smolvm
    from tests.support.manifests import AGENT, BOTTLE

    try:
        version = ".".join(map(str, await Smolvm.find().version()))
    except BottleError as exc:
        pytest.skip(f"needs the smolvm CLI from the pinned wheel (pip install -e '.[test]'): {exc}")
    cache = tmp_path / "probe.json"
    cache.write_text(
        json.dumps(
            {
                "ok": False,
                "reason": "no /dev/kvm (written by this test)",
                "host": host_key(),
                "smolvm": version,
                "checked_at": "2026-01-01T00:00:00+00:00",
            }
        )
    )
    monkeypatch.setenv(CACHE_ENV, str(cache))
    home = tmp_path / "home"
    (home / "agents").mkdir(parents=True)
    (home / "bottles").mkdir()
    (home / "agents" / "coder.md").write_text(AGENT)
    (home / "bottles" / "web.md").write_text(BOTTLE.replace("description: a bottle for the tests", "backend: smolvm"))
    app = make_app(home, fake)
    async with app.run_test(size=(140, 50)) as pilot:
        await loaded(pilot, app)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, PickerScreen), "the picker")
        await pilot.press(*"coder", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the plan")
        await pilot.press("y")
        await until(pilot, lambda: any(n.title == "Start" for n in app._notifications), "the start to fail", timeout=30)
        message = next(n.message for n in app._notifications if n.title == "Start")
        assert "smolvm cannot start here: microVMs cannot boot on this host: no /dev/kvm" in message
        assert isinstance(app.screen, LogScreen)
        assert not (home / "state").exists() or not any((home / "state").iterdir())
        assert not (home / "images.log").exists()


async def test_stop_asks_first_and_no_keeps_the_bottle(home: Path, fake: FakeEngine) -> None:
    app = make_app(home, fake)
    async with app.run_test(size=(140, 30)) as pilot:
        await loaded(pilot, app)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirm")
        assert f"Stop {SLUG}?" in str(app.screen.query_one(".dialog-title").render())
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, "the confirm to close")
        assert len(rows(app, "bottles")) == 2


async def test_edit_routes_validates_and_saves_through_the_library(home: Path, fake: FakeEngine) -> None:
    state = make_state(home, SLUG)
    app = make_app(home, fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await loaded(pilot, app)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, EditorScreen), "the routes editor")
        editor = app.screen.query_one("TextArea")
        before = editor.text
        assert "api.anthropic.com" in before
        editor.text = before.replace("  - 443", "  - 0")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "routes[0].ports" in text_of(app, "#editor-error")
        editor.text = before.replace("api.anthropic.com", "api.example.com")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "api.example.com" in proposals.read_policy(state)[0], "the saved policy")
        audit = (state.path / "audit.jsonl").read_text()
        assert '"kind": "policy-edit"' in audit


async def test_dlp_key_opens_the_policy_with_its_dlp_settings(home: Path, fake: FakeEngine) -> None:
    make_state(home, SLUG)
    app = make_app(home, fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await loaded(pilot, app)
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, EditorScreen), "the policy editor")
        text = app.screen.query_one("TextArea").text
        assert "dlp:" in text and "max_body_bytes" in text


async def test_logs_and_attach_keys_open_their_views(home: Path, fake: FakeEngine) -> None:
    app = make_app(home, fake)
    async with app.run_test(size=(140, 30)) as pilot:
        await loaded(pilot, app)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogScreen), "the log view")
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, "the log to close")
        # Headless there is no terminal to hand over: the console says what to run instead.
        await pilot.press("enter")
        await until(
            pilot,
            lambda: any("bottle-tui attach" in n.message or n.title == "Attach" for n in app._notifications),
            "the attach answer",
        )


# --- keys, palette, themes ----------------------------------------------------------------------


async def test_keymap_from_config_remaps_a_binding(home: Path, fake: FakeEngine) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text("keymap:\n  approve: A\n  reject: ctrl+r\ntheme: bottle-light\n")
    theme, keymap = console_settings(home, None)
    assert theme == "bottle-light" and keymap == {"approve": "A", "reject": "ctrl+r"}
    p = write_proposal(home, SLUG)
    app = make_app(home, fake, theme=theme, keymap=keymap)
    async with app.run_test(size=(140, 30)) as pilot:
        await loaded(pilot, app)
        assert app.theme == "bottle-light"
        await pilot.press("tab", "a")
        await pilot.pause(0.1)
        assert len(app.screen_stack) == 1  # a no longer approves
        await pilot.press("A")
        await until(pilot, lambda: isinstance(app.screen, ScopeScreen), "approve on its new key")
        await pilot.press("a")
        await until(pilot, lambda: proposals.load(p.path).status == "approved", "the decision")


def test_bad_keymap_and_theme_are_one_line_errors(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text("keymap:\n  aprove: A\n")
    with pytest.raises(BottleError, match=r"config.yaml: keymap.aprove: unknown binding id; use one of: quit"):
        console_settings(home, None)
    (home / "config.yaml").write_text("keymap: [a]\n")
    with pytest.raises(BottleError, match=r"config.yaml: keymap: expected a mapping"):
        console_settings(home, None)
    (home / "config.yaml").write_text("theme: nope\n")
    with pytest.raises(BottleError, match=r"config.yaml: theme: unknown theme 'nope'"):
        console_settings(home, None)
    (home / "config.yaml").write_text("")
    with pytest.raises(BottleError, match=r"--theme: unknown theme 'nah'"):
        console_settings(home, "nah")
    assert console_settings(home, "bottle-dark") == ("bottle-dark", {})


async def test_palette_offers_every_action(home: Path, fake: FakeEngine) -> None:
    from bottle_tui.console.commands import ConsoleCommands

    write_proposal(home, SLUG)
    app = make_app(home, fake)
    async with app.run_test(size=(140, 30)) as pilot:
        await loaded(pilot, app)
        provider = ConsoleCommands(app.screen)
        found = [hit.text async for hit in provider.discover()]
        for action in (
            "approve",
            "modify",
            "reject",
            "new_agent",
            "stop",
            "edit_routes",
            "edit_dlp",
            "logs",
            "quit",
            "switch_pane",
            "open",
        ):
            assert any(keys.DESCRIPTIONS[action] in text for text in found), action
        hits = [hit async for hit in provider.search("new agent")]
        assert hits
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"start a new agent")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, PickerScreen), "the picker from the palette")


def test_every_main_binding_has_a_stable_id() -> None:
    ids = [b.id for b in keys.ALL]
    assert None not in ids and len(set(ids)) == len(ids)
    assert set(keys.DESCRIPTIONS) == {keys.action_name(b) for b in keys.ALL}
    # Each pane binds its keys from the one list (so a keymap entry remaps it in both panes); the
    # hidden twin of d (a bottle without git) shares its id, so one keymap entry moves both.
    for pane in (ProposalsPane, AgentsPane):
        assert all(b in keys.ALL or (b.id in ids and not b.show) for b in pane.BINDINGS)


async def test_editor_says_why_it_cannot_hand_over(
    home: Path, fake: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_proposal(home, SLUG)
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.delenv("EDITOR", raising=False)
    app = make_app(home, fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await loaded(pilot, app)
        await pilot.press("tab", "m")
        await until(pilot, lambda: isinstance(app.screen, EditorScreen), "the editor")
        await pilot.press("ctrl+e")
        await pilot.pause()
        assert "set $EDITOR" in text_of(app, "#editor-error")
        monkeypatch.setenv("EDITOR", "true")
        await pilot.press("ctrl+e")
        await pilot.pause()
        assert "cannot hand over" in text_of(app, "#editor-error")  # headless: no terminal to suspend
