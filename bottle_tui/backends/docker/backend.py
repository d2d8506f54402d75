"""The docker backend behind the backends protocol: thin adapters over engine and lifecycle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ...bottle_files import BottleFiles, LocalFiles
from ...errors import BottleError
from ...state import SnapshotDir, StateDir, project_name, state_dir
from .. import Availability, BottleInfo, CleanupPart, Progress, SelftestReport, StopReport
from . import cleanup, engine, lifecycle

if TYPE_CHECKING:
    from ...plan import BottlePlan
    from ...snapshots import Snapshot


def agent_container(slug: str) -> str:
    return engine.container_name(project_name(slug), "agent")


def sidecars_container(slug: str) -> str:
    return engine.container_name(project_name(slug), "sidecars")


async def reload_bundle(slug: str) -> str | None:
    """SIGHUP to the bottle's bundle (its init forwards it to egress, which re-reads routes.yaml).
    Every backend's bundle is a container on the engine, so the smolvm backend uses this too."""
    problem = await engine.send_signal(sidecars_container(slug), "HUP")
    if problem is not None:
        return f"the policy is saved, but the bundle of {slug} did not take the reload signal ({problem})"
    return None


class DockerBackend:
    name = "docker"

    async def preflight(self, plan: BottlePlan, progress: Progress) -> None:
        await engine.require_engine()
        if plan.snapshot is not None:
            from .snapshot import image_exists

            if not await image_exists(plan.snapshot.image):
                raise BottleError(
                    f"snapshot {plan.snapshot.name}: its image {plan.snapshot.image} is not on the engine any more; "
                    f"`bottle-tui snapshots rm {plan.snapshot.name}` removes what is left of it"
                )

    async def start(self, plan: BottlePlan, progress: Progress) -> None:
        await lifecycle.start(plan, progress)

    async def stop(self, home: Path, slug: str, progress: Progress, *, keep: bool = False) -> StopReport:
        return await lifecycle.stop(home, slug, progress, keep=keep)

    async def resume(self, plan: BottlePlan, progress: Progress) -> None:
        await lifecycle.resume(plan, progress)

    async def snapshot(self, home: Path, info: BottleInfo, folder: SnapshotDir, progress: Progress) -> Snapshot:
        from . import snapshot

        progress(
            f"snapshotting {info.slug} as {folder.name} (its agent pauses while its filesystem and home are saved)"
        )
        state = state_dir(home, info.slug)
        return await snapshot.take(home, state, info.slug, folder, info.agent, info.bottle)

    def files(self, state: StateDir) -> BottleFiles:
        return LocalFiles(state)

    def watch_argv(self, state: StateDir) -> list[str] | None:
        return None  # its files are in the state folder, which the console watches

    async def reload_policy(self, slug: str) -> str | None:
        return await reload_bundle(slug)

    async def selftest(
        self, state: StateDir, info: BottleInfo, progress: Progress, *, environ: Mapping[str, str]
    ) -> SelftestReport:
        from .selftest import run_selftest

        return await run_selftest(state, info, progress, environ=dict(environ))

    async def discover(self, engine_view: Sequence[BottleInfo]) -> list[BottleInfo]:
        # Bottles from before backends were labelled have no backend label: they are docker's.
        return [b for b in engine_view if b.backend in ("docker", "")]

    def exec_argv(self, slug: str, argv: list[str], *, tty: bool, env: dict[str, str] | None = None) -> list[str]:
        return engine.exec_argv(agent_container(slug), argv, tty=tty, env=env)

    async def exec_capture(self, slug: str, argv: list[str], *, timeout: float = 60) -> tuple[int, str]:
        return await engine.exec_capture(agent_container(slug), argv, timeout=timeout)

    async def plan_cleanup(
        self, home: Path, *, all_homes: bool = False, homes_under: Path | None = None
    ) -> CleanupPart:
        return await cleanup.plan_cleanup(home, all_homes=all_homes, homes_under=homes_under)

    async def cleanup(self, plan: CleanupPart, progress: Progress) -> list[str]:
        assert isinstance(plan, cleanup.CleanupPlan)
        return await cleanup.cleanup(plan, progress)

    def availability(self) -> Availability:
        # The engine's state is shown by `ls` and the console from the engine itself.
        return Availability(True)
