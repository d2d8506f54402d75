"""The agents' flows: new agent (picker, the plan, start), stop, attach, logs. Each runs as a
worker of the app; the right-hand tmux pane, when there is one, goes through ``app.pane``
(``pane_control.py``)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import SuspendNotSupported

from bottle_contract.clock import now_iso

from .. import ops
from ..errors import BottleError
from ..ops import BottleInfo, BottlePlan
from ..plan import missing_secrets
from ..state import state_dir
from .inert import inert
from .screens import SNAPSHOT_CHOICE, ConfirmScreen, LogScreen, PickerScreen

if TYPE_CHECKING:
    from .app import BottleConsole


def follow_log_argv(path: Path, header: str) -> list[str]:
    """What the right pane runs to show a bring-up or teardown log as it grows (the file may not
    exist yet: tail -F waits for it)."""
    return [
        "sh",
        "-c",
        'printf "%s\\n\\n" "$1"; exec tail -n +1 -F "$2" 2>/dev/null',
        "bottle-tui-log",
        header,
        str(path),
    ]


class PaneLog:
    """The console's own progress lines during a start shown in the pane: appended to the
    bottle's bringup.log once its state folder exists (held until then)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held: list[str] = []

    def __call__(self, message: str) -> None:
        self.held.append(message)
        if self.path.parent.is_dir():
            try:
                text = "\n".join(self.held).rstrip()
                with self.path.open("a", encoding="utf-8") as fh:  # stamped like the bring-up's own lines
                    fh.write(f"{now_iso()} {text}\n")
            except OSError:
                return
            self.held.clear()


def new_agent(app: BottleConsole) -> None:
    app.run_worker(_new_agent(app), group="dialog", exit_on_error=False)


async def _new_agent(app: BottleConsole) -> None:
    try:
        manifests = await asyncio.to_thread(ops.agents, app.home)
    except BottleError as exc:
        app.notify(inert(str(exc)).plain, title="Manifests", severity="error", markup=False)
        return
    running = Counter(b.agent for b in app.agents_pane.bottles.values())
    agents = [
        (a.name, a.description, running.get(a.name, 0)) for a in sorted(manifests.agents.values(), key=lambda a: a.name)
    ]
    try:
        saved = await asyncio.to_thread(app.snapshots_fn, app.home)
    except BottleError as exc:  # the agents can still start
        app.notify(inert(str(exc)).plain, title="Snapshots", severity="warning", markup=False)
        saved = []
    forks = [
        (s.name, s.agent, f"of {s.of}, {s.created_at[:16].replace('T', ' ')}")
        for s in reversed(saved)
        if s.agent in manifests.agents
    ]
    chosen = await app.push_screen_wait(PickerScreen(agents, forks))
    if not chosen:
        return
    name, _, snapshot = chosen.partition(SNAPSHOT_CHOICE)
    try:
        plan = await asyncio.to_thread(
            lambda: app.make_plan(app.home, name, from_snapshot=snapshot) if snapshot else app.make_plan(app.home, name)
        )
    except BottleError as exc:
        app.notify(inert(str(exc)).plain, title="Plan", severity="error", markup=False)
        return
    if not await app.push_screen_wait(ConfirmScreen(f"Start {plan.slug}?", ops.describe(plan), wide=True)):
        return
    if app.pane.split is not None:
        header = f"bringing up {plan.slug} (its bringup.log); claude opens here when it is up"
        if await app.pane.show(follow_log_argv(plan.state.bringup_log, header), plan.slug, "bringup", select=False):
            app.run_worker(start_bottle(app, plan, None), group="start", exit_on_error=False)
            return
    log = LogScreen(f"Starting {plan.slug}…")
    await app.push_screen(log)
    app.run_worker(start_bottle(app, plan, log), group="start", exit_on_error=False)


async def start_bottle(app: BottleConsole, plan: BottlePlan, log: LogScreen | None) -> None:
    """Start a bottle (preflight, images, bring-up: ``ops.start``); its progress goes to ``log``
    (a dialog) or, with ``log`` None, to its bringup.log, which the right pane follows: the
    console's own screen never gets it."""
    pane_log = PaneLog(plan.state.bringup_log) if log is None else None

    def say(message: str) -> None:
        if pane_log is not None:
            pane_log(message)
        elif log is not None and log.is_attached:
            log.write(message)

    for secret in missing_secrets(plan, dict(os.environ)):
        say(f"warning: ${secret} is not set here: requests through routes that inject it will fail")
    tail = asyncio.create_task(_tail(plan.state.bringup_log, say)) if log is not None else None
    try:
        await app.start_fn(plan, say)
    except BottleError as exc:
        if tail is not None:
            await _stop_tail(tail)
        say(f"error: {exc}")
        if log is not None and log.is_attached:
            log.set_title(f"{plan.slug} did not start")
        app.notify(
            inert(f"{plan.slug} did not start: {exc}").plain[:300], title="Start", severity="error", markup=False
        )
        return
    if tail is not None:
        await _stop_tail(tail)
    if log is not None:
        say(f"bottle {plan.slug} is up: Enter on its row attaches")
        if log.is_attached:
            log.set_title(f"{plan.slug} is up (Esc closes)")
    app.notify(f"{plan.slug} is up" + (" in the right-hand pane" if log is None else ""), title="Started", markup=False)
    app.refresh_bottles()
    if log is None:
        # The pane still follows this bring-up (the operator did not attach elsewhere meanwhile):
        # the new agent's claude replaces it.
        occupant = await app.pane.find()
        if occupant is not None and (occupant.slug, occupant.shows) == (plan.slug, "bringup"):
            await app.pane.show_claude(plan.home, plan.slug, plan.backend, select=False)


