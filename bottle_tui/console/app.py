"""The operator console: proposals on top, agents below, every action one key away (DESIGN.md §6).

Live without a busy loop: bottles come from `docker events` plus a slow reconcile; proposals and
agent status come from a file-system watch (watchfiles) on ``state/``. Every docker call, file
scan and decision runs in a worker; every worker error that nobody handled becomes the engine
banner, never an exit. Tables are keyed by id and updated cell by cell. `q` quits and leaves
every bottle running: the console starts bottles with compose, detached, and owns none of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import json
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

import yaml
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import Worker, WorkerState

from .. import proposals
from .. import backends
from ..backends.docker import engine
from ..backends.docker.engine import BottleInfo, EngineStatus
from ..config import config_path, load_config
from ..errors import BottleError
from ..proposals import AlreadyDecided, Proposal
from ..runner import lines
from ..state import StateDir, changed_file, state_dir, state_root
from .commands import ConsoleCommands
from .inert import inert
from .rows import AGENT_COLUMNS, PROPOSAL_COLUMNS, AgentStatus, agent_cells, proposal_cells, proposal_static, read_status
from .screens import ConfirmScreen, EditorScreen, LogScreen, NoteScreen, PickerScreen, ProposalDetail, ScopeScreen
from .tmux import Occupant, RightPane, TmuxError

POLL_SECONDS = 10.0
AGE_TICK_SECONDS = 5.0
ATTACH_HINT = "Enter on an agent opens claude here (the console suspends until claude exits); `bottle-tui --tmux` gives a split pane"
PANE_HINT = "Enter on an agent opens claude in the right-hand pane; tmux's prefix then an arrow key moves between panes"

Discover = Callable[[], Awaitable[Sequence[BottleInfo]]]
Status = Callable[[], Awaitable[EngineStatus]]
LoadProposals = Callable[[Path], list[Proposal]]
Cell = "str | tuple[str, str]"  # a plain cell, or (text, Rich style) for a highlighted one
Say = Callable[[str], None]
StartBottle = Callable[[Any, Say], Awaitable[None]]  # (plan, progress): the bottle is up when it returns
StopBottle = Callable[[Path, BottleInfo, Say], Awaitable[Any]]  # (home, bottle, progress) -> its StopReport
PaneArgv = Callable[[Path, str, str], list[str]]  # (home, slug, backend) -> what the right pane runs for claude
EndSession = Callable[[Path, str, str], Awaitable[None]]  # (home, slug, backend): end the pane's claude there

# Actions that act on the selected row of one pane; check_action hides them elsewhere.
PROPOSAL_ACTIONS = ("approve", "modify", "reject")
AGENT_ACTIONS = ("stop", "edit_routes", "edit_dlp", "logs")
MAIN_ACTIONS = ("switch_pane", "cursor_down", "cursor_up", "open", "new_agent", "refresh", *PROPOSAL_ACTIONS, *AGENT_ACTIONS)


class PaneTable(DataTable):
    """A pane's table. It keeps its own cursor; the app's bindings act on the focused one."""


def _load_changed(files: Iterable[tuple[Path, StateDir]]) -> dict[str, Proposal | None]:
    """The proposal behind each changed queue file (None: gone, decided, or not a proposal of
    the bottle whose folder holds it)."""
    out: dict[str, Proposal | None] = {}
    for path, state in files:
        p = proposals.load(path)
        out[path.stem] = p if p is not None and p.pending and p.slug == state.slug else None
    return out


def _detail_sections(home: Path, p: Proposal) -> list[tuple[str, str]]:
    """What the detail screen shows (file reads: runs in a thread)."""
    d = p.data
    sections = [
        ("Bottle", f"{p.slug} · {p.kind} · {p.status}" + (f" · draft, seen {d.get('count', 1)} times, last {d.get('last_seen')}" if d.get("draft") else "")),
        ("Asks for", p.summary()),
        ("Reason (the agent's words)", str(d.get("reason") or "-")),
    ]
    if d.get("context"):
        sections.append(("Context", str(d["context"])))
    state = state_dir(home, p.slug)
    try:
        before, doc = proposals.read_policy(state)
    except BottleError as exc:
        sections.append(("Policy", str(exc)))
    else:
        try:
            change = proposals.validate_change(p.kind, p.change)
            from ..backends.docker.compose import to_yaml

            after = to_yaml(proposals.policy_with(doc, p.kind, change))
            diff = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), "routes.yaml (in force)", "routes.yaml (approved)"))
            sections.append(("Policy before → after", diff or "no change: the policy allows it already"))
        except BottleError as exc:
            sections.append(("Policy before → after", f"the change cannot be applied as asked: {exc}"))
    history = [f"{d.get('created_at')}  asked" + (" (draft: egress blocked it)" if d.get("draft") else "")]
    audit = state.audit_log
    try:
        for line in audit.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("id") == p.id:
                history.append(f"{rec.get('at')}  {rec.get('status')} by {rec.get('by')}" + (f": {rec.get('note')}" if rec.get("note") else ""))
    except OSError:
        pass
    if d.get("decision"):
        dec = d["decision"]
        history.append(f"{dec.get('at')}  {p.status} by {dec.get('by')}, scope {dec.get('scope')}")
    sections.append(("History", "\n".join(dict.fromkeys(history))))
    return sections


def _change_validator(p: Proposal) -> Callable[[str], dict[str, Any]]:
    def validate(text: str) -> dict[str, Any]:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise BottleError(f"change: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
        change = proposals.validate_change(p.kind, raw)
        proposals.check_narrower(p.kind, change, p.change)
        return change

    return validate


def _bottle_home(info: BottleInfo | None, fallback: Path) -> Path:
    """The home that started a bottle (its label) when this process can see it, else ours."""
    if info is not None and info.home and Path(info.home).is_dir():
        return Path(info.home)
    return fallback


async def start_with_backend(plan: Any, say: Say) -> None:
    """What `bottle-tui start` does once the plan is approved: the engine, the images, the bottle."""
    from ..backends.docker import images

    await engine.require_engine()
    plan = dataclasses.replace(plan, images=await images.ensure_images(say, plan.home / "images.log"))
    await backends.get(plan.backend).start(plan, say)


async def stop_with_backend(home: Path, info: BottleInfo, say: Say) -> Any:
    return await backends.get(info.backend).stop(home, info.slug, say)


def claude_pane_argv(home: Path, slug: str, backend: str) -> list[str]:
    """The host command the right pane runs: claude in the bottle, through the backend's exec."""
    from ..cli import claude_argv_for

    argv = claude_argv_for(home, slug, fresh=False, pane=True)
    return backends.get(backend).exec_argv(slug, argv, tty=True, env={"TERM": os.environ.get("TERM", "xterm-256color")})


