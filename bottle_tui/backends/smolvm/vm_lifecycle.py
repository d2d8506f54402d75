"""Bring a microVM bottle up and take it down; find microVM bottles; clean up leftovers.

Up: the state folder and renders as for a docker bottle, the sidecar bundle on the Docker engine,
its address read back, the agent pack (built once per agent image, from that image), then
`machine create --from PACK` with an allow-list naming only the bundle, and `machine start`.
Down: `machine stop`, `machine delete -f`, then the bundle's `compose down`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bottle_contract.files import atomic_write

from ...errors import BottleError
from ...plan import TRANSCRIPTS, BottlePlan
from ...runner import CommandError, run
from ...state import PROJECT_PREFIX, StateDir, slug_of_project, state_dir
from .. import Progress, StopReport
from ..docker import engine as docker
from ..docker import labels
from ..docker import lifecycle as docker_lifecycle
from ..docker.cleanup import in_scope
from ..docker.compose import AGENT_USER, to_yaml
from ..docker.engine import BottleInfo
from ..docker.lifecycle import append_log, make_egress_ca, prepare_local_mirror, write_renders
from .render import (
    BUNDLE_NETWORK,
    bundle_address,
    create_flags,
    machine_labels,
    render_bundle,
    render_smolfile,
    vm_name,
)
from .smolvm_cli import Machine, MachineNotFound, Smolvm, SmolvmError, machine_path

READY_TIMEOUT = 60.0
BOOT_TIMEOUT = 120.0
SMOLFILE_NAME = "Smolfile"
TRANSCRIPT_TAR = "/tmp/bottle-transcript.tar"
# A microVM has no work volume (its disk goes with `machine delete`), and nothing in it is archived.
NO_WORK_VOLUME = (
    "checkout: not saved: a microVM bottle's checkout is on the microVM's own disk, which stop deletes "
    "(push or copy the work out before stopping)"
)


def smolfile_path(state: StateDir) -> Path:
    return state.path / SMOLFILE_NAME


def packs_dir(home: Path) -> Path:
    return home / "smolvm" / "packs"


def pack_key(image: str, smolfile: str) -> str:
    """Packs are reused while the agent image and the pack-time Smolfile are the same."""
    return hashlib.sha256(f"{image}\n{smolfile}".encode()).hexdigest()[:16]


async def ensure_pack(smol: Smolvm, plan: BottlePlan, progress: Progress) -> Path:
    """The agent pack (``.smolmachine``) of this plan's agent image, built from it when missing."""
    smolfile = render_smolfile(plan)
    artifact = packs_dir(plan.home) / f"agent-{pack_key(plan.images['agent'], smolfile)}.smolmachine"
    if artifact.is_file():
        return artifact
    artifact.parent.mkdir(parents=True, exist_ok=True)
    progress(f"smolvm: packing the agent image {plan.images['agent']} (once per image)")
    with tempfile.TemporaryDirectory(prefix="bottle-pack-", dir=artifact.parent) as tmp:
        archive, spec, out = Path(tmp) / "agent-image.tar", Path(tmp) / SMOLFILE_NAME, Path(tmp) / "agent"
        spec.write_text(smolfile)
        # No registry: smolvm boots the image from a `docker save` archive.
        await run(["docker", "save", "-o", str(archive), plan.images["agent"]], timeout=600)
        await smol.pack_create(image=str(archive), output=out, smolfile=spec)
        # pack create writes the stub at OUT and the payload at OUT.smolmachine; only the payload
        # is needed, and a rename makes it appear whole even when two bring-ups pack at once.
        built = out.with_name(out.name + ".smolmachine")
        if not built.is_file():
            raise BottleError(f"`smolvm pack create` left no {built.name}: see {plan.state.bringup_log}")
        os.replace(built, artifact)
    return artifact


async def bundle_ip(project: str) -> str:
    container = docker.container_name(project, "sidecars")
    fmt = '{{with index .NetworkSettings.Networks "%s_%s"}}{{.IPAddress}}{{end}}' % (project, BUNDLE_NETWORK)
    result = await run(["docker", "inspect", "--format", fmt, container], timeout=30)
    return bundle_address(result.stdout)