async def _stop_tail(tail: asyncio.Task[None]) -> None:
    tail.cancel()
    try:
        await tail
    except asyncio.CancelledError:
        pass


async def _tail(path: Path, say: Callable[[str], None]) -> None:
    """Stream what the bring-up appends to bringup.log (only while a start runs)."""
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


def stop(app: BottleConsole, info: BottleInfo) -> None:
    app.run_worker(_stop(app, info), group="dialog", exit_on_error=False)


async def _stop(app: BottleConsole, info: BottleInfo) -> None:
    if not await app.push_screen_wait(
        ConfirmScreen(
            f"Stop {info.slug}?",
            f"agent {info.agent}, started {info.started_at}\nLogs, transcript and egress decisions go to archive/{info.slug}/,"
            f" and what its checkout holds that nothing else does to archive/{info.slug}/work/.",
        )
    ):
        return
    home = ops.bottle_home(info, app.home)
    order = app.agents_pane.keys()
    # The teardown shows in the right pane when the pane holds this agent or only a log; a
    # pane where another agent's claude is at work is left alone.
    in_pane = False
    app.pane.stopping.add(info.slug)
    try:
        if app.pane.split is not None:
            occupant = await app.pane.find()
            if occupant is not None and (occupant.slug == info.slug or occupant.shows != "claude"):
                header = f"stopping {info.slug} (its teardown.log)"
                in_pane = await app.pane.show(
                    follow_log_argv(state_dir(home, info.slug).teardown_log, header),
                    info.slug,
                    "teardown",
                    select=False,
                )
        app.notify(f"stopping {info.slug}…", markup=False)
        said: list[str] = []
        try:
            report = await app.stop_fn(home, info, said.append)
        except BottleError as exc:
            app.notify(
                inert(f"{info.slug} did not stop: {exc}").plain[:300], title="Stop", severity="error", markup=False
            )
            return
        problems = f", but {len(report.problems)} step(s) failed: {report.problems[0]}" if report.problems else ""
        # The same line `bottle-tui stop` prints about the checkout: what was saved, or kept.
        work = "\n" + inert(report.work).plain[:400] if report.work else ""
        app.notify(
            inert(f"stopped {info.slug}{problems}").plain[:300] + work,
            title="Stopped",
            markup=False,
            severity="warning" if problems else "information",
        )
        app.refresh_bottles()
        if in_pane:
            await app.pane.after_stop(info.slug, order)
    finally:
        app.pane.stopping.discard(info.slug)


def attach(app: BottleConsole, info: BottleInfo) -> None:
    app.run_worker(_attach(app, info), group="dialog", exit_on_error=False)


async def _attach(app: BottleConsole, info: BottleInfo) -> None:
    from ..runner import interactive

    home = ops.bottle_home(info, app.home)
    if app.pane.split is not None and await app.pane.show_claude(home, info.slug, info.backend, select=True):
        return
    try:
        full = await asyncio.to_thread(ops.attach_argv, home, info.slug, info.backend)
    except BottleError as exc:
        app.notify(inert(str(exc)).plain, title="Attach", severity="error", markup=False)
        return
    try:
        with app.suspend():
            await interactive(full)
    except SuspendNotSupported:
        app.notify(
            f"this terminal cannot hand over: run `bottle-tui attach {info.slug}` from a shell",
            severity="warning",
            markup=False,
        )
    app.refresh_bottles()


def review_work(app: BottleConsole, info: BottleInfo) -> None:
    app.run_worker(_review_work(app, info), group="dialog", exit_on_error=False)


async def _review_work(app: BottleConsole, info: BottleInfo) -> None:
    """`d`: the review screen of what the agent changed, read live from the bottle."""
    from .review import ReviewScreen

    try:
        source = await app.review_fn(app.home, info)
    except BottleError as exc:
        app.notify(inert(str(exc)).plain[:300], title="Diff", severity="warning", markup=False)
        return
    await app.push_screen(ReviewScreen(source))


def snapshot(app: BottleConsole, info: BottleInfo) -> None:
    if info.slug in app.snapshotting:
        app.notify(f"a snapshot of {info.slug} is being taken already", title="Snapshot", markup=False)
        return
    app.snapshotting.add(info.slug)
    app.run_worker(_snapshot(app, info), group="snapshot", exit_on_error=False)


async def _snapshot(app: BottleConsole, info: BottleInfo) -> None:
    """`s`: snapshot the agent (its filesystem, checkout, ~/.claude and policy); says where it went."""
    app.notify(f"snapshotting {info.slug} (its agent pauses meanwhile)…", title="Snapshot", markup=False)
    try:
        snap = await app.snapshot_fn(app.home, info.slug, lambda _line: None)
    except BottleError as exc:
        app.notify(inert(str(exc)).plain[:300], title="Snapshot", severity="error", markup=False)
        return
    finally:
        app.snapshotting.discard(info.slug)
    app.notify(
        inert(
            f"snapshot {snap.name} of {snap.of}: image {snap.image}, home and policy in {snap.path}; "
            "n then the snapshot starts a fork"
        ).plain[:400],
        title="Snapshot saved",
        markup=False,
    )


def show_logs(app: BottleConsole, info: BottleInfo) -> None:
    app.run_worker(_show_logs(app, info), group="dialog", exit_on_error=False)


async def _show_logs(app: BottleConsole, info: BottleInfo) -> None:
    source = "docker service logs" if info.backend == "swarm" else "docker compose logs"
    log = LogScreen(f"Logs of {info.slug} ({source})")
    await app.push_screen(log)
    try:
        text = await ops.bundle_logs(info)
    except BottleError as exc:
        text = f"error: {exc}"
    if log.is_attached:
        for line in text.splitlines()[-2000:]:
            log.write(line)
