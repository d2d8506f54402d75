"""The console's side of notifications (``bottle_tui.notify``): what the watchers' findings mean
as events (a new proposal, an agent newly waiting, a budget level that changed, a bottle whose
agent or bundle stopped running), the terminal sink through the app's own driver, and the home's
one notifier: the console holding ``state/.notify.lock`` sends; any other console or
`bottle-tui notify --watch` on the same home leaves it to that one and takes over (on its next
reconcile) when it quits, so no message goes out twice."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bottle_contract.files import try_lock

from ..config import NOTIFY_EVENTS, NotifySettings, load_config
from ..errors import BottleError
from ..state import notify_lock_path, state_dir

if TYPE_CHECKING:
    from ..notify import Event, Notifier
    from ..ops import BottleInfo, Proposal
    from .app import BottleConsole

# bottle_tui.notify (its sinks, the notifier's thread) is imported where it is used: only a
# console whose config.yaml turns notifications on needs it, and then after its first frame.

# A bottle whose teardown began this recently is being stopped (by this console, the CLI or
# another console), not dying: its containers leaving "running" is no news.
STOPPING_SECONDS = 600.0
SERVICE_NAMES = {"agent": "the agent", "sidecars": "the bundle"}
PASSTHROUGH_HINT = (
    "notify.terminal: tmux's allow-passthrough is off, so tmux drops the desktop notifications; "
    "turn it on with `tmux set -g allow-passthrough on` (tmux 3.3 or later)"
)


def take_lock(path: Path) -> int | None:
    """The home's notifier lock as an open descriptor, or None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return try_lock(path)


def tmux_passthrough(env: Mapping[str, str]) -> bool:
    """Whether tmux forwards DCS passthrough from this pane (tmux 3.3 added allow-passthrough, off
    by default; before it passthrough always worked, and the option does not exist)."""
    from ..runner import run_blocking

    pane = env.get("TMUX_PANE", "")
    try:
        out = run_blocking(
            ["tmux", "show-options", "-Apv", *(["-t", pane] if pane else []), "allow-passthrough"], timeout=5
        ).stdout
    except BottleError:
        return True
    return out.strip() in ("on", "all")


def proposal_events(found: Iterable[Proposal]) -> list[Event]:
    from ..notify import Event

    return [
        Event("proposal", p.slug, f"{'draft: ' if p.data.get('draft') else ''}{p.kind} {p.summary()}") for p in found
    ]


def died_events(
    before: Mapping[str, Mapping[str, str]], bottles: Iterable[BottleInfo], stopping: set[str]
) -> list[Event]:
    """A service that was running and is no longer (exited, dead, restarting...), for bottles not
    being stopped. A bottle that went from the engine entirely was removed, not dead."""
    from ..notify import Event

    events = []
    for info in bottles:
        was = before.get(info.slug)
        if was is None or info.slug in stopping:
            continue
        for service, state in sorted(info.services.items()):
            if was.get(service) == "running" and state != "running":
                what = SERVICE_NAMES.get(service, f"service {service}")
                events.append(Event("died", info.slug, f"{what} stopped running ({state})"))
    return events


def budget_event(slug: str, before: str | None, budget: Mapping[str, Any] | None) -> Event | None:
    """An event when the level rose to warn or reached (once per change); None otherwise."""
    from ..notify import Event, budget_text

    level = budget.get("level") if budget else None
    if budget is None or level == before or level not in ("warn", "reached"):
        return None
    return Event("budget", slug, budget_text(budget), level=str(level))


def being_stopped(home: Path, slug: str, now: float) -> bool:
    try:
        return now - state_dir(home, slug).teardown_log.stat().st_mtime < STOPPING_SECONDS
    except (OSError, BottleError):
        return False


