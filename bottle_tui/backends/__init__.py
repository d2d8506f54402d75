"""Where bottles run: one small protocol every backend satisfies, and the dispatch on a plan's
``backend`` (or a running bottle's), so nothing above (``ops``) reaches into a backend's internals.

Every bottle's sidecar bundle runs on the Docker engine whatever the backend, so one engine listing
(two CLI calls) is the common view: each backend picks its own bottles out of it and joins in what
only it knows (a microVM's state).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import BottleError
from .docker.engine import BottleInfo, EngineStatus

if TYPE_CHECKING:
    from ..bottle_files import BottleFiles
    from ..plan import BottlePlan
    from ..snapshots import Snapshot
    from ..state import SnapshotDir, StateDir

Progress = Callable[[str], None]

__all__ = [
    "Availability",
    "Backend",
    "BottleInfo",
    "CleanupPart",
    "EngineStatus",
    "Progress",
    "SelftestReport",
    "StopReport",
    "all_backends",
    "discover",
    "engine_status",
    "ensure_images",
    "events_argv",
    "files_for",
    "find",
    "for_state",
    "get",
    "image_refs",
    "remove_snapshot_image",
    "require_engine",
    "snapshot_image_exists",
    "snapshot_image_users",
]


@dataclass(frozen=True)
class Availability:
    """Whether a backend can start bottles here, as far as is known without running anything."""

    ok: bool
    reason: str = ""  # one line when not ok
    known: bool = True  # False: not checked yet on this host


@dataclass
class StopReport:
    """What a stop did: where the archive went, and every step that failed (one line each)."""

    slug: str
    archive: Path | None = None
    problems: list[str] = field(default_factory=list)
    work: str = ""  # what was found in the agent's checkout and saved (or kept), in one line


class SelftestReport(Protocol):
    """What a backend's selftest found: a verdict and a report to print."""

    @property
    def ok(self) -> bool: ...

    def report(self) -> str: ...


class CleanupPart(Protocol):
    @property
    def empty(self) -> bool: ...

    def describe(self) -> str: ...


class Backend(Protocol):
    name: str

    async def preflight(self, plan: BottlePlan, progress: Progress) -> None:
        """Raise a one-line BottleError when this plan cannot start here; start nothing."""

    async def start(self, plan: BottlePlan, progress: Progress) -> None: ...

    async def stop(self, home: Path, slug: str, progress: Progress, *, keep: bool = False) -> StopReport:
        """Take the bottle down and archive what it leaves (its checkout's unsaved work
        included); ``keep`` keeps the state folder and the work volume. Returns what it did."""

    async def resume(self, plan: BottlePlan, progress: Progress) -> None:
        """Bring back the bottle ``plan.slug`` that `stop --keep` kept (its state folder and
        work volume); a one-line BottleError where this backend cannot."""

    async def snapshot(self, home: Path, info: BottleInfo, folder: SnapshotDir, progress: Progress) -> Snapshot:
        """Save the running bottle's agent filesystem, work volume and policy in force as
        snapshot ``folder`` (which does not exist yet) of ``home``, saying through ``progress``
        what it starts; a one-line BottleError (and no progress) where this backend cannot,
        leaving nothing behind."""

    async def reload_policy(self, slug: str) -> str | None:
        """Ask the bottle's bundle to re-read routes.yaml; a one-line warning when it could not be
        asked (the bundle is not running), else None."""

    def files(self, state: StateDir) -> BottleFiles:
        """The bottle's queue and policy, wherever they are (its state folder, or its node)."""

    def watch_argv(self, state: StateDir) -> list[str] | None:
        """A command whose output lines mark a change of the bottle's queue or status (one per
        change), for a bottle whose files no local file watch sees; None for a local bottle.
        Blocking (may ask the engine where the bundle runs)."""

    async def selftest(
        self, state: StateDir, info: BottleInfo, progress: Progress, *, environ: Mapping[str, str]
    ) -> SelftestReport:
        """The escape suite against the running bottle, aimed at a canary of ours; a one-line
        BottleError where this backend cannot run it. ``environ`` holds the real credentials."""

    async def discover(self, engine_view: Sequence[BottleInfo]) -> list[BottleInfo]:
        """This backend's bottles, given the engine's listing of every bottle's bundle."""

    def exec_argv(self, slug: str, argv: list[str], *, tty: bool, env: dict[str, str] | None = None) -> list[str]:
        """argv that runs ``argv`` in the bottle's agent with stdin attached (for a handoff)."""

    async def exec_capture(self, slug: str, argv: list[str], *, timeout: float = 60) -> tuple[int, str]: ...

    async def plan_cleanup(
        self, home: Path, *, all_homes: bool = False, homes_under: Path | None = None
    ) -> CleanupPart:
        """What cleanup would remove: ``home``'s by default, every home's or those below a folder."""

    async def cleanup(self, plan: CleanupPart, progress: Progress) -> list[str]:
        """Carry out ``plan``; returns the problems met, one line each."""

    def availability(self) -> Availability:
        """Cached knowledge only (no subprocess): for `ls` and the console."""


