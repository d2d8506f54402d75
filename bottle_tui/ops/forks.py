"""Snapshots of running bottles and forks from them (``ops`` re-exports these): take, list, remove,
and the plan of a fork. The engine's part is the backend's (``backends/docker/snapshot.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .. import backends, snapshots
from ..backends import Progress
from ..errors import BottleError
from ..plan import BottlePlan
from ..snapshots import Snapshot
from ..state import remove_tree
from .homes import locate


def forked_plan(plan: BottlePlan, snap: Snapshot) -> BottlePlan:
    """``plan`` starting from ``snap``: its agent runs the snapshot's image."""
    return dataclasses.replace(plan, snapshot=snap, images={**plan.images, "agent": snap.image})


async def snapshot(home: Path, slug: str, progress: Progress, name: str | None = None) -> Snapshot:
    """Snapshot the running bottle ``slug`` (its agent's filesystem, its work volume, the policy in
    force) as ``name`` (default: the slug and the time) in the snapshots/ of the home that holds
    its state (see ``bottle_home``); a one-line error for a bad or taken name, a bottle that is
    not running, or a backend that cannot. Takes as long as the engine needs to commit the
    filesystem and read the volume (see `make bench`)."""
    chosen = snapshots.check_name(name) if name else snapshots.default_name(slug, datetime.now(UTC))
    where = await locate(slug, home)
    folder = await asyncio.to_thread(snapshots.check_free, where.home, chosen)
    return await where.backend.snapshot(where.home, where.info, folder, progress)


@dataclass(frozen=True)
class SnapshotListed:
    """A snapshot, and whether the engine still holds its image (None: the engine did not answer)."""

    snapshot: Snapshot
    image_present: bool | None


def saved_snapshots(home: Path) -> list[Snapshot]:
    """``home``'s snapshots, oldest first, from their folders only (blocking)."""
    return snapshots.listing(home)


async def list_snapshots(home: Path) -> list[SnapshotListed]:
    """``home``'s snapshots, oldest first, each with whether its image is on the engine."""
    found = await asyncio.to_thread(saved_snapshots, home)
    listed = []
    for snap in found:
        try:
            present: bool | None = await backends.snapshot_image_exists(snap.image)
        except BottleError:
            present = None
        listed.append(SnapshotListed(snap, present))
    return listed


async def remove_snapshot(home: Path, name: str) -> Snapshot:
    """Remove snapshot ``name`` of ``home``: its image, then its folder. A one-line error for an
    unknown name, or while a bottle's agent (a fork) still runs on its image."""
    snap = await asyncio.to_thread(snapshots.find, home, name)
    users = await backends.snapshot_image_users(snap.image)
    if users:
        raise BottleError(
            f"snapshot {name} is the image of bottle {', '.join(users)}: stop it first (`bottle-tui stop SLUG`)"
        )
    problem = await backends.remove_snapshot_image(snap.image)
    if problem is not None:
        raise BottleError(f"{problem}; snapshot {name} is kept")
    problems = await asyncio.to_thread(remove_tree, snap.path)
    if problems:
        raise BottleError(f"removed the image of snapshot {name}, but not all of {snap.path}: {problems[0]}")
    return snap