class ConsoleNotifications:
    """Feeds the notifier from what the app's watchers already see; no poller of its own."""

    def __init__(self, app: BottleConsole, settings: NotifySettings, *, headless: bool = False) -> None:
        self.app, self.settings, self.headless = app, settings, headless
        self.notifier: Notifier | None = None
        self._lock_fd: int | None = None
        self.services: dict[str, dict[str, str]] = {}  # slug -> service -> state, as last discovered
        self.budgets: dict[str, str | None] = {}  # slug -> budget level last seen (None: no budget)
        self._told_waiting = False

    @property
    def active(self) -> bool:
        return self.notifier is not None

    def claim(self) -> list[str]:
        """Become the home's notifier if no one is (blocking: call in a thread). Returns problems."""
        if not self.settings.enabled or self.notifier is not None:
            return []
        from ..notify import Notifier, build_sinks

        fd = take_lock(notify_lock_path(self.app.home))
        if fd is None:
            if self.headless and not self._told_waiting:
                self._told_waiting = True
                return [
                    "notify --watch: another console on this home sends the notifications; this watch takes over when it quits"
                ]
            return []
        env = os.environ
        in_tmux = self.app.pane.env is not None and bool(env.get("TMUX"))
        write = None if self.headless else self._terminal_write
        sinks, problems = build_sinks(self.settings, env, terminal_write=write, tmux=in_tmux)
        if self.settings.terminal and write is not None and in_tmux and not tmux_passthrough(env):
            problems.append(PASSTHROUGH_HINT)
        self._lock_fd = fd
        self.notifier = Notifier(self.settings, sinks, on_problem=self._problem).start()
        return problems

    def release(self) -> None:
        if self.notifier is not None:
            self.notifier.close()
            self.notifier = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _terminal_write(self, text: str) -> None:
        # From a sink's thread: hand the sequence to the app's loop, which writes it through its
        # driver between frames (Textual has no public call for raw output; its bell does the same).
        def write() -> None:
            driver = self.app._driver
            if driver is not None and not self.app.is_headless:
                driver.write(text)

        self.app.call_from_thread(write)

    def say(self, line: str) -> None:
        """A problem for the operator: a toast in the console, a line on stderr for a headless watch."""
        if self.headless:
            print(f"bottle-tui: {line}", file=sys.stderr, flush=True)
        else:
            self.app.notify(line, title="Notifications", severity="warning", markup=False)

    def _problem(self, line: str) -> None:
        try:
            self.app.call_from_thread(self.say, line)
        except RuntimeError:  # the app has ended (its loop is gone): nobody left to tell
            pass

    def emit(self, events: Iterable[Event]) -> None:
        if self.notifier is not None:
            for event in events:
                self.notifier.emit(event)

    # --- what the watchers found -------------------------------------------------------------

    # What the watchers found becomes events only while this console is the notifier.

    def proposals(self, found: Iterable[Proposal]) -> None:
        if self.active:
            self.emit(proposal_events(found))

    def waiting(self, slugs: Iterable[str]) -> None:
        if self.active:
            from ..notify import Event

            self.emit(Event("waiting", slug, "waiting for input") for slug in sorted(slugs))

    def bottles(self, bottles: list[BottleInfo]) -> None:
        """A discovery: bottles whose agent or bundle stopped running since the last one."""
        before, self.services = self.services, {b.slug: dict(b.services) for b in bottles}
        if self.active:  # only then the events, and a look at each one's teardown.log (a stat)
            events = died_events(before, bottles, set(self.app.pane.stopping))
            now = time.time()
            self.emit(e for e in events if not being_stopped(self.app.home, e.slug, now))

    def engine_down(self) -> None:
        self.services = {}  # the bottles are out of sight, not dead; they are known afresh when it is back

    def budget(self, slug: str, budget: Mapping[str, Any] | None, *, baseline: bool = False) -> None:
        """A bottle's budget as usage.json says now; ``baseline``: the first look at startup or for
        a new bottle, which sets the level without announcing it."""
        level = budget.get("level") if budget else None
        before = self.budgets.get(slug, "ok")
        self.budgets[slug] = str(level) if level else None
        if not baseline and self.active and (event := budget_event(slug, before, budget)) is not None:
            self.emit([event])


def send_test(home: Path, *, timeout: float = 30.0) -> list[str]:
    """`bottle-tui notify --test`: one sample message through every sink now (no lock, no
    coalescing wait); returns the problems met (sinks that could not be built or failed)."""
    from .. import ops
    from ..notify import Event, Notifier, build_sinks

    settings = load_config(home).notify
    sinks, problems = build_sinks(settings, os.environ, terminal_write=_stdout_write, tmux=bool(os.environ.get("TMUX")))
    if not sinks:
        return [*problems, "notify: nothing to send to: config.yaml turns on no terminal, command or webhook"]
    test = replace(settings, events=NOTIFY_EVENTS, coalesce_seconds=0.0, max_per_minute=60.0)
    notifier = Notifier(test, sinks, on_problem=problems.append, delays=[]).start()
    notifier.emit(Event("proposal", "bottle-tui-test", f"a test message from bottle-tui ({ops.operator('cli')})"))
    notifier.flush(timeout)
    notifier.close()
    return problems


def _stdout_write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
