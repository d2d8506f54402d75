"""The console's snapshots, driven by Pilot: `s` snapshots the selected agent in a worker and says
where it went (or the one line why not); the start picker offers the home's snapshots after the
agents, and picking one shows a fork's plan (the real ops.plan on a real snapshot folder)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bottle_tui import ops
from bottle_tui.console.screens import ConfirmScreen, PickerScreen
from bottle_tui.errors import BottleError
from bottle_tui.snapshots import Snapshot
from tests.support.console import FakeEngine, info, make_app, until
from tests.support.snapshots import write_snapshot

SLUG = "implementer-aaaaaa"


@pytest.fixture
def fake() -> FakeEngine:
    f = FakeEngine()
    f.bottles = [info(SLUG), info("reviewer-bbbbbb", agent="reviewer")]
    return f


async def loaded(pilot, app) -> None:
    await until(pilot, lambda: app.proposals_pane.loaded and app.versions is not None, "the first load")


def notified(app, title: str) -> list[str]:
    return [n.message for n in app._notifications if n.title == title]


async def test_s_snapshots_the_selected_agent_in_a_worker_and_says_where(tmp_path: Path, fake: FakeEngine) -> None:
    home = tmp_path / "home"
    taken: list[tuple[Path, str]] = []
    release = asyncio.Event()

    async def snapshot(home_: Path, slug: str, progress) -> Snapshot:
        taken.append((home_, slug))
        await release.wait()  # the UI goes on meanwhile
        return write_snapshot(home_, f"{slug}-20261204-010203", agent="implementer")

    app = make_app(home, fake, snapshot=snapshot)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot, app)
        await pilot.press("s")
        await until(pilot, lambda: taken == [(home, SLUG)], "the snapshot to start")
        assert notified(app, "Snapshot") == [f"snapshotting {SLUG} (its agent pauses meanwhile)…"]
        await pilot.press("s")  # a second s while it runs takes no second snapshot
        await pilot.press("j")
        assert app.agents_pane.selected().slug == "reviewer-bbbbbb"  # the UI did not wait
        release.set()
        await until(pilot, lambda: notified(app, "Snapshot saved"), "the snapshot's notification")
        folder = home / "snapshots" / f"{SLUG}-20261204-010203"
        assert notified(app, "Snapshot saved") == [
            f"snapshot {SLUG}-20261204-010203 of implementer-abc123: image bottle-tui/snapshot:{SLUG}-20261204-010203, "
            f"home and policy in {folder}; n then the snapshot starts a fork"
        ]
        assert taken == [(home, SLUG)]
        assert f"a snapshot of {SLUG} is being taken already" in notified(app, "Snapshot")


async def test_a_snapshot_that_cannot_be_taken_says_why_in_one_line(tmp_path: Path, fake: FakeEngine) -> None:
    async def snapshot(home_: Path, slug: str, progress) -> Snapshot:
        raise BottleError(f"{slug} is a microVM bottle: snapshots need a docker bottle\x1b[2J")

    app = make_app(tmp_path / "home", fake, snapshot=snapshot)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot, app)
        await pilot.press("s")
        await until(pilot, lambda: len(notified(app, "Snapshot")) == 2, "the error")
        assert notified(app, "Snapshot")[1] == f"{SLUG} is a microVM bottle: snapshots need a docker bottle\ufffd[2J"


async def test_the_picker_offers_snapshots_after_the_agents_and_a_pick_plans_a_fork(
    tmp_path: Path, fake: FakeEngine
) -> None:
    home = tmp_path / "home"
    write_snapshot(home, "older", agent="implementer", created_at="2026-12-01T10:00:00+00:00")
    write_snapshot(home, "newer", agent="implementer", created_at="2026-12-02T10:00:00+00:00")
    write_snapshot(home, "of-a-gone-agent", agent="nobody")  # its agent is not in the manifests
    plans: list[tuple[str, str | None]] = []

    def make_plan(home_: Path, agent: str, *, from_snapshot: str | None = None) -> ops.BottlePlan:
        plans.append((agent, from_snapshot))
        return ops.plan(home_, agent, from_snapshot=from_snapshot)

    app = make_app(home, fake, make_plan=make_plan)
    async with app.run_test(size=(160, 50)) as pilot:
        await loaded(pilot, app)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, PickerScreen), "the picker")
        options = app.screen.query_one("OptionList")
        labels = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        heading = labels.index("snapshots (a fork: a new bottle from one)")
        assert heading > 0 and labels[0].startswith("implementer")  # the agents come first
        assert labels[heading + 1 :] == [
            "fork newer  implementer, of implementer-abc123, 2026-12-02 10:00",
            "fork older  implementer, of implementer-abc123, 2026-12-01 10:00",
        ]
        await pilot.press(*"newer")
        assert options.highlighted == 1  # past the heading, on the only match
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the fork's plan")
        assert plans == [("implementer", "newer")]
        body = str(app.screen.query_one(".section").render())
        assert "from       snapshot newer of implementer-abc123 (2026-12-02T10:00:00+00:00)" in body
        assert "agent bottle-tui/snapshot:newer" in body
        await pilot.press("n")
        await until(pilot, lambda: len(app.screen_stack) == 1, "the plan to close")
        assert not (home / "state").exists() or not any((home / "state").iterdir())
