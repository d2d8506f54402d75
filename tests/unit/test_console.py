"""The console's first screen, driven by Pilot on fixed discovery data (no docker here)."""

from __future__ import annotations

from pathlib import Path

from bottle_tui.backends.docker.engine import BottleInfo, EngineStatus
from bottle_tui.console.app import BottleConsole
from bottle_tui.errors import BottleError


def info(slug: str, up: int = 2, agent: str = "implementer") -> BottleInfo:
    services = {"agent": "running", "sidecars": "running" if up == 2 else "exited"}
    return BottleInfo(slug=slug, project=f"claude-bottle-{slug}", agent=agent, bottle="dev", backend="docker",
                      started_at="2026-11-27T00:00:00+00:00", home="/h", status="running(2)", services=services)


class FakeEngine:
    """Stands in for the docker CLI at the process boundary; tests change what it reports."""

    def __init__(self) -> None:
        self.bottles: list[BottleInfo] = []
        self.status = EngineStatus(True, "20.10.24", "2.40.3")
        self.calls = 0

    async def discover(self) -> list[BottleInfo]:
        self.calls += 1
        if not self.status.ok:
            raise BottleError(self.status.problem)
        return list(self.bottles)

    async def engine_status(self) -> EngineStatus:
        return self.status


def make_app(fake: FakeEngine) -> BottleConsole:
    return BottleConsole(Path("/tmp/home"), discover=fake.discover, status=fake.engine_status, watch_events=False)


def table_rows(app: BottleConsole) -> list[list[str]]:
    table = app.query_one("#bottles")
    return [[str(c) for c in table.get_row(key)] for key in table.rows]


async def test_lists_bottles_and_updates_in_place() -> None:
    fake = FakeEngine()
    fake.bottles = [info("implementer-aaaaaa"), info("implementer-bbbbbb", up=1)]
    app = make_app(fake)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        rows = table_rows(app)
        assert [r[0] for r in rows] == ["implementer-aaaaaa", "implementer-bbbbbb"]
        assert rows[1][5] == "1/2 up"
        await pilot.press("j")
        table = app.query_one("#bottles")
        assert table.cursor_row == 1
        # One bottle stops, another appears: rows update in place and the cursor stays sane.
        fake.bottles = [info("implementer-bbbbbb"), info("reviewer-cccccc", agent="reviewer")]
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        rows = table_rows(app)
        assert [r[0] for r in rows] == ["implementer-bbbbbb", "reviewer-cccccc"]
        assert rows[0][5] == "2/2 up"
        assert "2 bottle(s)" in str(app.query_one("#engine").render())


async def test_engine_down_is_one_clear_line_and_q_quits() -> None:
    fake = FakeEngine()
    fake.status = EngineStatus(False, problem="no Docker engine answers (connection refused): run `make engine`")
    app = make_app(fake)
    async with app.run_test(size=(100, 20)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        line = str(app.query_one("#engine").render())
        assert "no Docker engine answers" in line and "make engine" in line
        assert app.query_one("#engine").has_class("-down")
        assert table_rows(app) == []
        # The engine comes back: the next refresh shows versions and bottles again.
        fake.status = EngineStatus(True, "20.10.24", "2.40.3")
        fake.bottles = [info("implementer-aaaaaa")]
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "engine 20.10.24" in str(app.query_one("#engine").render())
        assert not app.query_one("#engine").has_class("-down")
        assert len(table_rows(app)) == 1
        await pilot.press("q")
    assert app.return_code == 0


async def test_labels_are_rendered_inert() -> None:
    fake = FakeEngine()
    fake.bottles = [info("x-000000", agent="[bold red]evil[/]\x1b[2J")]
    app = make_app(fake)
    async with app.run_test(size=(120, 20)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.query_one("#bottles")
        screen_text = "\n".join(table.render_line(y).text for y in range(table.size.height))
        # Shown literally: Rich markup is not interpreted and the escape sequence is not passed on.
        assert "[bold red]evil[/]" in screen_text
        assert "\x1b" not in screen_text


class BrokenEngine(FakeEngine):
    """Discovery answers but the engine status call fails the way a real CLI can (timeout, bad JSON)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    async def engine_status(self) -> EngineStatus:
        raise self.error


async def test_a_failing_engine_status_is_a_banner_not_an_exit() -> None:
    import json

    from bottle_tui.runner import CommandError

    for error in (CommandError(["docker", "compose", "version"], None, "", "timed out after 15 s"),
                  json.JSONDecodeError("Expecting value", "", 0), RuntimeError("boom")):
        fake = BrokenEngine(error)
        fake.bottles = [info("implementer-aaaaaa")]
        app = make_app(fake)
        async with app.run_test(size=(120, 20)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.is_running, f"the console exited on {error!r}"
            banner = app.query_one("#engine")
            assert banner.has_class("-down") and "engine:" in str(banner.render())
            # The engine recovers: the next refresh clears the banner.
            fake.error = None

            async def ok() -> EngineStatus:
                return EngineStatus(True, "20.10.24", "2.40.3")

            app._status = ok
            await pilot.press("r")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert not banner.has_class("-down") and "1 bottle(s)" in str(banner.render())
            await pilot.press("q")
        assert app.return_code == 0


async def test_a_discovery_error_that_is_not_a_bottle_error_is_a_banner() -> None:
    fake = FakeEngine()

    async def bad_json() -> list[BottleInfo]:
        raise ValueError("Expecting ',' delimiter: line 1 column 12 (char 11)")

    app = BottleConsole(Path("/tmp/home"), discover=bad_json, status=fake.engine_status, watch_events=False)
    async with app.run_test(size=(120, 20)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.is_running
        assert "ValueError" in str(app.query_one("#engine").render())