async def end_pane_session(home: Path, slug: str, backend: str) -> None:
    """End the claude the pane left running in a bottle it moved away from (best effort: the
    bottle may be gone)."""
    from ..plan import end_pane_session_argv

    try:
        await backends.get(backend).exec_capture(slug, end_pane_session_argv(), timeout=15)
    except BottleError:
        pass


def follow_log_argv(path: Path, header: str) -> list[str]:
    """What the right pane runs to show a bring-up or teardown log as it grows (the file may not
    exist yet: tail -F waits for it)."""
    return ["sh", "-c", 'printf "%s\\n\\n" "$1"; exec tail -n +1 -F "$2" 2>/dev/null', "bottle-tui-log", header, str(path)]


class PaneLog:
    """The console's own progress lines during a start shown in the pane: appended to the
    bottle's bringup.log once its state folder exists (held until then)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held: list[str] = []

    def __call__(self, message: str) -> None:
        from ..backends.docker.lifecycle import append_log

        self.held.append(message)
        if self.path.parent.is_dir():
            try:
                append_log(self.path, "\n".join(self.held))
            except OSError:
                return
            self.held.clear()


class BottleConsole(App[None]):
    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses live elsewhere
    TITLE = "bottle-tui"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    # Main-screen keys are priority bindings gated by check_action: off (so the key falls through
    # to the dialog) whenever a dialog is on top. Every id is stable: config.yaml's keymap uses it.
    BINDINGS = [
        Binding("q", "quit", "Quit (bottles keep running)", id="quit"),
        Binding("tab", "switch_pane", "Switch pane", priority=True, id="switch-pane"),
        Binding("j", "cursor_down", "Down", show=False, priority=True, id="cursor-down"),
        Binding("k", "cursor_up", "Up", show=False, priority=True, id="cursor-up"),
        Binding("enter", "open", "Open", priority=True, id="open"),
        Binding("a", "approve", "Approve", priority=True, id="approve"),
        Binding("m", "modify", "Modify", priority=True, id="modify"),
        Binding("r", "reject", "Reject", priority=True, id="reject"),
        Binding("n", "new_agent", "New agent", priority=True, id="new-agent"),
        Binding("x", "stop", "Stop", priority=True, id="stop"),
        Binding("e", "edit_routes", "Routes", priority=True, id="edit-routes"),
        Binding("p", "edit_dlp", "DLP", priority=True, id="edit-dlp"),
        Binding("l", "logs", "Logs", priority=True, id="logs"),
        Binding("f5", "refresh", "Refresh", priority=True, id="refresh"),
    ]
    DESCRIPTIONS = {
        "quit": "Quit the console (every bottle keeps running)", "switch_pane": "Switch between proposals and agents",
        "cursor_down": "Move down", "cursor_up": "Move up", "open": "Open the proposal / attach to the agent",
        "approve": "Approve the selected proposal", "modify": "Modify (narrow) the selected proposal, then approve it",
        "reject": "Reject the selected proposal with a note", "new_agent": "Start a new agent (picker, then the plan)",
        "stop": "Stop the selected bottle", "edit_routes": "Edit the selected bottle's routes (routes.yaml)",
        "edit_dlp": "Edit the selected bottle's DLP policy", "logs": "Show the selected bottle's logs",
        "refresh": "Refresh bottles and proposals now",
    }

    def __init__(self, home: Path, *, discover: Discover = backends.discover, status: Status = engine.engine_status,
                 watch_events: bool = True, watch_files: bool = True, poll_seconds: float = POLL_SECONDS,
                 load_proposals: LoadProposals = proposals.list_all, theme: str | None = None,
                 keymap: dict[str, str] | None = None, clock: Callable[[], datetime] | None = None,
                 tick: bool = True, make_plan: Callable[[Path, str], Any] | None = None,
                 tmux_env: Mapping[str, str] | None = None, start: StartBottle = start_with_backend,
                 stop: StopBottle = stop_with_backend, pane_argv: PaneArgv = claude_pane_argv,
                 end_session: EndSession = end_pane_session) -> None:
        super().__init__()
        from themes import DEFAULT_THEME, register_all

        register_all(self)
        self.theme = theme or DEFAULT_THEME
        if keymap:
            self.set_keymap(keymap)
        self.home = home
        self._discover = discover
        self._status = status
        self._load_proposals = load_proposals
        self._watch_events = watch_events
        self._watch_files = watch_files
        self._poll_seconds = poll_seconds
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._tick = tick
        self._make_plan = make_plan
        self._versions: str | None = None  # fetched once, again after the engine was down
        self._engine_ok: bool | None = None
        self._bottles: dict[str, BottleInfo] = {}
        self._status_of: dict[str, AgentStatus] = {}
        self._pending: dict[str, Proposal] = {}  # pending proposals by id
        self._seen: set[str] = set()  # every id shown once: a proposal rings only the first time
        self._proposals_loaded = False
        self._cells: dict[str, dict[str, dict[str, Cell]]] = {}  # table id -> row key -> shown cells
        self._static: dict[str, tuple[Proposal, dict[str, str]]] = {}  # proposal id -> its time-free cells
        self._waiting_alerted: set[str] = set()
        self._status_loaded = False
        # The right-hand tmux pane (None: not in tmux, or tmux failed: Enter suspends instead).
        self._tmux_env = tmux_env
        self._split: RightPane | None = None
        self._occupant: Occupant | None = None
        self._pane_lock = asyncio.Lock()
        self._start, self._stop_fn, self._pane_argv, self._end_session = start, stop, pane_argv, end_session

    # --- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("engine: checking…", id="engine")
        proposals_table: PaneTable = PaneTable(id="proposals", cursor_type="row", zebra_stripes=True)
        proposals_table.border_title = "Proposals"
        for key, label in PROPOSAL_COLUMNS:
            proposals_table.add_column(label, key=key)
        yield proposals_table
        agents_table: PaneTable = PaneTable(id="bottles", cursor_type="row", zebra_stripes=True)
        agents_table.border_title = "Agents"
        for key, label in AGENT_COLUMNS:
            agents_table.add_column(label, key=key)
        yield agents_table
        yield Static("", id="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.home)
        self.query_one("#bottles", DataTable).focus()
        self.refresh_bottles()
        self.reload_proposals()
        self.set_interval(self._poll_seconds, self._reconcile)
        if self._tick:
            self.set_interval(AGE_TICK_SECONDS, self._rerender)
        if self._watch_events:
            self.follow_events()
        if self._watch_files:
            self.watch_state()
        if self._tmux_env is not None:
            self.setup_pane()
        self._update_header()

    @property
    def proposals_table(self) -> DataTable:
        return self.query_one("#proposals", DataTable)

    @property
    def agents_table(self) -> DataTable:
        return self.query_one("#bottles", DataTable)

    def _focused_pane(self) -> DataTable | None:
        focused = self.focused
        return focused if isinstance(focused, PaneTable) else None

    def _selected_key(self, table: DataTable) -> str | None:
        if table.row_count == 0:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - no valid cursor: nothing selected
            return None

    def selected_proposal(self) -> Proposal | None:
        pane = self._focused_pane()
        if pane is None or pane.id != "proposals":
            return None
        key = self._selected_key(pane)
        return self._pending.get(key) if key else None

    def selected_bottle(self) -> BottleInfo | None:
        pane = self._focused_pane()
        if pane is None or pane.id != "bottles":
            return None
        key = self._selected_key(pane)
        return self._bottles.get(key) if key else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in MAIN_ACTIONS:
            return True
        if len(self.screen_stack) > 1:
            return False  # a dialog is open: its keys win
        if action in PROPOSAL_ACTIONS:
            return self.selected_proposal() is not None if self._in_pane("proposals") else False
        if action in AGENT_ACTIONS:
            return self.selected_bottle() is not None if self._in_pane("bottles") else False
        if action == "open":
            return self.selected_proposal() is not None or self.selected_bottle() is not None
        if action == "new_agent":
            return None if self._engine_ok is False else True
        return True

    def _in_pane(self, pane_id: str) -> bool:
        pane = self._focused_pane()
        return pane is not None and pane.id == pane_id

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()

    # --- navigation ----------------------------------------------------------------------------

    def action_switch_pane(self) -> None:
        other = self.agents_table if self._in_pane("proposals") else self.proposals_table
        other.focus()

    def action_cursor_down(self) -> None:
        pane = self._focused_pane()
        if pane is not None:
            pane.action_cursor_down()

    def action_cursor_up(self) -> None:
        pane = self._focused_pane()
        if pane is not None:
            pane.action_cursor_up()

    def action_open(self) -> None:
        if self.selected_proposal() is not None:
            self.open_proposal(self.selected_proposal())
        elif self.selected_bottle() is not None:
            self.attach(self.selected_bottle())

    # --- bottles -------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        self.refresh_bottles()
        self.reload_proposals()
        if self._split is not None:
            self.check_pane()

    def action_refresh(self) -> None:
        self._reconcile()

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
        home = self.home
        slugs = [b.slug for b in bottles]
        statuses = await asyncio.to_thread(lambda: {s: read_status(state_dir(home, s).status_file) for s in slugs})
        self._engine_ok = True
        self.query_one("#engine", Static).set_class(False, "-down")
        self._apply_bottles(bottles, {s: st for s, st in statuses.items() if st is not None})

    def _engine_down(self, exc: BaseException) -> None:
        """Show the engine's problem in the banner (one line) and keep the console running."""
        # BottleError already names the engine's problem and what to do about it; anything else
        # (a JSON decode error, a timeout) is named by its type so it can be reported.
        text = str(exc) if isinstance(exc, BottleError) else f"{type(exc).__name__}: {exc}"
        self._versions = None
        self._engine_ok = False
        self._engine_problem = " ".join(text.split())
        self.query_one("#engine", Static).set_class(True, "-down")
        self._apply_bottles([])

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place unhandled worker errors land: a banner, never an exit."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self._engine_down(event.worker.error)

    def _update_header(self) -> None:
        line = self.query_one("#engine", Static)
        n_agents, n_pending = len(self._bottles), len(self._pending)
        counts = f"{n_agents} agent{'s' if n_agents != 1 else ''} · {n_pending} pending proposal{'s' if n_pending != 1 else ''}"
        waiting = sum(1 for s in self._bottles if (st := self._status_of.get(s)) and st.waiting)
        if waiting:
            counts += f" · {waiting} waiting for input"
        if self._engine_ok is False:
            line.update(inert(f"engine: {self._engine_problem} · {counts}"))
        elif self._versions:
            line.update(inert(f"{counts} · {self._versions}"))
        else:
            line.update(inert(f"{counts} · engine: checking…"))
        self.query_one("#proposals", DataTable).border_subtitle = f"{n_pending} pending"
        self.query_one("#bottles", DataTable).border_subtitle = f"{n_agents} running"

    @staticmethod
    def _text(cell: Any) -> Text:
        text, style = (cell, "") if isinstance(cell, str) else cell
        return Text(text, style=style, no_wrap=True, end="")

    def _sync(self, table: DataTable, columns: Sequence[tuple[str, str]], wanted: dict[str, dict[str, Any]],
              only: Iterable[str] | None = None) -> list[str]:
        """Make ``table`` show ``wanted`` (row key -> cells) by touching only what changed; with
        ``only``, just those keys are looked at (the rest of ``wanted`` may be left out). Returns
        the keys of rows added."""
        shown = self._cells.setdefault(table.id or "", {})
        if only is None:
            gone, keys = set(shown) - set(wanted), list(wanted)
        else:
            only = list(only)
            gone, keys = {k for k in only if k in shown and k not in wanted}, [k for k in only if k in wanted]
        for key in gone:
            table.remove_row(key)
            del shown[key]
        added = []
        for key in keys:
            cells = wanted[key]
            before = shown.get(key)
            if before == cells:
                continue
            if before is None:
                table.add_row(*(self._text(cells[c]) for c, _ in columns), key=key)
                added.append(key)
            else:
                for col, value in cells.items():
                    if before.get(col) != value:
                        # the slug cell grows by the right pane's "* " marker
                        table.update_cell(key, col, self._text(value), update_width=col == "slug")
            shown[key] = cells
        return added

    def _highlight(self, text: str) -> tuple[str, str]:
        colour = self.theme_variables.get("warning")
        return text, f"bold {colour}" if colour else "bold reverse"

    def _agent_rows(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        pending = Counter(p.slug for p in self._pending.values())
        rows = {}
        for slug, info in self._bottles.items():
            status = self._status_of.get(slug)
            cells = agent_cells(info, pending.get(slug, 0), status, now)
            if self._occupant is not None and self._occupant.slug == slug:
                cells["slug"] = ("* " + cells["slug"], "bold")  # the agent in the right-hand pane
            if status is not None and status.waiting:
                cells["status"] = self._highlight(cells["status"])
            rows[slug] = cells
        return rows

    def _apply_bottles(self, bottles: Sequence[BottleInfo], statuses: dict[str, AgentStatus] | None = None) -> None:
        wanted = {b.slug: b for b in bottles}
        statuses = self._status_of if statuses is None else statuses
        statuses = {s: st for s, st in statuses.items() if s in wanted}
        if wanted == self._bottles and statuses == self._status_of and self._status_loaded:
            self._update_header()  # the engine line may have changed; the rows did not
            return
        gone = set(self._bottles) - set(wanted)
        self._bottles, self._status_of = wanted, statuses
        with self.batch_update():
            self._sync(self.agents_table, AGENT_COLUMNS, self._agent_rows())
        self._agents_changed()
        if gone and self._split is not None:
            self.check_pane()  # a bottle that went takes its claude's pane with it

    def _agents_changed(self) -> None:
        waiting = {s for s, st in self._status_of.items() if st.waiting}
        fresh = waiting - self._waiting_alerted
        self._waiting_alerted = waiting
        if not self._status_loaded:  # startup does not ring for what was waiting already
            fresh, self._status_loaded = set(), bool(self._bottles) or self._engine_ok is not None
        self.agents_table.set_class(bool(waiting), "-alert")
        if fresh:
            self.bell()
            self.notify(f"{len(fresh)} agent(s) waiting for input: {', '.join(sorted(fresh))[:200]}", title="Waiting", markup=False)
        hint = PANE_HINT if self._split is not None else ATTACH_HINT
        if not self._bottles:
            hint = "No agents are running: press n to start one. " + hint
        self.query_one("#hint", Static).update(Text(hint))
        self._update_header()
        self._refresh_keys()

    def _refresh_keys(self) -> None:
        """Re-check the footer's keys when what they depend on changed (a pane became empty or
        not, the engine went or came back); cheap to call, since the footer re-renders only then."""
        basis = (bool(self._pending), bool(self._bottles), self._engine_ok)
        if basis != getattr(self, "_keys_basis", None):
            self._keys_basis = basis
            self.refresh_bindings()

    def _rerender(self) -> None:
        """Ages move on: re-render the cells (no I/O; unchanged cells are not touched)."""
        with self.batch_update():
            self._sync(self.agents_table, AGENT_COLUMNS, self._agent_rows())
            self._sync(self.proposals_table, PROPOSAL_COLUMNS, self._proposal_rows())

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

    # --- proposals and status from the state folder -------------------------------------------

    @work(exclusive=True, group="proposals", exit_on_error=False)
    async def reload_proposals(self) -> None:
        found = await asyncio.to_thread(self._load_proposals, self.home)
        self._apply_proposals({p.id: p for p in found if p.pending})

    @work(exclusive=True, group="watch", exit_on_error=False)
    async def watch_state(self) -> None:
        """Queue files and status files as they change (inotify through watchfiles; no polling).
        If the watch ends (state/ removed, a watch error), it is set up again after the reconcile
        interval, and a full reload catches up with what it missed."""
        from watchfiles import awatch

        home = self.home.resolve()  # watchfiles reports resolved, absolute paths
        root = state_root(home)
        while True:
            try:
                await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True, mode=0o700)
                # A new bottle's folders appear while we watch; watchfiles follows new sub-folders itself.
                async for changes in awatch(root, watch_filter=lambda _change, path: changed_file(home, path) is not None,
                                            debounce=20, step=5, recursive=True):
                    await self._on_changes(home, changes)
            except (OSError, RuntimeError):
                pass
            await asyncio.sleep(self._poll_seconds)
            self.reload_proposals()

    async def _on_changes(self, home: Path, changes: set[tuple[object, str]]) -> None:
        found = [(hit, Path(path)) for _, path in changes if (hit := changed_file(home, path)) is not None]
        queue = {(path, state) for (kind, state), path in found if kind == "proposal"}
        status = {state for (kind, state), _ in found if kind == "status"}
        if queue:
            loaded = await asyncio.to_thread(_load_changed, queue)
            updated = dict(self._pending)
            for pid, p in loaded.items():
                if p is None:
                    updated.pop(pid, None)
                else:
                    updated[pid] = p
            self._apply_proposals(updated, set(loaded))
        if status:
            read = await asyncio.to_thread(lambda: {state.slug: read_status(state.status_file) for state in status})
            for slug, st in read.items():
                if st is None:
                    self._status_of.pop(slug, None)
                elif slug in self._bottles:
                    self._status_of[slug] = st
            with self.batch_update():
                self._sync(self.agents_table, AGENT_COLUMNS, self._agent_rows())
            self._agents_changed()

    def _proposal_rows(self, only: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        now = self._clock()
        rows = {}
        for pid in (self._pending if only is None else [k for k in only if k in self._pending]):
            p = self._pending[pid]
            cached = self._static.get(pid)
            if cached is None or cached[0] is not p:
                cached = self._static[pid] = (p, proposal_static(p))
            rows[pid] = proposal_cells(p, now, cached[1])
        for pid in (set(self._static) - set(self._pending)) if only is None else [k for k in only if k not in self._pending]:
            self._static.pop(pid, None)
        return rows

    def _apply_proposals(self, pending: dict[str, Proposal], changed: set[str] | None = None) -> None:
        """Show ``pending``; ``changed`` (ids whose file changed) limits the work to those rows."""
        ordered = dict(sorted(pending.items(), key=lambda kv: (kv[1].data.get("created_at", ""), kv[0])))
        self._pending = ordered
        if changed is None:
            new = [pid for pid in ordered if pid not in self._seen]
        else:  # oldest first, like the table
            new = sorted((pid for pid in changed if pid in ordered and pid not in self._seen), key=lambda pid: (ordered[pid].data.get("created_at", ""), pid))
        self._seen.update(new)
        with self.batch_update():
            self._sync(self.proposals_table, PROPOSAL_COLUMNS, self._proposal_rows(changed), only=changed)
            self._sync(self.agents_table, AGENT_COLUMNS, self._agent_rows())
        # Startup lasts until the first full load: a file event that lands before it (the queue's
        # lock file touched while loading, say) must not ring for proposals queued before startup.
        first_load = not self._proposals_loaded
        if changed is None:
            self._proposals_loaded = True
        if new and not first_load:
            self._alert(new)
        self._update_header()
        self._refresh_keys()

    def _alert(self, new: list[str]) -> None:
        """A new proposal: bell, highlighted pane, focus and cursor on the first new one, a toast."""
        table = self.proposals_table
        self.bell()
        table.add_class("-alert")
        self.set_timer(10, lambda: table.remove_class("-alert"))
        if len(self.screen_stack) == 1:
            table.focus()
            table.move_cursor(row=table.get_row_index(new[0]))
        if self._split is not None:
            self.select_console_pane()
        first = self._pending[new[0]]
        more = f" (+{len(new) - 1} more)" if len(new) > 1 else ""
        self.notify(inert(f"{first.slug}: {first.summary()}{more}").plain[:300], title="New proposal", markup=False)

    # --- proposal actions (all through bottle_tui.proposals) -----------------------------------

    @work(group="dialog", exit_on_error=False)
    async def open_proposal(self, p: Proposal) -> None:
        sections = await asyncio.to_thread(_detail_sections, self.home, p)
        choice = await self.push_screen_wait(ProposalDetail(sections, pending=p.pending))
        if choice == "approve":
            await self._approve(p)
        elif choice == "modify":
            await self._modify(p)
        elif choice == "reject":
            await self._reject(p)

    def action_approve(self) -> None:
        p = self.selected_proposal()
        if p is not None:
            self._run_dialog(self._approve(p))

    def action_modify(self) -> None:
        p = self.selected_proposal()
        if p is not None:
            self._run_dialog(self._modify(p))

    def action_reject(self) -> None:
        p = self.selected_proposal()
        if p is not None:
            self._run_dialog(self._reject(p))

    @work(group="dialog", exit_on_error=False)
    async def _run_dialog(self, flow: Awaitable[None]) -> None:
        await flow

    async def _approve(self, p: Proposal) -> None:
        scope = await self.push_screen_wait(ScopeScreen(f"{p.slug}: {p.summary()}"))
        if scope:
            await self._decide(p, "approve", scope=scope)

    async def _modify(self, p: Proposal) -> None:
        text = yaml.safe_dump(p.change, sort_keys=False)
        change = await self.push_screen_wait(EditorScreen(f"Modify {p.kind} of {p.slug} (narrow it; validated on save)", text, _change_validator(p)))
        if change is None:
            return
        scope = await self.push_screen_wait(ScopeScreen(f"{p.slug}: allow the modified change"))
        if scope:
            await self._decide(p, "modify", scope=scope, change=change)

    async def _reject(self, p: Proposal) -> None:
        note = await self.push_screen_wait(NoteScreen(f"{p.slug}: {p.summary()}"))
        if note is not None:
            await self._decide(p, "reject", note=note)

    async def _decide(self, p: Proposal, action: str, *, scope: str = "always", change: object = None, note: str = "") -> None:
        by = f"{proposals.operator()} (console)"
        try:
            outcome = await asyncio.to_thread(proposals.decide, self.home, p.id, action, by=by, scope=scope, change=change, note=note)
        except AlreadyDecided as exc:
            self.notify(inert(str(exc)).plain, title="Already decided", severity="warning", markup=False)
            self._forget(p.id)
            return
        except BottleError as exc:
            self.notify(inert(str(exc)).plain, title=f"Could not {action}", severity="error", markup=False)
            return
        self._forget(p.id)
        message = f"{p.id}: {outcome.proposal.status}" + (" (routes.yaml updated)" if outcome.policy_changed else "")
        if outcome.policy_changed:
            warning = await proposals.reload_bundle(p.slug)
            if warning:
                message += f"; {warning}"
        self.notify(inert(message).plain, title="Decided", markup=False)

    def _forget(self, pid: str) -> None:
        pending = dict(self._pending)
        pending.pop(pid, None)
        self._apply_proposals(pending, {pid})

    # --- agent actions -------------------------------------------------------------------------

    def action_new_agent(self) -> None:
        self.new_agent()

    @work(group="dialog", exit_on_error=False)
    async def new_agent(self) -> None:
        from ..manifest import load_manifests

        try:
            manifests = await asyncio.to_thread(load_manifests, self.home)
        except BottleError as exc:
            self.notify(inert(str(exc)).plain, title="Manifests", severity="error", markup=False)
            return
        running = Counter(b.agent for b in self._bottles.values())
        agents = [(a.name, a.description, running.get(a.name, 0)) for a in sorted(manifests.agents.values(), key=lambda a: a.name)]
        name = await self.push_screen_wait(PickerScreen(agents))
        if not name:
            return
        from ..cli import plan_for
        from ..plan import preflight_text

        try:
            plan = await asyncio.to_thread(self._make_plan or plan_for, self.home, name)
        except BottleError as exc:
            self.notify(inert(str(exc)).plain, title="Plan", severity="error", markup=False)
            return
        if not await self.push_screen_wait(ConfirmScreen(f"Start {plan.slug}?", preflight_text(plan), wide=True)):
            return
        if self._split is not None:
            header = f"bringing up {plan.slug} (its bringup.log); claude opens here when it is up"
            if await self._pane_show(follow_log_argv(plan.state.bringup_log, header), plan.slug, "bringup", select=False):
                self.start_bottle(plan, None)
                return
        log = LogScreen(f"Starting {plan.slug}…")
        await self.push_screen(log)
        self.start_bottle(plan, log)

    @work(group="start", exit_on_error=False)
    async def start_bottle(self, plan: Any, log: LogScreen | None) -> None:
        """Start a bottle; its progress goes to ``log`` (a dialog) or, with ``log`` None, to its
        bringup.log, which the right pane follows: the console's own screen never gets it."""
        from ..plan import missing_secrets

        pane_log = PaneLog(plan.state.bringup_log) if log is None else None

        def say(message: str) -> None:
            if pane_log is not None:
                pane_log(message)
            elif log.is_attached:
                log.write(message)

        for secret in missing_secrets(plan, dict(os.environ)):
            say(f"warning: ${secret} is not set here: requests through routes that inject it will fail")
        tail = asyncio.create_task(self._tail(plan.state.bringup_log, say)) if log is not None else None
        try:
            await self._start(plan, say)
        except BottleError as exc:
            if tail is not None:
                await self._stop_tail(tail)
            say(f"error: {exc}")
            if log is not None and log.is_attached:
                log.set_title(f"{plan.slug} did not start")
            self.notify(inert(f"{plan.slug} did not start: {exc}").plain[:300], title="Start", severity="error", markup=False)
            return
        if tail is not None:
            await self._stop_tail(tail)
        if log is not None:
            say(f"bottle {plan.slug} is up: Enter on its row attaches")
            if log.is_attached:
                log.set_title(f"{plan.slug} is up (Esc closes)")
        self.notify(f"{plan.slug} is up" + (" in the right-hand pane" if log is None else ""), title="Started", markup=False)
        self.refresh_bottles()
        if log is None:
            # The pane still follows this bring-up (the operator did not attach elsewhere meanwhile):
            # the new agent's claude replaces it.
            occupant = await self._pane_find()
            if occupant is not None and (occupant.slug, occupant.shows) == (plan.slug, "bringup"):
                await self._show_claude(plan.home, plan.slug, plan.backend, select=False)

    @staticmethod
    async def _stop_tail(tail: asyncio.Task) -> None:
        tail.cancel()
        try:
            await tail
        except asyncio.CancelledError:
            pass

    @staticmethod
    async def _tail(path: Path, say: Callable[[str], None]) -> None:
        """Stream what lifecycle.start appends to bringup.log (only while a start runs)."""
        offset = 0

        def read() -> str:
            nonlocal offset
            try:
                with path.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except OSError:
                return ""
            offset += len(chunk)
            return chunk.decode(errors="replace")

        try:
            while True:
                for line in (await asyncio.to_thread(read)).splitlines():
                    say(line)
                await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            for line in read().splitlines():
                say(line)
            raise

    def action_stop(self) -> None:
        info = self.selected_bottle()
        if info is not None:
            self.stop_bottle(info)

    @work(group="dialog", exit_on_error=False)
    async def stop_bottle(self, info: BottleInfo) -> None:
        if not await self.push_screen_wait(ConfirmScreen(f"Stop {info.slug}?", f"agent {info.agent}, started {info.started_at}\nLogs, transcript and egress decisions go to archive/{info.slug}/.")):
            return
        home = _bottle_home(info, self.home)
        order = [key.value for key in self.agents_table.rows]
        # The teardown shows in the right pane when the pane holds this agent or only a log; a
        # pane where another agent's claude is at work is left alone.
        in_pane = False
        if self._split is not None:
            occupant = await self._pane_find()
            if occupant is not None and (occupant.slug == info.slug or occupant.shows != "claude"):
                header = f"stopping {info.slug} (its teardown.log)"
                in_pane = await self._pane_show(follow_log_argv(state_dir(home, info.slug).teardown_log, header), info.slug, "teardown", select=False)
        self.notify(f"stopping {info.slug}…", markup=False)
        said: list[str] = []
        try:
            report = await self._stop_fn(home, info, said.append)
        except BottleError as exc:
            self.notify(inert(f"{info.slug} did not stop: {exc}").plain[:300], title="Stop", severity="error", markup=False)
            return
        problems = f", but {len(report.problems)} step(s) failed: {report.problems[0]}" if report.problems else ""
        self.notify(inert(f"stopped {info.slug}{problems}").plain[:300], title="Stopped", markup=False,
                    severity="warning" if problems else "information")
        self.refresh_bottles()
        if in_pane:
            await self._pane_after_stop(info.slug, order)

    async def _pane_after_stop(self, stopped: str, order: list[str]) -> None:
        """The agent in the right pane was stopped: the next agent takes the pane (the one now in
        its row, else the new last row); with none left the pane closes."""
        occupant = await self._pane_find()
        if occupant is None or occupant.slug != stopped:
            return  # the operator put something else there meanwhile
        rows = [key.value for key in self.agents_table.rows if key.value != stopped]
        after = order[order.index(stopped) + 1:] if stopped in order else []
        nxt = next((slug for slug in after if slug in rows), rows[-1] if rows else None)
        if nxt is None or nxt not in self._bottles:
            await self._pane_call(lambda split: split.close())
            self._set_occupant(None)
            return
        info = self._bottles[nxt]
        await self._show_claude(_bottle_home(info, self.home), nxt, info.backend, select=False)

    @work(group="dialog", exit_on_error=False)
    async def attach(self, info: BottleInfo) -> None:
        from ..cli import claude_argv_for
        from ..runner import interactive

        home = _bottle_home(info, self.home)
        if self._split is not None and await self._show_claude(home, info.slug, info.backend, select=True):
            return
        try:
            argv = await asyncio.to_thread(claude_argv_for, home, info.slug, fresh=False)
            full = backends.get(info.backend).exec_argv(info.slug, argv, tty=True, env={"TERM": os.environ.get("TERM", "xterm-256color")})
        except BottleError as exc:
            self.notify(inert(str(exc)).plain, title="Attach", severity="error", markup=False)
            return
        try:
            with self.suspend():
                await interactive(full)
        except SuspendNotSupported:
            self.notify(f"this terminal cannot hand over: run `bottle-tui attach {info.slug}` from a shell", severity="warning", markup=False)
        self.refresh_bottles()

    # --- the right-hand tmux pane (tmux.py; every call in a thread) -----------------------------

    @work(group="pane", exit_on_error=False)
    async def setup_pane(self) -> None:
        try:
            split = await asyncio.to_thread(RightPane.from_env, self._tmux_env)
            if split is not None:
                await asyncio.to_thread(split.mark_console, True)
                occupant = await asyncio.to_thread(split.find)
        except TmuxError as exc:
            self.notify(inert(f"tmux: {exc}; Enter opens claude full-screen instead").plain, title="tmux", severity="warning", markup=False)
            return
        if split is None:
            return
        self._split = split
        self._set_occupant(occupant)  # a console restarted in this window adopts the pane there
        self._agents_changed()

    async def _pane_call(self, fn: Callable[[RightPane], Any]) -> tuple[bool, Any]:
        """Run ``fn(split)`` in a thread, one pane operation at a time. A tmux failure becomes a
        one-line message; when the server or the console's pane is gone, the split mode ends
        and Enter falls back to suspending the console."""
        split = self._split
        if split is None:
            return False, None
        async with self._pane_lock:
            try:
                return True, await asyncio.to_thread(fn, split)
            except TmuxError as exc:
                problem = str(exc)
            alive = await asyncio.to_thread(split.alive)
        if not alive:
            self._split = None
            self._set_occupant(None)
            self._agents_changed()
            self.notify(inert(f"tmux: {problem}; the tmux server or this pane is gone, so Enter opens claude full-screen").plain,
                        title="tmux", severity="warning", markup=False)
        else:
            self.notify(inert(f"tmux: {problem}").plain, title="tmux", severity="warning", markup=False)
        return False, None

    async def _pane_find(self) -> Occupant | None:
        """What the right pane shows now. When it no longer shows the claude it showed (claude
        ended, or the user closed the pane), that claude is ended in its bottle."""
        before = self._occupant
        ok, occupant = await self._pane_call(lambda split: split.find())
        if not ok:
            return None
        self._set_occupant(occupant)
        if before is not None and before.shows == "claude" and (occupant is None or occupant.slug != before.slug):
            self._end_claude(before.slug)
        return occupant

    async def _pane_show(self, argv: list[str], slug: str, shows: str, *, select: bool) -> bool:
        ok, result = await self._pane_call(lambda split: split.show(argv, slug=slug, shows=shows, select=select))
        if not ok:
            return False
        occupant, before = result
        self._set_occupant(occupant)
        if before is not None and before.shows == "claude" and before.slug != slug:
            self._end_claude(before.slug)
        return True

    async def _show_claude(self, home: Path, slug: str, backend: str, *, select: bool) -> bool:
        try:
            argv = await asyncio.to_thread(self._pane_argv, home, slug, backend)
        except BottleError as exc:
            self.notify(inert(str(exc)).plain, title="Attach", severity="error", markup=False)
            return True  # said why; no fallback either would work
        return await self._pane_show(argv, slug, "claude", select=select)

    def _end_claude(self, slug: str) -> None:
        """The pane left ``slug``'s claude: end it in the bottle, in the background."""
        info = self._bottles.get(slug)
        if info is not None:
            self.run_worker(self._end_session(_bottle_home(info, self.home), slug, info.backend), group="pane-end", exit_on_error=False)

    def _set_occupant(self, occupant: Occupant | None) -> None:
        if occupant == self._occupant:
            return
        self._occupant = occupant
        with self.batch_update():
            self._sync(self.agents_table, AGENT_COLUMNS, self._agent_rows())

    @work(exclusive=True, group="pane-check", exit_on_error=False)
    async def check_pane(self) -> None:
        """Look at the right pane again (it may have closed): only while it shows something."""
        if self._occupant is not None:
            await self._pane_find()

    def release_pane(self) -> None:
        """After the console has quit (its event loop is gone): its pane no longer runs a
        console. The right pane and its claude stay."""
        if self._split is not None:
            try:
                self._split.mark_console(False)
            except TmuxError:
                pass

    @work(group="pane", exit_on_error=False)
    async def select_console_pane(self) -> None:
        await self._pane_call(lambda split: split.select_console())

    def action_edit_routes(self) -> None:
        info = self.selected_bottle()
        if info is not None:
            self.edit_routes(info)

    @work(group="dialog", exit_on_error=False)
    async def edit_routes(self, info: BottleInfo) -> None:
        home = _bottle_home(info, self.home)
        try:
            state = proposals.state_for(home, info.slug)

            def read() -> str:
                with proposals.queue_lock(state):
                    return proposals.read_policy(state)[0]

            before = await asyncio.to_thread(read)
        except BottleError as exc:
            self.notify(inert(str(exc)).plain, title="Routes", severity="error", markup=False)
            return

        def validate(text: str) -> str:
            proposals.parse_policy(text, proposals.routes_path(state))
            return text

        body = await self.push_screen_wait(EditorScreen(f"routes.yaml of {info.slug} (validated on save, applied live)", before, validate))
        if body is None or body == before:
            return
        try:
            await asyncio.to_thread(proposals.save_policy_text, home, state, before, body, f"{proposals.operator()} (console)")
        except BottleError as exc:
            self.notify(inert(str(exc)).plain, title="Routes", severity="error", markup=False)
            return
        warning = await proposals.reload_bundle(state.slug)
        self.notify(inert(warning or f"routes.yaml of {state.slug} saved and reloaded").plain, title="Routes",
                    severity="warning" if warning else "information", markup=False)

    def action_edit_dlp(self) -> None:
        # The DLP settings (the bottle's, and each route's) live in routes.yaml beside the routes.
        info = self.selected_bottle()
        if info is not None:
            self.edit_routes(info)

    def action_logs(self) -> None:
        info = self.selected_bottle()
        if info is not None:
            self.show_logs(info)

    @work(group="dialog", exit_on_error=False)
    async def show_logs(self, info: BottleInfo) -> None:
        log = LogScreen(f"Logs of {info.slug} (docker compose logs)")
        await self.push_screen(log)
        try:
            text = await engine.logs(info.project)
        except BottleError as exc:
            text = f"error: {exc}"
        if log.is_attached:
            for line in text.splitlines()[-2000:]:
                log.write(line)


def known_binding_ids() -> list[str]:
    from .screens import ConfirmScreen as C, EditorScreen as E, LogScreen as L, NoteScreen as N, PickerScreen as P
    from .screens import ProposalDetail as D, ScopeScreen as S

    ids = []
    for cls in (BottleConsole, D, S, N, E, P, C, L):
        ids += [b.id for b in cls.BINDINGS if isinstance(b, Binding) and b.id]
    return ids


def console_settings(home: Path, theme: str | None) -> tuple[str | None, dict[str, str]]:
    """Theme and keymap from config.yaml (``theme`` from --theme wins), checked: a one-line error
    names the file and the key."""
    from themes import THEMES

    config = load_config(home)
    path = config_path(home)
    known = known_binding_ids()
    for binding_id, _ in config.keymap:
        if binding_id not in known:
            raise BottleError(f"{path}: keymap.{binding_id}: unknown binding id; use one of: {', '.join(known)}")
    chosen = theme or config.theme
    if chosen is not None:
        builtin = set(App().available_themes)
        if chosen not in THEMES and chosen not in builtin:
            where = "--theme" if theme else f"{path}: theme"
            raise BottleError(f"{where}: unknown theme '{chosen[:40]}'; use one of: {', '.join([*THEMES, *sorted(builtin)])}")
    return chosen, dict(config.keymap)


def run_console(home: Path, theme: str | None = None) -> int:
    chosen, keymap = console_settings(home, theme)
    app = BottleConsole(home, theme=chosen, keymap=keymap, tmux_env=os.environ)
    app.run()
    app.release_pane()
    return 0
