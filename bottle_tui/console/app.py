"""The operator console: proposals on top, agents below, every action one key away (DESIGN.md §6).

This module is the composition and the app-wide state only: the header line (counts, engine),
the hint, the bell, and what the workers' messages mean for the whole screen. Each pane owns its
table, keys and rows (``panes.py``); the workers (``watchers.py``) post typed messages
(``messages.py``); the right-hand tmux pane has its controller (``pane_control.py``); the dialogs'
flows live in ``proposal_flows.py``, ``agent_flows.py`` and ``policy_flow.py``. Everything below
the console goes through ``bottle_tui.ops``. `q` quits and leaves every bottle running.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import App, ComposeResult, ScreenStackError
from textual.binding import BindingType
from textual.css.query import NoMatches
from textual.widgets import Footer, Header, Static
from textual.worker import Worker, WorkerState

from ..config import NotifySettings
from ..spend import UsageReader, usd_text
from . import keys, watchers
from .commands import ConsoleCommands
from .inert import inert
from .messages import BottlesFound, EngineDown, ProposalsLoaded, StatusRead, UsageRead
from .notifications import ConsoleNotifications
from .pane_control import PaneController
from .panes import AgentsPane, ProposalsPane
from .settings import console_settings as console_settings  # the entry points cli.py imports from here
from .settings import run_console as run_console

if TYPE_CHECKING:
    from ..ops import BottleInfo, BottlePlan, EngineStatus, Proposal, ReviewSource, Snapshot, StopReport

    Discover = Callable[[], Awaitable[Sequence[BottleInfo]]]
    Status = Callable[[], Awaitable[EngineStatus]]
    LoadProposals = Callable[[Path], list[Proposal]]
    Say = Callable[[str], None]
    StartBottle = Callable[[BottlePlan, Say], Awaitable[Any]]  # (plan, progress): the bottle is up when it returns
    StopBottle = Callable[[Path, BottleInfo, Say], Awaitable[StopReport]]  # (home, bottle, progress)
    PaneArgv = Callable[[Path, str, str], list[str]]  # (home, slug, backend) -> what the right pane runs for claude
    EndSession = Callable[[Path, str, str], Awaitable[None]]  # (home, slug, backend): end the pane's claude there
    ReviewWork = Callable[[Path, BottleInfo], Awaitable[ReviewSource]]  # (home, bottle): what `d` shows
    TakeSnapshot = Callable[[Path, str, Say], Awaitable[Snapshot]]  # (home, slug, progress): what `s` does
    SavedSnapshots = Callable[[Path], list[Snapshot]]  # the snapshots the picker offers (blocking)

POLL_SECONDS = 10.0
AGE_TICK_SECONDS = 5.0
ATTACH_HINT = "Enter on an agent opens claude here (the console suspends until claude exits); `bottle-tui --tmux` gives a split pane"
PANE_HINT = "Enter on an agent opens claude in the right-hand pane; tmux's prefix then an arrow key moves between panes"
# What the running console needs and its first frame does not: the operations (and below them the
# engine's calls), the file watch and the tmux pane's library (``deferred``). Imported in a thread
# once the first frame is out; the workers that fill the screen start after. Then, in the same
# way, the keys' flows and their dialogs (FLOWS), so that the first key that opens one does not
# wait for them; a key pressed before has its flow imported then. The review screen (rich's
# syntax highlighting) is imported when `d` first opens it.
OPS, WATCH, TMUX = "bottle_tui.ops", "watchfiles", "bottle_tui.console.tmux"
FLOWS = ("bottle_tui.console.agent_flows", "bottle_tui.console.proposal_flows", "bottle_tui.console.policy_flow")


def import_deferred(names: Sequence[str]) -> None:
    """Import ``names`` one after the other (blocking: a thread's work, while the app runs)."""
    # libtmux reads sys.stdout.encoding as it is imported; while the app runs, sys.stdout is
    # Textual's capture of prints, which has none: it is lent the terminal's.
    if getattr(sys.stdout, "encoding", None) is None:
        setattr(sys.stdout, "encoding", getattr(sys.__stdout__, "encoding", None) or "utf-8")  # noqa: B010
    for name in names:
        importlib.import_module(name)


def _op(name: str) -> Callable[..., Any]:
    """``ops.<name>``, looked up when called: the console's workers start after ``import_deferred``,
    so ops is loaded by then and importing it here costs nothing."""

    def call(*args: Any, **kwargs: Any) -> Any:
        from .. import ops

        return getattr(ops, name)(*args, **kwargs)

    return call


# The operations the console runs unless it is given others (the tests give fakes).
discover_bottles: Discover = _op("discover")
engine_status: Status = _op("engine_status")
list_proposals: LoadProposals = _op("list_proposals")
stop_bottle: StopBottle = _op("stop")
review_work: ReviewWork = _op("review_work")
take_snapshot: TakeSnapshot = _op("snapshot")
saved_snapshots: SavedSnapshots = _op("saved_snapshots")


async def start_bottle(plan: BottlePlan, say: Say) -> None:
    """What `bottle-tui start` does once the plan is approved: preflight, images, bring-up."""
    from .. import ops

    await ops.start(plan, say)


def claude_pane_argv(home: Path, slug: str, backend: str) -> list[str]:
    """The host command the right pane runs: claude in the bottle, through the backend's exec."""
    from .. import ops

    return ops.attach_argv(home, slug, backend, pane=True)


async def end_pane_session(home: Path, slug: str, backend: str) -> None:
    from .. import ops

    await ops.end_pane_session(slug, backend)


class BottleConsole(App[None]):
    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses live elsewhere
    TITLE = "bottle-tui"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        *keys.APP_WIDE
    ]  # the panes bind these too, with their own keys, in the footer's order

    def __init__(
        self,
        home: Path,
        *,
        discover: Discover = discover_bottles,
        status: Status = engine_status,
        watch_events: bool = True,
        watch_files: bool = True,
        poll_seconds: float = POLL_SECONDS,
        load_proposals: LoadProposals = list_proposals,
        theme: str | None = None,
        keymap: dict[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
        tick: bool = True,
        make_plan: Callable[..., BottlePlan] | None = None,  # (home, agent, from_snapshot=None), as ops.plan
        tmux_env: Mapping[str, str] | None = None,
        start: StartBottle = start_bottle,
        stop: StopBottle = stop_bottle,
        pane_argv: PaneArgv = claude_pane_argv,
        end_session: EndSession = end_pane_session,
        review: ReviewWork = review_work,
        notify: NotifySettings | None = None,
        headless_notify: bool = False,
        snapshot: TakeSnapshot = take_snapshot,
        snapshots: SavedSnapshots = saved_snapshots,
    ) -> None:
        super().__init__()
        from themes import DEFAULT_THEME, register_all

        register_all(self)
        self.theme = theme or DEFAULT_THEME
        if keymap:
            self.set_keymap(keymap)
        self.home = home
        self.discover_fn, self.status_fn, self.load_proposals_fn = discover, status, load_proposals
        self.start_fn, self.stop_fn, self.pane_argv, self.end_session = start, stop, pane_argv, end_session
        self.make_plan = make_plan or _op("plan")
        self.review_fn = review
        self.snapshot_fn, self.snapshots_fn = snapshot, snapshots
        self.snapshotting: set[str] = set()  # slugs whose snapshot is being taken (s twice waits)
        self.poll_seconds = poll_seconds
        self.clock = clock or (lambda: datetime.now(UTC))
        self._watch_events, self._watch_files, self._tick = watch_events, watch_files, tick
        self._remote_watches: dict[str, Worker[None]] = {}  # slug -> its watch (swarm bottles)
        self.versions: str | None = None  # fetched once, again after the engine was down
        self.engine_ok: bool | None = None
        self.engine_problem = ""
        self._waiting_alerted: set[str] = set()
        self._keys_basis: tuple[bool, bool, bool | None] | None = None
        # The header and hint lines as last shown, by widget: a line made again starts empty.
        self._lines_shown: weakref.WeakKeyDictionary[Static, str] = weakref.WeakKeyDictionary()
        self.usage_reader = UsageReader()  # each bottle's usage.json, read again only when it changed
        self.pane = PaneController(self, tmux_env)  # the right-hand tmux pane (tmux_env None: not in tmux)
        # Alerts also sent away from the terminal (config.yaml's notify); headless: `notify --watch`.
        self.notifications = ConsoleNotifications(self, notify or NotifySettings(), headless=headless_notify)

    def compose(self) -> ComposeResult:
        self.proposals_pane = ProposalsPane(self.clock)
        self.agents_pane = AgentsPane(self.home, self.clock)
        yield Header()
        yield Static("engine: checking…", id="engine")
        yield self.proposals_pane
        yield self.agents_pane
        yield Static("", id="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.home)
        self.agents_pane.focus()
        self.set_interval(self.poll_seconds, self.reconcile)
        if self._tick:
            self.set_interval(AGE_TICK_SECONDS, self.rerender)
        self.update_header()
        self.call_after_refresh(self.start_workers)

    def deferred(self) -> list[str]:
        """The modules the workers of this console need (see ``import_deferred``)."""
        return [OPS, *([WATCH] if self._watch_files else []), *([TMUX] if self.pane.env is not None else [])]

    @work(group="start", exit_on_error=False)
    async def start_workers(self) -> None:
        """Once the first frame is out: what the workers need imported (in a thread: the loop
        goes on drawing and taking keys), the workers that fill the screen, then the flows."""
        await asyncio.to_thread(import_deferred, self.deferred())
        self.refresh_bottles()
        self.reload_proposals()
        if self._watch_events:
            self.follow_events()
        if self._watch_files:
            self.watch_state()
        if self.pane.env is not None:
            self.run_worker(self.pane.setup(), group="pane", exit_on_error=False)
        if self.notifications.settings.enabled:
            self.claim_notifier()
        await asyncio.to_thread(import_deferred, FLOWS)

    def on_unmount(self) -> None:
        self.notifications.release()

    # --- workers (each posts what it found to a pane) ----------------------------------------

    @work(exclusive=True, group="discover", exit_on_error=False)
    async def refresh_bottles(self) -> None:
        await watchers.discover(self)

    @work(exclusive=True, group="proposals", exit_on_error=False)
    async def reload_proposals(self) -> None:
        await watchers.load_proposals(self)

    @work(exclusive=True, group="events", exit_on_error=False)
    async def follow_events(self) -> None:
        await watchers.follow_events(self)

    @work(exclusive=True, group="watch", exit_on_error=False)
    async def watch_state(self) -> None:
        await watchers.watch_state(self)

    @work(exclusive=True, group="notify", exit_on_error=False)
    async def claim_notifier(self) -> None:
        """Become the home's notifier unless another console (or `notify --watch`) is; then the
        budgets' levels now are the baseline that later changes are announced against."""
        problems = await asyncio.to_thread(self.notifications.claim)
        for line in problems:
            self.notifications.say(inert(line).plain)
        if self.notifications.active:
            usages = self.agents_pane.usages
            for slug in self.agents_pane.bottles:
                usage = usages.get(slug)
                self.notifications.budget(slug, usage.budget if usage is not None else None, baseline=True)

    def follow_remote_bottles(self, bottles: Iterable[BottleInfo]) -> None:
        """A watch of each bottle whose files are not in the state folder (a swarm bottle), one
        per bottle, started when discovery first lists it and again after it ended."""
        for info in bottles:
            worker = self._remote_watches.get(info.slug)
            if info.backend == "swarm" and (worker is None or worker.is_finished):
                self._remote_watches[info.slug] = self.run_worker(
                    watchers.follow_remote(self, info), group=f"remote-{info.slug}", exit_on_error=False
                )

    def reconcile(self) -> None:
        self.refresh_bottles()
        self.reload_proposals()
        if self.notifications.settings.enabled and not self.notifications.active:
            self.claim_notifier()
        if self.pane.split is not None:
            self.run_worker(self.pane.check(), exclusive=True, group="pane-check", exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place unhandled worker errors land: a banner, never an exit."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.agents_pane.post_message(EngineDown(watchers.engine_problem(event.worker.error)))

    # --- what the panes' messages mean for the whole screen ----------------------------------

    def on_bottles_found(self, message: BottlesFound) -> None:
        self.engine_ok = True
        if self._watch_files:
            self.follow_remote_bottles(message.bottles)
        if message.versions is not None:
            self.versions = message.versions
        if (line := self._line("engine")) is not None:
            line.set_class(False, "-down")
        self._bottles_changed(message.gone, message.order, handed_on=True)
        notes = self.notifications
        notes.bottles(message.bottles)
        if notes.active and message.usages is not None:  # a new bottle's budget now is its baseline
            for b in message.bottles:
                if b.slug not in notes.budgets:
                    usage = message.usages.get(b.slug)
                    notes.budget(b.slug, usage.budget if usage is not None else None, baseline=True)

    def on_engine_down(self, message: EngineDown) -> None:
        self.versions, self.engine_ok, self.engine_problem = None, False, message.problem
        if (line := self._line("engine")) is not None:
            line.set_class(True, "-down")
        self._bottles_changed(message.gone, message.order, handed_on=False)
        self.notifications.engine_down()

    def _bottles_changed(self, gone: list[str], order: list[str], *, handed_on: bool) -> None:
        self.agents_changed()
        if gone and self.pane.split is not None:
            # A bottle that went takes its claude's pane with it: the next agent gets the pane, as
            # after x (not when the engine went away: then the bottles are only out of sight).
            flow = self.pane.bottles_gone(gone, order) if handed_on else self.pane.check()
            self.run_worker(flow, group="pane-gone", exit_on_error=False)

    def on_status_read(self, message: StatusRead) -> None:
        self.agents_changed()

    def on_usage_read(self, message: UsageRead) -> None:
        self.update_header()
        for slug, usage in message.usages.items():
            self.notifications.budget(slug, usage.budget if usage is not None else None)

    def on_proposals_loaded(self, message: ProposalsLoaded) -> None:
        self.agents_pane.pending = Counter(p.slug for p in self.proposals_pane.pending.values())
        self.agents_pane.rerender()
        if message.ring:
            self.alert(message.new)
        self.update_header()
        self._refresh_keys()

    def alert(self, new: list[str]) -> None:
        """A new proposal: bell, highlighted pane, focus and cursor on the first new one, a toast."""
        self.bell()
        self.proposals_pane.alert(new)
        if self.pane.split is not None:
            self.run_worker(self.pane.select_console(), group="pane", exit_on_error=False)
        self.notifications.proposals(self.proposals_pane.pending[pid] for pid in new)
        first = self.proposals_pane.pending[new[0]]
        more = f" (+{len(new) - 1} more)" if len(new) > 1 else ""
        self.notify(inert(f"{first.slug}: {first.summary()}{more}").plain[:300], title="New proposal", markup=False)

    def agents_changed(self) -> None:
        """The agents pane changed: ring for agents newly waiting, the hint, the header, the keys."""
        pane = self.agents_pane
        waiting = {s for s, st in pane.statuses.items() if st.waiting}
        fresh = waiting - self._waiting_alerted
        self._waiting_alerted = waiting
        if not pane.status_loaded:  # startup does not ring for what was waiting already
            fresh, pane.status_loaded = set(), bool(pane.bottles) or self.engine_ok is not None
        pane.set_class(bool(waiting), "-alert")
        if fresh:
            self.notifications.waiting(fresh)
            self.bell()
            self.notify(
                f"{len(fresh)} agent(s) waiting for input: {', '.join(sorted(fresh))[:200]}",
                title="Waiting",
                markup=False,
            )
        hint = PANE_HINT if self.pane.split is not None else ATTACH_HINT
        if not pane.bottles:
            hint = "No agents are running: press n to start one. " + hint
        self._show_line("hint", hint)
        self.update_header()
        self._refresh_keys()

    def _line(self, name: str) -> Static | None:
        """The header or hint line; None while the app closes, when its widgets are gone before the
        panes' last messages have all arrived (a message then changes nothing)."""
        try:
            return self.query_one(f"#{name}", Static)
        except NoMatches:
            return None

    def _show_line(self, name: str, text: str) -> None:
        """Show ``text`` (made inert) on the header or hint line, only when it changed: an update
        relayouts the whole screen, and a refresh of 200 bottles mostly changes nothing there."""
        if (line := self._line(name)) is not None and self._lines_shown.get(line) != text:
            self._lines_shown[line] = text
            line.update(inert(text))

    def update_header(self) -> None:
        if self._line("engine") is None:
            return
        bottles, pending = self.agents_pane.bottles, self.proposals_pane.pending
        n_agents, n_pending = len(bottles), len(pending)
        counts = f"{n_agents} agent{'s' if n_agents != 1 else ''} · {n_pending} pending proposal{'s' if n_pending != 1 else ''}"
        waiting = sum(1 for s in bottles if (st := self.agents_pane.statuses.get(s)) and st.waiting)
        if waiting:
            counts += f" · {waiting} waiting for input"
        if self.agents_pane.usages:
            counts += f" · {usd_text(self.agents_pane.total_usd())} spent"
        if self.engine_ok is False:
            text = f"engine: {self.engine_problem} · {counts}"
        elif self.versions:
            text = f"{counts} · {self.versions}"
        else:
            text = f"{counts} · engine: checking…"
        self._show_line("engine", text)
        for pane, subtitle in (
            (self.proposals_pane, f"{n_pending} pending"),
            (self.agents_pane, f"{n_agents} running"),
        ):
            if pane.border_subtitle != subtitle:  # setting one repaints the whole pane, changed or not
                pane.border_subtitle = subtitle

    def _refresh_keys(self) -> None:
        """Re-check the footer's keys when what they depend on changed (a pane became empty or
        not, the engine went or came back); cheap to call, since the footer re-renders only then."""
        basis = (bool(self.proposals_pane.pending), bool(self.agents_pane.bottles), self.engine_ok)
        if basis != self._keys_basis:
            self._keys_basis = basis
            try:
                self.refresh_bindings()
            except ScreenStackError:  # a pane's last message, landing as the app closes
                pass

    def rerender(self) -> None:
        """Ages move on: re-render the cells (no I/O; unchanged cells are not touched)."""
        with self.batch_update():
            self.agents_pane.rerender()
            self.proposals_pane.rerender()

    def highlight(self, text: str) -> tuple[str, str]:
        colour = self.theme_variables.get("warning")
        return text, f"bold {colour}" if colour else "bold reverse"

    # --- app-wide keys -----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("switch_pane", "new_agent", "refresh") and len(self.screen_stack) > 1:
            return False  # a dialog is open: its keys win
        if action == "new_agent":
            return None if self.engine_ok is False else True
        return True

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()

    def action_switch_pane(self) -> None:
        other = self.agents_pane if self.focused is self.proposals_pane else self.proposals_pane
        other.focus()

    def action_new_agent(self) -> None:
        from . import agent_flows

        agent_flows.new_agent(self)

    def action_refresh(self) -> None:
        self.reconcile()
