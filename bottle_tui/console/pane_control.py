"""The right-hand tmux pane's controller: what it shows (an agent's claude, a bring-up or teardown
log, nothing), and the moves between (DESIGN.md §6). Every tmux call goes through ``tmux.py`` in
a thread, one at a time; a tmux failure is one line, and when the server or the console's own
pane is gone the split mode ends (Enter then suspends the console instead)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BottleError
from .inert import inert

if TYPE_CHECKING:
    from .app import BottleConsole
    from .tmux import Occupant, RightPane

# tmux.py (libtmux) and ops are imported where they are used: the first frame needs neither (the
# app imports them in a thread after it, BottleConsole.deferred, before ``setup`` runs).


class PaneController:
    """The console's right-hand pane. ``split`` is None outside tmux (or after tmux failed)."""

    def __init__(self, app: BottleConsole, env: Mapping[str, str] | None) -> None:
        self.app = app
        self.env = env
        self.split: RightPane | None = None
        self.occupant: Occupant | None = None
        self.stopping: set[str] = set()  # slugs this console is stopping (x): their flow moves the pane
        self._lock = asyncio.Lock()

    def _say(self, text: str) -> None:
        self.app.notify(inert(text).plain, title="tmux", severity="warning", markup=False)

    async def setup(self) -> None:
        from .tmux import RightPane, TmuxError

        try:
            split = await asyncio.to_thread(RightPane.from_env, self.env)
            if split is not None:
                await asyncio.to_thread(split.mark_console, True)
                occupant = await asyncio.to_thread(split.find)
        except TmuxError as exc:
            self._say(f"tmux: {exc}; Enter opens claude full-screen instead")
            return
        if split is None:
            return
        self.split = split
        self._set_occupant(occupant)  # a console restarted in this window adopts the pane there
        self.app.agents_changed()

    async def call(self, fn: Callable[[RightPane], Any], then: Callable[[Any], None] | None = None) -> tuple[bool, Any]:
        """Run ``fn(split)`` in a thread, one pane operation at a time (see the module's doc);
        ``then(result)`` runs before the next operation may start, so what the pane shows is
        never set from an older look than the newest."""
        split = self.split
        if split is None:
            return False, None
        from .tmux import TmuxError

        async with self._lock:
            try:
                result = await asyncio.to_thread(fn, split)
            except TmuxError as exc:
                problem = str(exc)
            else:
                if then is not None:
                    then(result)
                return True, result
            alive = await asyncio.to_thread(split.alive)
        if not alive:
            self.split = None
            self._set_occupant(None)
            self.app.agents_changed()
            self._say(f"tmux: {problem}; the tmux server or this pane is gone, so Enter opens claude full-screen")
        else:
            self._say(f"tmux: {problem}")
        return False, None

    async def find(self) -> Occupant | None:
        """What the right pane shows now. When it no longer shows the claude it showed (claude
        ended, or the user closed the pane), that claude is ended in its bottle."""

        def seen(occupant: Occupant | None) -> None:
            before = self.occupant
            self._set_occupant(occupant)
            if before is not None and before.shows == "claude" and (occupant is None or occupant.slug != before.slug):
                self._end_claude(before.slug)

        ok, occupant = await self.call(lambda split: split.find(), seen)
        return occupant if ok else None

    async def show(self, argv: list[str], slug: str, shows: str, *, select: bool) -> bool:
        def shown(result: tuple[Occupant, Occupant | None]) -> None:
            occupant, before = result
            self._set_occupant(occupant)
            if before is not None and before.shows == "claude" and before.slug != slug:
                self._end_claude(before.slug)

        ok, _ = await self.call(lambda split: split.show(argv, slug=slug, shows=shows, select=select), shown)
        return ok

    async def show_claude(self, home: Path, slug: str, backend: str, *, select: bool) -> bool:
        try:
            argv = await asyncio.to_thread(self.app.pane_argv, home, slug, backend)
        except BottleError as exc:
            self.app.notify(inert(str(exc)).plain, title="Attach", severity="error", markup=False)
            return True  # said why; no fallback either would work
        return await self.show(argv, slug, "claude", select=select)

    def _end_claude(self, slug: str) -> None:
        """The pane left ``slug``'s claude: end it in the bottle, in the background."""
        from .. import ops

        info = self.app.agents_pane.bottles.get(slug)
        if info is not None:
            home = ops.bottle_home(info, self.app.home)
            self.app.run_worker(self.app.end_session(home, slug, info.backend), group="pane-end", exit_on_error=False)

    def _set_occupant(self, occupant: Occupant | None) -> None:
        if occupant != self.occupant:
            self.occupant = occupant
            self.app.agents_pane.show_in_pane(occupant.slug if occupant is not None else None)

    async def after_stop(self, stopped: str, order: list[str]) -> None:
        """The agent in the right pane was stopped: the next agent takes the pane (the one now in
        its row, else the new last row); with none left the pane closes."""
        occupant = await self.find()
        if occupant is None or occupant.slug != stopped:
            return  # the operator put something else there meanwhile
        bottles = self.app.agents_pane.bottles
        rows = [slug for slug in self.app.agents_pane.keys() if slug != stopped]
        after = order[order.index(stopped) + 1 :] if stopped in order else []
        nxt = next((slug for slug in after if slug in rows), rows[-1] if rows else None)
        if nxt is None or nxt not in bottles:
            await self.call(lambda split: split.close())
            self._set_occupant(None)
            return
        from .. import ops

        info = bottles[nxt]
        await self.show_claude(ops.bottle_home(info, self.app.home), nxt, info.backend, select=False)

    async def bottles_gone(self, gone: list[str], order: list[str]) -> None:
        """Bottles went (stopped from outside this console: the CLI, another console). The pane,
        when it showed one of their claudes, is handed on exactly as after ``x``; else it is
        looked at again (it may have closed with its claude). A bring-up log stays up to read."""
        occupant = self.occupant
        if (
            occupant is not None
            and occupant.shows == "claude"
            and occupant.slug in gone
            and occupant.slug not in self.stopping
        ):
            await self.after_stop(occupant.slug, order)
        else:
            await self.find()

    async def check(self) -> None:
        """Look at the right pane again (it may have closed): only while it shows something."""
        if self.occupant is not None:
            await self.find()

    def release(self) -> None:
        """After the console has quit (its event loop is gone): its pane no longer runs a
        console. The right pane and its claude stay."""
        if self.split is not None:
            from .tmux import TmuxError

            try:
                self.split.mark_console(False)
            except TmuxError:
                pass

    async def select_console(self) -> None:
        await self.call(lambda split: split.select_console())
