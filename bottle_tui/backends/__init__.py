"""Where bottles run: one small protocol every backend satisfies, and the dispatch on a plan's
``backend`` (or a running bottle's), so the CLI never reaches into a backend's internals.

Every bottle's sidecar bundle runs on the Docker engine whatever the backend, so one engine listing
(two CLI calls) is the common view: each backend picks its own bottles out of it and joins in what
only it knows (a microVM's state).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from ..errors import BottleError
from .docker.engine import BottleInfo

if TYPE_CHECKING:
    from ..plan import BottlePlan

Progress = Callable[[str], None]

__all__ = ["Availability", "Backend", "BottleInfo", "CleanupPart", "Progress", "all_backends", "discover", "find", "get"]


@dataclass(frozen=True)
class Availability:
    """Whether a backend can start bottles here, as far as is known without running anything."""

    ok: bool
    reason: str = ""  # one line when not ok
    known: bool = True  # False: not checked yet on this host


class CleanupPart(Protocol):
    @property
    def empty(self) -> bool: ...

    def describe(self) -> str: ...


class Backend(Protocol):
    name: str

    async def preflight(self, plan: "BottlePlan", progress: Progress) -> None:
        """Raise a one-line BottleError when this plan cannot start here; start nothing."""

    async def start(self, plan: "BottlePlan", progress: Progress) -> None: ...

    async def stop(self, home: Path, slug: str, progress: Progress, *, keep: bool = False) -> object:
        """Take the bottle down; returns the backend's report of what it did (docker's stop report)."""

    async def discover(self, engine_view: Sequence[BottleInfo]) -> list[BottleInfo]:
        """This backend's bottles, given the engine's listing of every bottle's bundle."""

    def exec_argv(self, slug: str, argv: list[str], *, tty: bool, env: dict[str, str] | None = None) -> list[str]:
        """argv that runs ``argv`` in the bottle's agent with stdin attached (for a handoff)."""

    async def exec_capture(self, slug: str, argv: list[str], *, timeout: float = 60) -> tuple[int, str]: ...

    async def plan_cleanup(self, home: Path, *, all_homes: bool = False, homes_under: Path | None = None) -> CleanupPart:
        """What cleanup would remove: ``home``'s by default, every home's or those below a folder."""

    async def cleanup(self, plan: CleanupPart, progress: Progress) -> list[str]:
        """Carry out ``plan``; returns the problems met, one line each."""

    def availability(self) -> Availability:
        """Cached knowledge only (no subprocess): for `ls` and the console."""


def _registry() -> dict[str, Backend]:
    from .docker.backend import DockerBackend
    from .smolvm.backend import SmolvmBackend

    # Order matters for cleanup: a microVM goes before docker's cleanup takes its bundle down.
    return {"smolvm": SmolvmBackend(), "docker": DockerBackend()}


def all_backends() -> list[Backend]:
    return list(_registry().values())


def get(name: str) -> Backend:
    """The backend called ``name``; "" (a bottle labelled before backends existed) is docker."""
    try:
        return _registry()[name or "docker"]
    except KeyError:
        raise BottleError(f"backend '{name}' is not one bottle-tui knows: use docker or smolvm") from None


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
