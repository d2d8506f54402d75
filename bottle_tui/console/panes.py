"""The main screen's two panes, each a widget that owns its table, its keys and its rows: the
proposals pane (top) and the agents pane (below). They learn what to show from the workers'
messages (``messages.py``) and hand their keys' work to the flows (``*_flows.py``)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from textual.widgets import DataTable

from . import keys
from .inert import inert
from .messages import BottlesFound, EngineDown, ProposalsLoaded, StatusRead, UsageRead
from .rows import AGENT_COLUMNS, PROPOSAL_COLUMNS, AgentStatus, agent_cells, proposal_cells, proposal_static
from .table import Cell, PaneTable

_V = TypeVar("_V")

if TYPE_CHECKING:
    from ..ops import BottleInfo, BottleUsage, Proposal
    from .app import BottleConsole


class ConsolePane(PaneTable):
    """What both panes share: the app they belong to, and the keys that act on a selected row."""

    ROW_ACTIONS: tuple[str, ...] = ()

    @property
    def console(self) -> BottleConsole:
        from .app import BottleConsole

        app = self.app
        assert isinstance(app, BottleConsole)
        return app

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if len(self.app.screen_stack) > 1:
            return False  # a dialog is open: the footer behind it offers none of the pane's keys
        if action in self.ROW_ACTIONS:
            return self.selected_key() is not None and self.has_selection()
        return True

    def has_selection(self) -> bool:
        return True


class ProposalsPane(ConsolePane):
    """Pending proposals, oldest first. A new one rings, highlights the pane and takes the cursor."""

    BINDINGS = [
        keys.SWITCH,
        keys.QUIT,
        keys.DOWN,
        keys.UP,
        keys.OPEN,
        keys.APPROVE,
        keys.MODIFY,
        keys.REJECT,
        keys.NEW,
        keys.REFRESH,
    ]
    ROW_ACTIONS = keys.PROPOSAL_ACTIONS

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__(id="proposals", title="Proposals", columns=PROPOSAL_COLUMNS)
        self.clock = clock
        self.pending: dict[str, Proposal] = {}  # by id, oldest first
        self.seen: set[str] = set()  # every id shown once: a proposal rings only the first time
        self.loaded = False  # the first full load is done (startup is over)
        self._static: dict[str, tuple[Proposal, dict[str, str]]] = {}  # id -> its time-free cells

    def selected(self) -> Proposal | None:
        key = self.selected_key()
        return self.pending.get(key) if key else None

    def has_selection(self) -> bool:
        return self.selected() is not None

    def rows_wanted(self, only: set[str] | None = None) -> dict[str, dict[str, Cell]]:
        now = self.clock()
        rows: dict[str, dict[str, Cell]] = {}
        for pid in self.pending if only is None else [k for k in only if k in self.pending]:
            p = self.pending[pid]
            cached = self._static.get(pid)
            if cached is None or cached[0] is not p:
                cached = self._static[pid] = (p, proposal_static(p))
            rows[pid] = dict(proposal_cells(p, now, cached[1]))
        for pid in (
            (set(self._static) - set(self.pending)) if only is None else [k for k in only if k not in self.pending]
        ):
            self._static.pop(pid, None)
        return rows

    def apply(self, pending: dict[str, Proposal], changed: set[str] | None = None) -> tuple[list[str], bool]:
        """Show ``pending``; ``changed`` (ids whose file changed) limits the work to those rows.
        Returns the ids never shown before (oldest first) and whether they ring."""
        if changed is not None:
            merged = dict(self.pending)
            for pid in changed:
                if pid in pending:
                    merged[pid] = pending[pid]
                else:
                    merged.pop(pid, None)
            pending = merged
        ordered = dict(sorted(pending.items(), key=lambda kv: (kv[1].data.get("created_at", ""), kv[0])))
        self.pending = ordered
        if changed is None:
            new = [pid for pid in ordered if pid not in self.seen]
        else:  # oldest first, like the table
            new = sorted(
                (pid for pid in changed if pid in ordered and pid not in self.seen),
                key=lambda pid: (ordered[pid].data.get("created_at", ""), pid),
            )
        self.seen.update(new)
        with self.app.batch_update():
            self.sync(self.rows_wanted(changed), only=changed)
        # Startup lasts until the first full load: a file event that lands before it (the queue's
        # lock file touched while loading, say) must not ring for proposals queued before startup.
        first_load = not self.loaded
        if changed is None:
            self.loaded = True
        return new, bool(new) and not first_load

    def on_proposals_loaded(self, message: ProposalsLoaded) -> None:
        message.new, message.ring = self.apply(message.pending, message.changed)

    def forget(self, pid: str) -> None:
        """A proposal this console decided (or found decided): its row goes now."""
        self.post_message(ProposalsLoaded({}, {pid}))

    def alert(self, new: list[str]) -> None:
        """A new proposal: the highlighted pane, focus and cursor on the first new one."""
        self.add_class("-alert")
        self.set_timer(10, lambda: self.remove_class("-alert"))
        if len(self.app.screen_stack) == 1:
            self.focus()
            self.move_cursor(row=self.get_row_index(new[0]))

    def rerender(self) -> None:
        self.sync(self.rows_wanted())

    def _flow(self, what: str) -> None:
        from . import proposal_flows  # the dialogs: imported when a key first opens one

        p = self.selected()
        if p is not None:
            proposal_flows.run(self.console, p, what)

    def action_open(self) -> None:
        self._flow("open")

    def action_approve(self) -> None:
        self._flow("approve")

    def action_modify(self) -> None:
        self._flow("modify")

    def action_reject(self) -> None:
        self._flow("reject")


def home_label(label: str) -> str:
    """A home as a short cell: ~ for the user's home folder; a long one keeps its last 27 characters."""
    user = os.path.expanduser("~")
    text = (
        "~" + label[len(user) :] if user not in ("", "/") and (label == user or label.startswith(user + "/")) else label
    )
    return text if len(text) <= 28 else "…" + text[-27:]


