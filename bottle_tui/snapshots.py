"""Snapshots of a running bottle, as the host keeps them: names, the record in
``snapshots/<name>/snapshot.json`` (state.py's layout), and what a fork starts from. File-only;
taking one (the engine's image of the agent's filesystem, the work volume's tar) is the backend's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import BottleError
from .state import SnapshotDir, all_snapshot_dirs, snapshot_dir, snapshot_root

# What the engine accepts as an image tag, and what a folder name can safely be: lower case, no
# slash, no leading dot or dash.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
IMAGE_REPOSITORY = "bottle-tui/snapshot"
RECORD_VERSION = 1


def check_name(name: str) -> str:
    """``name`` when it can name a snapshot; else a one-line error saying what can."""
    if not NAME_RE.match(name):
        raise BottleError(
            f"--name {name!r}: a snapshot name is 1-63 characters of a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def default_name(slug: str, when: datetime) -> str:
    """``<slug>-<UTC date and time>``: unique enough for one operator, and sorts by age."""
    return check_name(f"{slug}-{when.strftime('%Y%m%d-%H%M%S')}".lower()[:63])


def image_ref(name: str) -> str:
    """The engine image holding the agent's filesystem of snapshot ``name``."""
    return f"{IMAGE_REPOSITORY}:{name}"


@dataclass(frozen=True)
class Snapshot:
    """One snapshot as its record describes it."""

    name: str
    of: str  # the slug of the bottle it was taken of
    agent: str
    bottle: str
    backend: str
    created_at: str
    image: str  # the engine's image of the agent's filesystem (its tag)
    image_id: str
    home_bytes: int
    path: Path
    paused_seconds: float = 0.0  # how long the agent was paused while it was taken

    @property
    def dir(self) -> SnapshotDir:
        return SnapshotDir(self.path)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "of": self.of,
            "agent": self.agent,
            "bottle": self.bottle,
            "backend": self.backend,
            "created_at": self.created_at,
            "image": self.image,
            "image_id": self.image_id,
            "home_bytes": self.home_bytes,
            "paused_seconds": self.paused_seconds,
            "path": str(self.path),
        }


def record(snapshot: Snapshot) -> dict[str, Any]:
    """What snapshot.json holds (the path is where it lies, not written)."""
    data = snapshot.to_json()
    del data["path"]
    return {"version": RECORD_VERSION, **data}


def from_record(folder: SnapshotDir) -> Snapshot | None:
    """The snapshot in ``folder``; None when its record is missing or not one of ours."""
    data = folder.read_record()
    if data is None or data.get("version") != RECORD_VERSION or data.get("name") != folder.name:
        return None
    try:
        return Snapshot(
            name=str(data["name"]),
            of=str(data["of"]),
            agent=str(data["agent"]),
            bottle=str(data.get("bottle", "")),
            backend=str(data.get("backend", "docker")),
            created_at=str(data.get("created_at", "")),
            image=str(data["image"]),
            image_id=str(data.get("image_id", "")),
            home_bytes=int(data.get("home_bytes", 0)),
            path=folder.path,
            paused_seconds=float(data.get("paused_seconds", 0.0)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def listing(home: Path) -> list[Snapshot]:
    """The home's snapshots, oldest first (folders without a readable record are left out)."""
    found = [s for s in (from_record(d) for d in all_snapshot_dirs(home)) if s is not None]
    return sorted(found, key=lambda s: (s.created_at, s.name))


def find(home: Path, name: str) -> Snapshot:
    """Snapshot ``name`` of ``home``; a one-line error naming the ones there are."""
    folder = snapshot_dir(home, name)
    found = from_record(folder) if folder.path.is_dir() else None
    if found is not None:
        return found
    known = [s.name for s in listing(home)]
    raise BottleError(
        f"no snapshot '{name}' in {snapshot_root(home)}"
        + (f"; there are: {', '.join(known[-8:])}" if known else "; `bottle-tui snapshot SLUG` takes one")
    )


def check_free(home: Path, name: str) -> SnapshotDir:
    """The folder a new snapshot ``name`` goes to; a one-line error when that name is taken."""
    folder = snapshot_dir(home, check_name(name))
    if folder.path.exists():
        taken = from_record(folder)
        what = f" (taken {taken.created_at} of {taken.of})" if taken else ""
        raise BottleError(
            f"snapshot '{name}' exists{what}: pick another --name, or `bottle-tui snapshots rm {name}` first"
        )
    return folder
