"""SVG snapshots of the console on fixed data (tests/host/console_snapshot_app.py). Update them with
`pytest tests/host/test_console_snapshots.py --snapshot-update` after checking the change by eye."""

from __future__ import annotations

import time

from .console_snapshot_app import SIZE, make, make_review


def settled(app):
    async def wait(pilot) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (
            app.proposals_pane.loaded and (app.versions or app.engine_ok is False)
        ):
            await pilot.pause(0.02)
        await pilot.pause(0.1)

    return wait


def test_empty_state(snap_compare) -> None:
    app = make(populated=False)
    assert snap_compare(app, terminal_size=SIZE, run_before=settled(app))


def test_both_panes_populated(snap_compare) -> None:
    app = make()
    assert snap_compare(app, terminal_size=SIZE, run_before=settled(app))


def test_proposal_detail(snap_compare) -> None:
    app = make()
    assert snap_compare(app, terminal_size=SIZE, run_before=settled(app), press=["tab", "enter", "_", "_", "_"])


def test_picker_with_a_filter(snap_compare) -> None:
    app = make()
    assert snap_compare(app, terminal_size=SIZE, run_before=settled(app), press=["n", "_", "_", "r", "e", "v", "_"])


def test_preflight_modal(snap_compare) -> None:
    app = make()
    assert snap_compare(
        app,
        terminal_size=SIZE,
        run_before=settled(app),
        press=["n", "_", "_", "i", "m", "p", "enter", "_", "_", "_", "_"],
    )


def test_engine_down_banner(snap_compare) -> None:
    app = make(populated=False, engine_up=False)
    assert snap_compare(app, terminal_size=SIZE, run_before=settled(app))


def test_light_theme(snap_compare) -> None:
    app = make(theme="bottle-light")
    assert snap_compare(app, terminal_size=SIZE, run_before=settled(app))


def test_dark_theme(snap_compare) -> None:
    app = make(theme="bottle-dark")
    assert snap_compare(app, terminal_size=SIZE, run_before=settled(app))


def test_another_homes_bottle_is_marked(snap_compare) -> None:
    app = make(other_home=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=settled(app))


def test_review_screen(snap_compare) -> None:
    from bottle_tui.console.review import ReviewScreen

    app = make_review()

    async def reviewed(pilot) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not app.agents_pane.has_work:
            await pilot.pause(0.02)
        await pilot.press("d")

        def ready() -> bool:
            screen = app.screen
            if not isinstance(screen, ReviewScreen) or not screen.counted:
                return False
            return "loading" not in str(screen.query_one("#review-diff").render())

        while time.monotonic() < deadline + 10 and not ready():
            await pilot.pause(0.02)
        await pilot.press("down", "down", "down", "down")  # old.py, the Python file: highlighted code
        await pilot.pause(0.5)

    assert snap_compare(app, terminal_size=SIZE, run_before=reviewed)
