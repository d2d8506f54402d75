"""Warm bottles (``ops`` re-exports these): fill, list and drain a home's pool, claim a member at
`start`, and refill in the background after it. Only docker bottles without git are pooled
(``pool: {size: N}`` in the bottle file, or config.yaml's default); the engine's part is
``backends/docker/pool.py``."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from bottle_contract import layout
from bottle_contract.clock import now_iso
from bottle_contract.files import rotate

from .. import backends
from ..backends import Progress
from ..backends.docker import pool as docker_pool
from ..config import load_config
from ..errors import BottleError
from ..manifest import AgentSpec, load_manifests
from ..plan import BottlePlan, pool_size
from ..state import StateDir, pool_root

PoolMember = docker_pool.Listed
FILL_LOG = "fill.log"
FILL_LOG_CAP = layout.Cap(1 << 20, 1)  # what detached fills printed: rotated at 1 MiB, one older kept


def pool_plan(home: Path, bottle: str) -> BottlePlan:
    """The plan warm bottles of ``bottle`` are made with: the bottle, today's images, no agent
    (a claim gives one). A one-line error for a bottle that is unknown or has no pool. Blocking."""
    manifests = load_manifests(home)
    spec = manifests.bottles.get(bottle)
    if spec is None:
        known = ", ".join(sorted(manifests.bottles)) or "none"
        raise BottleError(f"no bottle named '{bottle}' in {home / 'bottles'} (known: {known})")
    plan = BottlePlan(
        slug=docker_pool.MEMBER_PREFIX + bottle,
        agent=AgentSpec(
            name="pool", path=spec.path, bottle=bottle, model=None, claude_args=(), description="", prompt=""
        ),
        bottle=spec,
        state=StateDir(pool_root(home) / bottle),
        images=backends.image_refs(),
        started_at=now_iso(),
        home=manifests.home,
        config=load_config(home),
        pooled=True,
    )
    if plan.pool_size == 0:
        raise BottleError(
            f"bottle {bottle} keeps no warm bottles: add `pool: {{size: 2}}` to {spec.path} "
            "(or `pool: {size: 2}` to config.yaml for every docker bottle without git)"
        )
    return plan


def pooled_bottles(home: Path) -> list[str]:
    """The home's bottles that keep warm bottles (blocking: reads the manifests)."""
    config = load_config(home)
    return [name for name, spec in load_manifests(home).bottles.items() if pool_size(spec, config)]


async def fill_pool(
    home: Path, progress: Progress, bottle: str | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Bring the pool of ``bottle`` (every pooled bottle of the home when None) to its size, with
    the credentials of ``environ`` (default: this process's); the problems met, one line each."""
    names = [bottle] if bottle else pooled_bottles(home)
    plans = [pool_plan(home, name) for name in names]
    problems: list[str] = []
    # Warm bottles of a bottle that keeps none any more (its pool: removed or set to 0) go.
    gone = {m.bottle for m in docker_pool.ready_members(home)} - set(pooled_bottles(home))
    if gone and bottle is None:
        await backends.require_engine()
        for name in sorted(gone):
            problems += await docker_pool.drain(home, progress, name)
    if not plans:
        progress("no bottle of this home keeps warm bottles (add `pool: {size: 2}` to a bottle file)")
        return problems
    await backends.require_engine()
    images = await backends.ensure_images(progress, home / "images.log")
    for plan in plans:
        plan = dataclasses.replace(plan, images=images)
        problems += await docker_pool.fill(plan, plan.pool_size, progress, os.environ if environ is None else environ)
    return problems


def waiting(home: Path) -> int:
    """How many of the home's warm bottles are ready for a claim (from their folders; blocking)."""
    return len(docker_pool.ready_members(home))


async def list_pool(home: Path) -> list[PoolMember]:
    """The home's warm bottles: ready, starting, or down (each with its bottle and when it was made)."""
    await backends.require_engine()
    return await docker_pool.listing(home)


async def drain_pool(home: Path, progress: Progress, bottle: str | None = None) -> list[str]:
    """Take down the home's warm bottles (of ``bottle`` only, when given); the problems met."""
    await backends.require_engine()
    return await docker_pool.drain(home, progress, bottle)


async def claim(plan: BottlePlan, progress: Progress, environ: Mapping[str, str]) -> str | None:
    """A warm bottle for ``plan`` when its bottle keeps some and one fits (the member's name), else None."""
    if plan.pool_size == 0 or plan.snapshot is not None or plan.backend != "docker":
        return None
    member = await docker_pool.claim(plan, progress, environ)
    if member is not None:
        progress(f"{plan.slug} is warm bottle {member} of {plan.bottle.name}, claimed")
    return member


def refill(home: Path, bottle: str) -> None:
    """Start `bottle-tui pool fill BOTTLE` detached (it outlives this process, and waits its turn
    behind any other filler of the home); its output goes to pool/fill.log."""
    root = pool_root(home)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = root / FILL_LOG
    rotate(log_path, FILL_LOG_CAP.max_bytes, FILL_LOG_CAP.keep)  # bounded, as every log of a home
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.lseek(fd, 0, os.SEEK_END)  # one filler writes at a time (the fill lock)
    with open(fd, "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "bottle_tui", "--home", str(home), "pool", "fill", bottle],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