async def _wait_bundle(plan: BottlePlan, deadline: float) -> None:
    ready = plan.state.egress_ready
    while time.monotonic() < deadline:
        if ready.exists():
            return
        await asyncio.sleep(0.05)
    raise BottleError(
        f"the sidecar bundle of {plan.slug} did not become ready within {READY_TIMEOUT:g} s; see {plan.state.bringup_log}"
    )


def write_vm_renders(plan: BottlePlan, *, git_start: str | None = None) -> None:
    """The docker bottle's renders (routes, CA, metadata), with the compose spec of the bundle
    alone and the pack-time Smolfile beside it for the record."""
    write_renders(plan, git_start=git_start)
    state = plan.state
    atomic_write(
        state.compose_file, to_yaml(render_bundle(plan, host_uid=os.getuid(), host_gid=os.getgid())), mode=0o600
    )
    atomic_write(smolfile_path(state), render_smolfile(plan), mode=0o600)
    meta = state.read_metadata() or {}
    meta["vm"] = vm_name(plan.slug)
    state.write_metadata(meta)


async def start(smol: Smolvm, plan: BottlePlan, progress: Progress) -> None:
    state = plan.state
    state.create()
    log = state.bringup_log
    name = vm_name(plan.slug)
    append_log(log, f"starting microVM bottle {plan.slug}: agent {plan.agent.name}, bottle {plan.bottle.name}")
    created = False
    try:
        await make_egress_ca(state, plan.slug)
        write_vm_renders(plan, git_start=await prepare_local_mirror(plan))
        progress(f"starting the sidecar bundle {plan.project}")
        env = {n: os.environ[n] for n in plan.secret_env_names if n in os.environ}
        append_log(log, await docker.up(plan.project, state.compose_file, env=env))
        await _wait_bundle(plan, time.monotonic() + READY_TIMEOUT)
        address = await bundle_ip(plan.project)
        append_log(log, f"bundle ready at {address}")
        pack = await ensure_pack(smol, plan, progress)
        progress(f"starting microVM {name}")
        await smol.machine_create(
            name=name, flags=create_flags(plan, address=address), from_pack=pack, labels=machine_labels(plan)
        )
        created = True
        await smol.machine_start(name=name, timeout=BOOT_TIMEOUT)
        check = await smol.machine_exec(name=name, argv=["true"], timeout=30, user=AGENT_USER)
        if check.status != 0:
            raise BottleError(f"microVM {name} started but a command in it exited {check.status}")
        append_log(log, "ready")
    except BaseException as exc:
        append_log(log, f"bring-up failed: {exc}")
        try:
            if created:
                await _remove_machine(smol, name)
            append_log(log, await docker.logs(plan.project))
            await docker.down(plan.project)
        except (CommandError, OSError):
            pass
        if isinstance(exc, CommandError):
            raise BottleError(f"bringing up {plan.slug} failed: {exc}; see {log}") from exc
        raise


async def _remove_machine(smol: Smolvm, name: str) -> None:
    """stop, then delete -f; a machine already gone is fine."""
    try:
        await smol.machine_stop(name=name)
    except MachineNotFound:
        return
    except SmolvmError:
        pass  # a machine that never booted cannot stop; delete still removes it
    try:
        await smol.machine_delete(name=name)
    except MachineNotFound:
        pass


async def _snapshot_transcript(smol: Smolvm, name: str, state: StateDir) -> None:
    """Copy claude's transcripts out of the VM (best effort: a VM that is not running has none to give)."""
    try:
        packed = await smol.machine_exec(
            name=name,
            argv=["tar", "-C", str(Path(TRANSCRIPTS).parent), "-cf", TRANSCRIPT_TAR, Path(TRANSCRIPTS).name],
            timeout=60,
            user=AGENT_USER,
        )
        if packed.status != 0:
            return
        local = state.path / "transcript.tar"
        await smol.machine_cp(src=machine_path(name, TRANSCRIPT_TAR), dst=str(local))
        with tarfile.open(local) as tar:
            tar.extractall(state.transcript, filter="data")
        local.unlink()
    except (BottleError, OSError, tarfile.TarError):
        pass


