"""The console's watchers: discovery (the engine's bottles, their status files), the `docker
events` stream that triggers it, the proposals' load and the file watch on ``state/``. Each
posts what it found as a message (``messages.py``) to the pane it concerns; none changes state."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Set
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BottleError
from ..state import StateDir, changed_file, state_dir, state_root
from .messages import BottlesFound, EngineDown, ProposalsLoaded, StatusRead, UsageRead
from .rows import AgentStatus, read_status

if TYPE_CHECKING:
    from .. import ops
    from ..ops import BottleInfo, BottleUsage, Proposal
    from ..spend import UsageReader
    from .app import BottleConsole

# ops, proposals and the runner are imported in the functions: the app starts these watchers once
# it has imported them in a thread (BottleConsole.deferred), after its first frame.


async def discover(app: BottleConsole) -> None:
    """One discovery; the engine's versions are asked once, again after the engine was down."""
    try:
        bottles = list(await app.discover_fn())
        versions = None
        if app.versions is None:
            status = await app.status_fn()
            if not status.ok:
                raise BottleError(status.problem)
            versions = f"engine {status.server_version} · compose {status.compose_version}"
    except Exception as exc:
        app.agents_pane.post_message(EngineDown(engine_problem(exc)))
        return
    home = app.home
    statuses, usages = await asyncio.to_thread(lambda: read_bottle_files(home, bottles, app.usage_reader))
    app.agents_pane.post_message(BottlesFound(bottles, statuses, versions, usages=usages))


def read_bottle_files(
    home: Path, bottles: list[BottleInfo], reader: UsageReader
) -> tuple[dict[str, AgentStatus], dict[str, BottleUsage]]:
    """The status and usage files of ``bottles`` (those that have one), blocking. What a bottle
    spent is read where its own home keeps it (another home's bottle too, when this process can
    see that folder)."""
    from .. import ops

    statuses, usages = {}, {}
    seen = set()
    for b in bottles:
        if (st := read_status(state_dir(home, b.slug).status_file)) is not None:
            statuses[b.slug] = st
        state = state_dir(ops.bottle_home(b, home), b.slug)
        seen.add(state.usage)
        if (u := reader.read(state)) is not None:
            usages[b.slug] = u
    reader.forget(seen)
    return statuses, usages


def engine_problem(exc: BaseException) -> str:
    """The engine's problem as one line. BottleError already names it and what to do about it;
    anything else (a JSON decode error, a timeout) is named by its type so it can be reported."""
    text = str(exc) if isinstance(exc, BottleError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


async def follow_events(app: BottleConsole) -> None:
    """Discover again whenever one of our containers changes; restart the stream if it ends or
    fails (a bottle stopped from outside this console shows up here first)."""
    from .. import ops
    from ..runner import lines

    while True:
        try:
            async for _ in lines(ops.events_argv()):
                app.refresh_bottles()
        except Exception:
            pass
        await asyncio.sleep(app.poll_seconds)


async def follow_remote(app: BottleConsole, info: ops.BottleInfo) -> None:
    """One long-running watch of a bottle whose files are elsewhere (a swarm bottle's bundle):
    each change it reports loads the proposals again. Ends when the bottle's watch ends (the
    bottle went, or its node did); discovery starts it again while the bottle is listed."""
    from .. import ops
    from ..runner import lines

    try:
        argv = await asyncio.to_thread(ops.watch_argv, app.home, info)
    except BottleError:
        return
    if argv is None:
        return
    try:
        async for line in lines(argv):
            if '"synced"' in line:
                app.reload_proposals()
    except BottleError:
        return


async def load_proposals(app: BottleConsole) -> None:
    found = await asyncio.to_thread(app.load_proposals_fn, app.home)
    app.proposals_pane.post_message(ProposalsLoaded({p.id: p for p in found if p.pending}))


def load_changed(files: Iterable[tuple[Path, StateDir]]) -> dict[str, Proposal | None]:
    """The proposal behind each changed queue file (None: gone, decided, or not a proposal of
    the bottle whose folder holds it)."""
    from .. import proposals

    out: dict[str, Proposal | None] = {}
    for path, state in files:
        p = proposals.load(path)
        out[path.stem] = p if p is not None and p.pending and p.slug == state.slug else None
    return out


async def watch_state(app: BottleConsole) -> None:
    """Queue files and status files as they change (inotify through watchfiles; no polling).
    If the watch ends (state/ removed, a watch error), it is set up again after the reconcile
    interval, and a full reload catches up with what it missed."""
    from watchfiles import awatch

    home = app.home.resolve()  # watchfiles reports resolved, absolute paths
    root = state_root(home)
    while True:
        try:
            await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True, mode=0o700)
            # A new bottle's folders appear while we watch; watchfiles follows new sub-folders itself.
            async for changes in awatch(
                root,
                watch_filter=lambda _change, path: changed_file(home, path) is not None,
                debounce=20,
                step=5,
                recursive=True,
            ):
                await on_changes(app, home, changes)
        except (OSError, RuntimeError):
            pass
        await asyncio.sleep(app.poll_seconds)
        app.reload_proposals()


async def on_changes(app: BottleConsole, home: Path, changes: Set[tuple[object, str]]) -> None:
    found = [(hit, Path(path)) for _, path in changes if (hit := changed_file(home, path)) is not None]
    queue = {(path, state) for (kind, state), path in found if kind == "proposal"}
    status = {state for (kind, state), _ in found if kind == "status"}
    usage = {state for (kind, state), _ in found if kind == "usage"}
    if queue:
        loaded = await asyncio.to_thread(load_changed, queue)
        app.proposals_pane.post_message(
            ProposalsLoaded({pid: p for pid, p in loaded.items() if p is not None}, set(loaded))
        )
    if status:
        read = await asyncio.to_thread(lambda: {state.slug: read_status(state.status_file) for state in status})
        app.agents_pane.post_message(StatusRead(read))
    if usage:
        spent = await asyncio.to_thread(lambda: {state.slug: app.usage_reader.read(state) for state in usage})
        app.agents_pane.post_message(UsageRead(spent))
