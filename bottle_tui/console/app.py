"""The operator console (first cut): the engine's state and the running bottles, refreshed live.

Discovery is the same call the CLI's `ls` makes; it runs in a worker, triggered by `docker events`
for bottle-tui's containers and by a slow poll in case the event stream drops. `q` quits and
leaves every bottle running.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import Worker, WorkerState

from ..backends.docker import engine
from ..backends.docker.engine import BottleInfo, EngineStatus
from ..errors import BottleError
from ..runner import lines
from .inert import inert

POLL_SECONDS = 10.0
COLUMNS = (("slug", "SLUG"), ("agent", "AGENT"), ("bottle", "BOTTLE"), ("backend", "BACKEND"), ("started", "STARTED"), ("services", "SERVICES"))

Discover = Callable[[], Awaitable[Sequence[BottleInfo]]]
Status = Callable[[], Awaitable[EngineStatus]]


def _cells(info: BottleInfo) -> dict[str, Text]:
    # Labels come from the engine: anyone with docker access can set them, so render them inert.
    return {
        "slug": inert(info.slug), "agent": inert(info.agent), "bottle": inert(info.bottle),
        "backend": inert(info.backend), "started": inert(info.started_at),
        "services": inert(f"{info.services_up}/{len(info.services)} up"),
    }


class BottleConsole(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "bottle-tui"
    BINDINGS = [
        Binding("q", "quit", "Quit (bottles keep running)", id="quit"),
        Binding("r", "refresh", "Refresh", id="refresh"),
        Binding("j", "cursor_down", "Down", show=False, id="cursor-down"),
        Binding("k", "cursor_up", "Up", show=False, id="cursor-up"),
    ]

    def __init__(self, home: Path, *, discover: Discover = engine.discover, status: Status = engine.engine_status,
                 watch_events: bool = True, poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__()
        self.home = home
        self._discover = discover
        self._status = status
        self._watch_events = watch_events
        self._poll_seconds = poll_seconds
        self._versions: str | None = None  # fetched once, again after the engine was down
        self._shown: dict[str, BottleInfo] = {}  # what each table row shows, by slug

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("engine: checking…", id="engine")
        table: DataTable[Text] = DataTable(id="bottles", cursor_type="row", zebra_stripes=True)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Static("", id="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.home)
        self.query_one("#bottles", DataTable).focus()
        self.refresh_bottles()
        self.set_interval(self._poll_seconds, self.refresh_bottles)
        if self._watch_events:
            self.follow_events()

    def action_refresh(self) -> None:
        self.refresh_bottles()

    def action_cursor_down(self) -> None:
        self.query_one("#bottles", DataTable).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one("#bottles", DataTable).action_cursor_up()

    @work(exclusive=True, group="discover", exit_on_error=False)
    async def refresh_bottles(self) -> None:
        try:
            bottles = await self._discover()
            if self._versions is None:
                status = await self._status()
                if not status.ok:
                    raise BottleError(status.problem)
                self._versions = f"engine {status.server_version} · compose {status.compose_version}"
        except Exception as exc:  # noqa: BLE001 - any engine failure becomes the banner, never an exit
            self._engine_down(exc)
            return
        engine_line = self.query_one("#engine", Static)
        engine_line.set_class(False, "-down")
        engine_line.update(Text(f"{self._versions} · {len(bottles)} bottle(s)"))
        self._apply(bottles)

    def _engine_down(self, exc: BaseException) -> None:
        """Show the engine's problem in the banner (one line) and keep the console running."""
        # BottleError already names the engine's problem and what to do about it; anything else
        # (a JSON decode error, a timeout) is named by its type so it can be reported.
        text = str(exc) if isinstance(exc, BottleError) else f"{type(exc).__name__}: {exc}"
        self._versions = None
        engine_line = self.query_one("#engine", Static)
        engine_line.update(inert(f"engine: {' '.join(text.split())}"))
        engine_line.set_class(True, "-down")
        self._apply([])

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker errors land: a banner, never an exit."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self._engine_down(event.worker.error)

    def _apply(self, bottles: Sequence[BottleInfo]) -> None:
        """Update the table in place, keyed by slug, so the cursor stays where the operator left it.
        Rows whose bottle did not change are not touched."""
        table = self.query_one("#bottles", DataTable)
        wanted = {b.slug: b for b in bottles}
        for slug in set(self._shown) - set(wanted):
            table.remove_row(slug)
            del self._shown[slug]
        for slug, info in wanted.items():
            if self._shown.get(slug) == info:
                continue
            cells = _cells(info)
            if slug in self._shown:
                for key, value in cells.items():
                    table.update_cell(slug, key, value)
            else:
                table.add_row(*(cells[key] for key, _ in COLUMNS), key=slug)
            self._shown[slug] = info
        hint = "" if bottles else "No bottles are running. Start one from a shell: bottle-tui start implementer"
        self.query_one("#hint", Static).update(hint)

    @work(exclusive=True, group="events", exit_on_error=False)
    async def follow_events(self) -> None:
        """Refresh whenever one of our containers changes; restart the stream if it ends or fails."""
        while True:
            try:
                async for _ in lines(engine.events_argv()):
                    self.refresh_bottles()
            except Exception:  # noqa: BLE001 - the stream is a hint; the poll and the banner cover failures
                pass
            await asyncio.sleep(self._poll_seconds)


def run_console(home: Path) -> int:
    BottleConsole(home).run()
    return 0