async def stop(smol: Smolvm | None, home: Path, slug: str, progress: Progress, *, keep: bool = False) -> StopReport:
    """The transcript out of the VM, `machine stop` then `delete -f`, then the rest as for a docker
    bottle (compose logs saved, the bundle's compose down, the state folder gone unless preserved);
    returns what the docker bottle's stop reports."""
    name = vm_name(slug)
    state = state_dir(home, slug)
    if smol is not None:
        if state.path.is_dir():
            await _snapshot_transcript(smol, name, state)
        progress(f"stopping microVM {name}")
        await _remove_machine(smol, name)
    report = await docker_lifecycle.stop(home, slug, progress, keep=keep, agent_container=False)
    report.work = NO_WORK_VOLUME + ("; --keep kept the state folder only, so it cannot be resumed" if keep else "")
    progress(report.work)
    return report


def _services(bundle: BottleInfo | None, machine: Machine | None, *, listed: bool) -> dict[str, str]:
    return {
        "agent": machine.state if machine else ("missing" if listed else "unknown"),
        "sidecars": (bundle.services.get("sidecars", "missing") if bundle else "missing"),
    }


def join(engine_view: Sequence[BottleInfo], machines: Sequence[Machine] | None) -> list[BottleInfo]:
    """microVM bottles: the engine's bundles labelled smolvm joined with our labelled machines by
    slug, and with their state folders (for what a label does not say). Either half alone still
    shows, so a half-dead bottle can be seen and stopped. ``machines`` is None when smolvm could
    not be asked: the agents' state is then unknown rather than missing."""
    bundles = {b.slug: b for b in engine_view if b.backend == "smolvm"}
    vms: dict[str, Machine] = {}
    for m in machines or ():
        slug = slug_of_project(m.name)
        # Trust only our prefix, our labels, and a slug that matches the name (the probe VM has none).
        if slug and m.labels.get(labels.MANAGED) == "true" and m.labels.get(labels.SLUG) == slug:
            vms[slug] = m
    found = []
    for slug in sorted(set(bundles) | set(vms)):
        bundle, machine = bundles.get(slug), vms.get(slug)
        tags = machine.labels if machine else {}
        home = bundle.home if bundle else tags.get(labels.HOME, "")
        meta = (state_dir(Path(home), slug).read_metadata() if home else None) or {}

        def pick(
            bundle_value: str, label: str, key: str, tags: dict[str, str] = tags, meta: dict[str, Any] = meta
        ) -> str:
            return bundle_value or tags.get(label, "") or str(meta.get(key, ""))

        services = _services(bundle, machine, listed=machines is not None)
        up = sum(1 for s in services.values() if s == "running")
        found.append(
            BottleInfo(
                slug=slug,
                project=vm_name(slug),
                agent=pick(bundle.agent if bundle else "", labels.AGENT, "agent"),
                bottle=pick(bundle.bottle if bundle else "", labels.BOTTLE, "bottle"),
                backend="smolvm",
                started_at=pick(bundle.started_at if bundle else "", labels.STARTED_AT, "started_at"),
                home=home,
                status=f"running({up})" if up else "down",
                services=services,
            )
        )
    return found


@dataclass
class VmCleanup:
    machines: list[tuple[str, str]]  # (machine name, the home its label names, or "")

    @property
    def empty(self) -> bool:
        return not self.machines

    def describe(self) -> str:
        return "\n".join(f"microVM {name}" + (f" (home {home})" if home else "") for name, home in self.machines)


def cleanup_targets(
    machines: Sequence[Machine], home: Path, *, all_homes: bool = False, homes_under: Path | None = None
) -> list[tuple[str, str]]:
    """Machines named with the project's prefix, in scope (see ``in_scope``)."""
    return sorted(
        (m.name, m.labels.get(labels.HOME, ""))
        for m in machines
        if m.name.startswith(PROJECT_PREFIX)
        and in_scope(m.labels.get(labels.HOME, ""), home, all_homes=all_homes, homes_under=homes_under)
    )


async def cleanup(smol: Smolvm, plan: VmCleanup, progress: Progress) -> list[str]:
    """Remove each machine (its transcript saved into its state folder first, where there is one),
    before docker's cleanup takes the bundles down and archives the state. Returns the problems
    met, one line each; a machine that fails does not stop the rest."""
    problems: list[str] = []
    for name, label_home in plan.machines:
        progress(f"removing microVM {name}")
        slug = slug_of_project(name) or ""
        try:
            state = state_dir(Path(label_home), slug) if label_home else None
            if state is not None and state.path.is_dir():
                await _snapshot_transcript(smol, name, state)
            await _remove_machine(smol, name)
        except BottleError as exc:
            problems.append(f"removing microVM {name} failed: {exc}")
    return problems
