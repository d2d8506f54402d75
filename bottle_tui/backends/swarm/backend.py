"""The swarm backend behind the backends protocol: thin adapters over the cluster and lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ...config import load_config
from ...errors import BottleError
from ...manifest import default_home
from ...runner import CommandError, run, run_blocking
from ...state import SnapshotDir, StateDir, all_state_dirs, state_dir
from .. import Availability, BottleInfo, CleanupPart, Progress, SelftestReport, StopReport
from . import lifecycle
from .channel import RemoteFiles
from .cluster import docker
from .render import service_name

if TYPE_CHECKING:
    from ...plan import BottlePlan
    from ...snapshots import Snapshot


def _node(slug: str) -> tuple[str, str]:
    """(node hostname, its context) of a swarm bottle, from its metadata in the default home."""
    meta = state_dir(default_home(), slug).read_metadata() or {}
    node = str(meta.get("node") or "")
    if not node:
        raise BottleError(
            f"{slug}: its metadata in {default_home()} names no swarm node (is it a swarm bottle of this home?)"
        )
    context = str(meta.get("node_context") or "")
    return node, context or lifecycle.cluster_of(default_home(), meta).known_node_context(node)


def _running(context: str, slug: str, service: str = "agent") -> list[str]:
    """`docker ps` on the node's engine for the running container of the bottle's ``service``."""
    label = f"label=com.docker.swarm.service.name={service_name(slug, service)}"
    return docker(context, "ps", "-q", "--filter", label, "--filter", "status=running")


class SwarmCleanup:
    """Swarm bottles of the home whose state folders remain (stop removes their services too)."""

    def __init__(self, home: Path, slugs: list[str]) -> None:
        self.home = home
        self.slugs = slugs

    @property
    def empty(self) -> bool:
        return not self.slugs

    def describe(self) -> str:
        return "\n".join(f"swarm bottle {s}" for s in self.slugs)


class SwarmBackend:
    name = "swarm"

    async def preflight(self, plan: BottlePlan, progress: Progress) -> None:
        await lifecycle.preflight(plan)

    async def start(self, plan: BottlePlan, progress: Progress) -> None:
        await lifecycle.start(plan, progress)

    async def stop(self, home: Path, slug: str, progress: Progress, *, keep: bool = False) -> StopReport:
        return await lifecycle.stop(home, slug, progress, keep=keep)

    async def resume(self, plan: BottlePlan, progress: Progress) -> None:
        raise BottleError(f"{plan.slug} is a swarm bottle, which cannot be resumed yet: start a new one")

    async def snapshot(self, home: Path, info: BottleInfo, folder: SnapshotDir, progress: Progress) -> Snapshot:
        raise BottleError(
            f"{info.slug} is a swarm bottle, which cannot be snapshotted yet: snapshots need a docker bottle"
        )

    def files(self, state: StateDir) -> RemoteFiles:
        meta = state.read_metadata() or {}
        node = str(meta.get("node") or "")
        context = str(meta.get("node_context") or "")
        if not node or not context:
            raise BottleError(f"{state.metadata} names no swarm node: {state.slug} cannot be reached")
        return RemoteFiles(state, node, context)

    def watch_argv(self, state: StateDir) -> list[str] | None:
        return self.files(state).watch_argv()

    async def reload_policy(self, slug: str) -> str | None:
        try:
            files = self.files(state_dir(default_home(), slug))
            await asyncio.to_thread(files.reload)
        except (BottleError, CommandError) as exc:
            return f"the policy is saved, but the bundle of {slug} did not take the reload signal ({exc})"
        return None

    async def selftest(
        self, state: StateDir, info: BottleInfo, progress: Progress, *, environ: Mapping[str, str]
    ) -> SelftestReport:
        from .selftest import run_selftest

        return await run_selftest(state, info, self.files(state), progress, environ=dict(environ))

    async def discover(self, engine_view: Sequence[BottleInfo]) -> list[BottleInfo]:
        """The swarm's bottles (none asked for when the home names no swarm). When the manager
        does not answer, the home's swarm bottles show from their state folders as unreachable."""
        home = default_home()
        try:
            settings = load_config(home).swarm
        except BottleError:
            return []
        if settings is None:
            return []
        try:
            return (await lifecycle.discover(settings))[0]
        except (BottleError, CommandError, ValueError) as exc:
            return _unreachable(home, str(exc))

    def exec_argv(self, slug: str, argv: list[str], *, tty: bool, env: dict[str, str] | None = None) -> list[str]:
        node, context = _node(slug)
        found = run_blocking(_running(context, slug), timeout=30).stdout.split()
        if not found:
            raise BottleError(f"the agent of {slug} is not running on node {node}")
        flags = ["-it"] if tty else ["-i"]
        for name, value in (env or {}).items():
            flags += ["-e", f"{name}={value}"]
        return docker(context, "exec", *flags, found[0], *argv)

    async def exec_capture(self, slug: str, argv: list[str], *, timeout: float = 60) -> tuple[int, str]:
        node, context = _node(slug)
        found = (await run(_running(context, slug), timeout=30)).stdout.split()
        if not found:
            raise BottleError(f"the agent of {slug} is not running on node {node}")
        result = await run(docker(context, "exec", found[0], *argv), check=False, timeout=timeout)
        return result.returncode, result.stdout

    async def plan_cleanup(
        self, home: Path, *, all_homes: bool = False, homes_under: Path | None = None
    ) -> CleanupPart:
        slugs = [s.slug for s in all_state_dirs(home) if (s.read_metadata() or {}).get("backend") == "swarm"]
        return SwarmCleanup(home, slugs)

    async def cleanup(self, plan: CleanupPart, progress: Progress) -> list[str]:
        assert isinstance(plan, SwarmCleanup)
        problems: list[str] = []
        for slug in plan.slugs:
            try:
                problems += (await lifecycle.stop(plan.home, slug, progress)).problems
            except BottleError as exc:
                problems.append(str(exc))
        return problems

    def availability(self) -> Availability:
        try:
            settings = load_config(default_home()).swarm
        except BottleError as exc:
            return Availability(False, str(exc))
        if settings is None:
            return Availability(False, "no swarm: in config.yaml")
        return Availability(True, f"swarm of context {settings.context}", known=False)


def _unreachable(home: Path, why: str) -> list[BottleInfo]:
    found = []
    for s in all_state_dirs(home):
        meta = s.read_metadata() or {}
        if meta.get("backend") != "swarm":
            continue
        found.append(
            BottleInfo(
                slug=s.slug,
                project=str(meta.get("project", "")),
                agent=str(meta.get("agent", "")),
                bottle=str(meta.get("bottle", "")),
                backend="swarm",
                started_at=str(meta.get("started_at", "")),
                home=str(home),
                status=f"manager unreachable: {why}"[:120],
                services={},
            )
        )
    return found
