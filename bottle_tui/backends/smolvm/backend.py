"""The smolvm backend behind the backends protocol: agents in microVMs, the bundle on Docker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ...bottle_files import BottleFiles, LocalFiles
from ...errors import BottleError
from ...plan import WORKDIR
from ...state import SnapshotDir, StateDir
from .. import Availability, BottleInfo, CleanupPart, Progress, SelftestReport, StopReport
from ..docker import engine as docker
from ..docker.backend import reload_bundle
from ..docker.compose import AGENT_USER
from . import vm_lifecycle
from .probe import cache_path, cached_probe, probe
from .render import vm_name
from .smolvm_cli import Smolvm, check_version

if TYPE_CHECKING:
    from ...plan import BottlePlan
    from ...snapshots import Snapshot

NO_SNAPSHOTS = "snapshots need a docker bottle: a microVM's disk is not on the engine, so it cannot be committed"


def _installed() -> Smolvm | None:
    try:
        return Smolvm.find()
    except BottleError:
        return None


class SmolvmBackend:
    name = "smolvm"

    async def preflight(self, plan: BottlePlan, progress: Progress) -> None:
        """The CLI is there and new enough, a probe VM boots on this host (checked once, then
        cached), and the Docker engine answers (it runs the bundle)."""
        if plan.snapshot is not None:
            raise BottleError(
                f"{plan.bottle.path}: backend: smolvm cannot start from snapshot {plan.snapshot.name}: {NO_SNAPSHOTS}"
            )
        smol = Smolvm.find()
        found = await smol.version()
        check_version(found)
        result = await probe(smol, ".".join(map(str, found)), progress=progress)
        if not result.ok:
            raise BottleError(
                f"{plan.bottle.path}: backend: smolvm cannot start here: {result.summary} "
                f"(checked once and cached in {cache_path()}); use backend: docker on this host"
            )
        await docker.require_engine()

    async def start(self, plan: BottlePlan, progress: Progress) -> None:
        await vm_lifecycle.start(Smolvm.find(), plan, progress)

    async def stop(self, home: Path, slug: str, progress: Progress, *, keep: bool = False) -> StopReport:
        # Without the CLI the VM cannot be reached, but the bundle and state still go.
        return await vm_lifecycle.stop(_installed(), home, slug, progress, keep=keep)

    async def resume(self, plan: BottlePlan, progress: Progress) -> None:
        raise BottleError(
            f"{plan.slug} is a microVM bottle, which cannot be resumed: its checkout and ~/.claude were on the "
            f"microVM's own disk, deleted at stop; start a new one with `bottle-tui start {plan.agent.name}`"
        )

    async def snapshot(self, home: Path, info: BottleInfo, folder: SnapshotDir, progress: Progress) -> Snapshot:
        raise BottleError(f"{info.slug} is a microVM bottle: {NO_SNAPSHOTS}")

    def files(self, state: StateDir) -> BottleFiles:
        return LocalFiles(state)

    def watch_argv(self, state: StateDir) -> list[str] | None:
        return None  # its files are in the state folder, which the console watches

    async def reload_policy(self, slug: str) -> str | None:
        # The bundle of a microVM bottle is a container on the engine, as a docker bottle's is.
        return await reload_bundle(slug)

    async def selftest(
        self, state: StateDir, info: BottleInfo, progress: Progress, *, environ: Mapping[str, str]
    ) -> SelftestReport:
        raise BottleError(f"selftest runs against docker bottles; {info.slug} is a smolvm bottle")

    async def discover(self, engine_view: Sequence[BottleInfo]) -> list[BottleInfo]:
        # A missing or failing smolvm must not hide the docker bottles from `ls`: the microVM
        # bottles then show from their bundles, their agents' state unknown.
        smol = _installed()
        try:
            machines = await smol.machine_ls() if smol is not None else None
        except BottleError:
            machines = None
        return vm_lifecycle.join(engine_view, machines)

    def exec_argv(self, slug: str, argv: list[str], *, tty: bool, env: dict[str, str] | None = None) -> list[str]:
        return Smolvm.find().exec_argv(
            name=vm_name(slug), argv=argv, tty=tty, user=AGENT_USER, workdir=WORKDIR, env=env
        )

    async def exec_capture(self, slug: str, argv: list[str], *, timeout: float = 60) -> tuple[int, str]:
        result = await Smolvm.find().machine_exec(name=vm_name(slug), argv=argv, timeout=timeout, user=AGENT_USER)
        return result.status, result.stdout

    async def plan_cleanup(
        self, home: Path, *, all_homes: bool = False, homes_under: Path | None = None
    ) -> CleanupPart:
        smol = _installed()
        machines = await smol.machine_ls() if smol is not None else []
        return vm_lifecycle.VmCleanup(
            vm_lifecycle.cleanup_targets(machines, home, all_homes=all_homes, homes_under=homes_under)
        )

    async def cleanup(self, plan: CleanupPart, progress: Progress) -> list[str]:
        assert isinstance(plan, vm_lifecycle.VmCleanup)
        return await vm_lifecycle.cleanup(Smolvm.find(), plan, progress) if not plan.empty else []

    def availability(self) -> Availability:
        if _installed() is None:
            return Availability(False, "the smolvm CLI is not installed")
        result = cached_probe()
        if result is None:
            return Availability(True, "not probed on this host yet", known=False)
        return Availability(result.ok, "" if result.ok else result.summary)