class AgentsPane(ConsolePane):
    """Running bottles of every home on the engine; another home's are marked with that home. The
    agent in the right-hand tmux pane is marked with ``*``, one waiting for input is highlighted."""

    BINDINGS = [
        keys.SWITCH,
        keys.QUIT,
        keys.DOWN,
        keys.UP,
        keys.OPEN,
        keys.NEW,
        keys.STOP,
        keys.ROUTES,
        keys.DLP,
        keys.LOGS,
        keys.DIFF,
        keys.NO_DIFF,
        keys.SNAPSHOT,
        keys.REFRESH,
    ]
    ROW_ACTIONS = keys.AGENT_ACTIONS

    def __init__(self, home: Path, clock: Callable[[], datetime]) -> None:
        super().__init__(id="bottles", title="Agents", columns=AGENT_COLUMNS)
        self.home = home
        self.clock = clock
        self.bottles: dict[str, BottleInfo] = {}
        self.statuses: dict[str, AgentStatus] = {}
        self.usages: dict[str, BottleUsage] = {}  # what each spent, as egress counted it
        self.pending: Counter[str] = Counter()  # pending proposals per slug (the app pushes it)
        self.in_pane: str | None = None  # the slug the right-hand pane shows
        self.status_loaded = False
        self._ours: dict[str, bool] = {}  # home label -> whether it is this console's home
        self.has_work: dict[str, bool] = {}  # slug -> it has git (d reviews its work); a worker fills it

    def selected(self) -> BottleInfo | None:
        key = self.selected_key()
        return self.bottles.get(key) if key else None

    def has_selection(self) -> bool:
        return self.selected() is not None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        allowed = super().check_action(action, parameters)
        if action in ("diff", "no_diff") and allowed:
            info = self.selected()
            has = info is not None and self.has_work.get(info.slug, False)
            return has if action == "diff" else not has
        return allowed

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_bindings()  # d shows for a bottle with git only

    def other_home(self, info: BottleInfo) -> str | None:
        """The home that started ``info`` when it is not this console's (its label says), else None.
        A bottle without the label (started before there was one) counts as ours."""
        if not info.home:
            return None
        ours = self._ours.get(info.home)
        if ours is None:
            ours = self._ours[info.home] = os.path.realpath(info.home) == os.path.realpath(self.home)
        return None if ours else info.home

    def rows_wanted(self) -> dict[str, dict[str, Cell]]:
        now = self.clock()
        rows: dict[str, dict[str, Cell]] = {}
        for slug, info in self.bottles.items():
            status = self.statuses.get(slug)
            usage = self.usages.get(slug)
            cells: dict[str, Cell] = dict(agent_cells(info, self.pending.get(slug, 0), status, now, usage))
            if usage is not None and (usage.budget or {}).get("level") in ("warn", "reached"):
                cells["spend"] = self.console.highlight(str(cells["spend"]))
            other = self.other_home(info)
            if other is not None:
                cells["agent"] = f"{cells['agent']} (home {home_label(other)})"
            if self.in_pane == slug:
                cells["slug"] = ("* " + str(cells["slug"]), "bold")  # the agent in the right-hand pane
            if status is not None and status.waiting:
                cells["status"] = self.console.highlight(str(cells["status"]))
            rows[slug] = cells
        return rows

    def rerender(self) -> None:
        with self.app.batch_update():
            self.sync(self.rows_wanted())

    def show_in_pane(self, slug: str | None) -> None:
        if slug != self.in_pane:
            self.in_pane = slug
            self.rerender()

    def apply(
        self, bottles: list[BottleInfo], statuses: dict[str, AgentStatus] | None = None
    ) -> tuple[list[str], list[str]]:
        """Show ``bottles``; returns the slugs whose rows went and the row order before."""
        wanted = {b.slug: b for b in bottles}
        order = self.keys()
        statuses = self.statuses if statuses is None else statuses
        statuses = {s: st for s, st in statuses.items() if s in wanted}
        if wanted == self.bottles and statuses == self.statuses:
            return [], order
        gone = [slug for slug in self.bottles if slug not in wanted]
        fresh = [b for slug, b in wanted.items() if slug not in self.has_work]
        self.bottles, self.statuses = wanted, statuses
        self.has_work = {slug: has for slug, has in self.has_work.items() if slug in wanted}
        self.rerender()
        if fresh:
            self.run_worker(self._learn_work(fresh), group="has-work", exit_on_error=False)
        return gone, order

    async def _learn_work(self, bottles: list[BottleInfo]) -> None:
        """Which new bottles have git (their state folders say so), off the event loop."""
        from .. import ops

        home = self.home
        found = await asyncio.to_thread(lambda: {b.slug: ops.has_work(home, b) for b in bottles})
        self.has_work.update({slug: has for slug, has in found.items() if slug in self.bottles})
        self.refresh_bindings()

    def on_bottles_found(self, message: BottlesFound) -> None:
        spent = self.usages
        if message.usages is not None:
            slugs = {b.slug for b in message.bottles}
            self.usages = {s: u for s, u in message.usages.items() if s in slugs}
        message.gone, message.order = self.apply(message.bottles, message.statuses)
        if not message.gone and self.usages != spent:
            self.rerender()  # only what was spent changed (apply re-renders when the rows did)

    def on_engine_down(self, message: EngineDown) -> None:
        message.gone, message.order = self.apply([])

    def _update(self, current: dict[str, _V], read: Mapping[str, _V | None]) -> None:
        """Files read again: each slug's new value (None: gone), for the bottles shown."""
        for slug, value in read.items():
            if value is None:
                current.pop(slug, None)
            elif slug in self.bottles:
                current[slug] = value
        self.rerender()

    def on_usage_read(self, message: UsageRead) -> None:
        self._update(self.usages, message.usages)

    def total_usd(self) -> float:
        """What the shown bottles spent in all (the priced models)."""
        return sum(float(u.totals.get("usd") or 0) for slug, u in self.usages.items() if slug in self.bottles)

    def on_status_read(self, message: StatusRead) -> None:
        self._update(self.statuses, message.statuses)

    def _selected_then(self, flow: Callable[[BottleConsole, BottleInfo], None]) -> None:
        info = self.selected()
        if info is not None:
            flow(self.console, info)

    # The flows (and their dialogs) are imported when a key first needs one.

    def action_open(self) -> None:
        from . import agent_flows

        self._selected_then(agent_flows.attach)

    def action_stop(self) -> None:
        from . import agent_flows

        self._selected_then(agent_flows.stop)

    def action_edit_routes(self) -> None:
        from . import policy_flow

        self._selected_then(policy_flow.edit_routes)

    def action_edit_dlp(self) -> None:
        from . import policy_flow

        # The DLP settings (the bottle's, and each route's) live in routes.yaml beside the routes.
        self._selected_then(policy_flow.edit_routes)

    def action_logs(self) -> None:
        from . import agent_flows

        self._selected_then(agent_flows.show_logs)

    def action_diff(self) -> None:
        from . import agent_flows

        self._selected_then(agent_flows.review_work)

    def action_snapshot(self) -> None:
        from . import agent_flows

        self._selected_then(agent_flows.snapshot)

    def action_no_diff(self) -> None:
        info = self.selected()
        if info is not None:
            self.console.notify(
                inert(f"{info.slug} has no git: in its bottle file, so there is no checkout to review").plain,
                title="Diff",
                markup=False,
            )
