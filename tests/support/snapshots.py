"""A snapshot's folder as `bottle-tui snapshot` leaves it, for tests that need no engine (the image is
the engine's, and is not made here)."""

from __future__ import annotations

from pathlib import Path

from bottle_tui import snapshots
from bottle_tui.snapshots import Snapshot
from bottle_tui.state import snapshot_dir


def write_snapshot(
    home: Path, name: str, *, agent: str = "coder", created_at: str = "2026-12-01T10:00:00+00:00"
) -> Snapshot:
    folder = snapshot_dir(home, name)
    folder.path.mkdir(parents=True)
    snap = Snapshot(
        name=name,
        of=f"{agent}-abc123",
        agent=agent,
        bottle="web",
        backend="docker",
        created_at=created_at,
        image=snapshots.image_ref(name),
        image_id="sha256:" + "0" * 64,
        home_bytes=10240,
        path=folder.path,
    )
    folder.write_record(snapshots.record(snap))
    return snap