def _registry() -> dict[str, Backend]:
    from .docker.backend import DockerBackend
    from .smolvm.backend import SmolvmBackend
    from .swarm.backend import SwarmBackend

    # Order matters for cleanup: a microVM goes before docker's cleanup takes its bundle down.
    return {"smolvm": SmolvmBackend(), "docker": DockerBackend(), "swarm": SwarmBackend()}


def all_backends() -> list[Backend]:
    return list(_registry().values())


def get(name: str) -> Backend:
    """The backend called ``name``; "" (a bottle labelled before backends existed) is docker."""
    try:
        return _registry()[name or "docker"]
    except KeyError:
        raise BottleError(f"backend '{name}' is not one bottle-tui knows: use docker, smolvm or swarm") from None


def for_state(state: StateDir) -> Backend:
    """The backend of the bottle whose state folder is ``state`` (its metadata; docker when it has none)."""
    meta = state.read_metadata() or {}
    return get(str(meta.get("backend") or ""))


def files_for(state: StateDir) -> BottleFiles:
    """The queue and policy of the bottle whose state folder is ``state``, through its backend."""
    return for_state(state).files(state)


# -- the Docker engine: every backend's bundle runs on it, so these are every backend's -----------


async def require_engine() -> None:
    """A one-line BottleError naming the fix unless a Docker engine answers."""
    from .docker import engine

    await engine.require_engine()


async def engine_status() -> EngineStatus:
    """The engine's and compose's versions, or the problem in one line."""
    from .docker import engine

    return await engine.engine_status()


def events_argv() -> list[str]:
    """The command whose output lines mark a change of any bottle's containers (one per event)."""
    from .docker import engine

    return engine.events_argv()


async def bundle_logs(info: BottleInfo) -> str:
    """Everything the bottle's containers logged, timestamped (compose logs; a swarm bottle's
    services' logs through its manager)."""
    if info.backend == "swarm":
        from .swarm import lifecycle

        return await lifecycle.logs(info)
    from .docker import engine

    return await engine.logs(info.project)


def image_refs() -> dict[str, str]:
    """The image every bottle needs (agent, sidecars), tagged by the hash of its current inputs."""
    from .docker import images

    return images.image_refs()


async def ensure_images(progress: Progress, log: Path, *, force: bool = False) -> dict[str, str]:
    """Those images, built where missing (or all of them again with ``force``); build output goes to ``log``."""
    from .docker import images

    return await images.ensure_images(progress, log, force=force)


async def snapshot_image_exists(ref: str) -> bool:
    """Whether the engine holds a snapshot's image (every snapshot's image is on the engine)."""
    from .docker import snapshot

    return await snapshot.image_exists(ref)


async def snapshot_image_users(ref: str) -> list[str]:
    """The containers made from a snapshot's image (a running fork's agent)."""
    from .docker import snapshot

    return await snapshot.users(ref)


async def remove_snapshot_image(ref: str) -> str | None:
    """Remove a snapshot's image; one line when that failed."""
    from .docker import snapshot

    return await snapshot.remove_image(ref)


async def push_images(registry: str, progress: Progress, log: Path) -> dict[str, str]:
    """The images built where missing, then tagged for ``registry`` and pushed there."""
    from .docker import images

    return await images.push(await images.ensure_images(progress, log), registry, progress)


async def discover() -> list[BottleInfo]:
    """Every bottle of every backend: one engine listing, then each backend's own view of it."""
    from .docker import engine

    view = await engine.discover()
    found: list[BottleInfo] = []
    for backend in all_backends():
        found += await backend.discover(view)
    return sorted(found, key=lambda b: (b.started_at, b.slug))


async def find(slug: str) -> BottleInfo:
    for info in await discover():
        if info.slug == slug:
            return info
    raise BottleError(f"no running bottle '{slug}': `bottle-tui ls` lists the running ones")
