"""Cleanup of a home's docker bottles: what it would remove (every bottle this home started,
stray labelled containers, networks and work volumes, state folders without .preserve) and
removing it, each bottle stopped as `stop` does (lifecycle.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import BottleError
from ...manifest import default_home
from ...state import (
    StateDir,
    all_state_dirs,
    remove_tree,
    slug_of_project,
    snapshot_dir,
    state_dir,
)
from .. import Progress
from . import engine, pool, snapshot, workspace
from .lifecycle import save_work, stop


@dataclass
class CleanupPlan:
    bottles: list[tuple[str, Path, str]]  # (compose project, the home that holds its state, slug)
    containers: list[str]
    networks: list[str]
    state_dirs: list[StateDir]
    # Work volumes no running bottle uses and no kept (.preserve) state folder claims.
    volumes: list[workspace.Volume] = field(default_factory=list)
    # Snapshot images (tag, snapshot name, home): those of test homes (with their folders), and
    # ones whose snapshot folder is gone.
    snapshot_images: list[tuple[str, str, str]] = field(default_factory=list)
    with_folders: bool = False  # --homes-under: the snapshots' folders go with their images
    # Warm pool members not claimed yet (member, home), and pool folders of this home the engine
    # holds no member of.
    pool_members: list[tuple[str, Path]] = field(default_factory=list)
    pool_folders: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.bottles
            or self.containers
            or self.networks
            or self.state_dirs
            or self.volumes
            or self.snapshot_images
            or self.pool_members
            or self.pool_folders
        )

    def describe(self) -> str:
        lines = [f"compose project {p} (home {h})" for p, h, _ in self.bottles]
        lines += [f"warm pool member {m} (home {h})" for m, h in self.pool_members]
        lines += [f"pool folder {f}" for f in self.pool_folders]
        lines += [f"container {c}" for c in self.containers]
        lines += [f"network {n}" for n in self.networks]
        lines += [
            f"volume {v.name} (home {v.home or '?'}; what it holds that nothing else does is archived first)"
            for v in self.volumes
        ]
        lines += [f"state folder {s.path}" for s in self.state_dirs]
        lines += [
            f"snapshot image {ref} (home {h or '?'}; "
            + ("its snapshot folder goes too)" if self.with_folders else "its snapshot folder is gone)")
            for ref, _, h in self.snapshot_images
        ]
        return "\n".join(lines)


def in_scope(label_home: str, home: Path, *, all_homes: bool = False, homes_under: Path | None = None) -> bool:
    """Whether a bottle whose home label is ``label_home`` is cleanup's to remove: this home's by
    default, every home with ``all_homes``, homes below a folder with ``homes_under``; one with no
    home label only with ``all_homes``."""
    if all_homes:
        return True
    if not label_home:
        return False
    real = os.path.realpath(label_home)
    if homes_under is not None:
        base = os.path.realpath(homes_under)
        return real == base or real.startswith(base.rstrip(os.sep) + os.sep)
    return real == os.path.realpath(home)


async def plan_cleanup(home: Path, *, all_homes: bool = False, homes_under: Path | None = None) -> CleanupPlan:
    """What `cleanup` removes. By default only bottles and leftovers that ``home`` started (the
    home label on their containers and networks); ``all_homes`` widens to every bottle-tui bottle
    on the engine, ``homes_under`` to every home below a folder (test runs)."""

    def scoped(label_home: str) -> bool:
        return in_scope(label_home, home, all_homes=all_homes, homes_under=homes_under)

    live = await engine.bottle_projects()
    infos = await engine.discover()
    members = await engine.pool_members()
    bottles = [(b.project, Path(b.home) if b.home else home, b.slug) for b in infos if scoped(b.home)]
    containers, networks = await engine.stray_resources(live)
    # A claimed pool member's project and volume keep its member's name; its state folder is its slug's.
    live_slugs = {slug_of_project(p) for p in live} | {b.slug for b in infos}
    pool_folders = [f for f in pool.member_folders(home) if f.name not in live_slugs] if homes_under is None else []
    # A swarm bottle's state folder is the swarm backend's to clean up: its bundle is on a node.
    orphans = (
        [
            s
            for s in all_state_dirs(home)
            if not s.preserved and s.slug not in live_slugs and (s.read_metadata() or {}).get("backend") != "swarm"
        ]
        if homes_under is None
        else []
    )
    # A kept bottle's volume stays with its kept state folder (`resume` wants both), except below
    # --homes-under (test runs), where everything goes, archived first.
    volumes = [
        v
        for v in await workspace.listing()
        if scoped(v.home)
        and v.slug not in live_slugs
        and (homes_under is not None or not (v.home and state_dir(Path(v.home), v.slug).preserved))
    ]
    # Snapshots are the operator's to keep (`snapshots rm` removes one); cleanup takes only the
    # images whose folder is gone, and below --homes-under (test runs) every one, folder and all.
    images = [
        (ref, name, h)
        for ref, name, h in await snapshot.engine_images()
        if scoped(h) and (homes_under is not None or not snapshot.folder_holds(h, name, ref))
    ]
    return CleanupPlan(
        sorted(bottles),
        [cid for cid, h in containers if scoped(h)],
        [nid for nid, h in networks if scoped(h)],
        orphans,
        volumes,
        sorted(images),
        with_folders=homes_under is not None,
        pool_members=sorted((m.slug, Path(m.home)) for m in members if m.home and scoped(m.home)),
        pool_folders=pool_folders,
    )


async def cleanup(plan: CleanupPlan, progress: Progress) -> list[str]:
    """Carry out ``plan``: each bottle is stopped as `stop` does (archived, state removed unless
    preserved). Returns the problems met, one line each; a bottle that fails does not stop the rest."""
    problems: list[str] = []
    for project, bottle_home, slug in plan.bottles:
        progress(f"removing {project}")
        try:
            report = await stop(bottle_home, slug, progress)
            problems += report.problems
        except BottleError as exc:
            problems.append(str(exc))
    for member, member_home in plan.pool_members:
        progress(f"removing warm pool member {member}")
        problems += await pool.retire(member_home, member)
    for folder in plan.pool_folders:
        progress(f"removing {folder}")
        problems += remove_tree(folder)
    # Containers first: a network still in use by one cannot be removed.
    await engine.remove_containers(plan.containers)
    await engine.remove_networks(plan.networks)
    # Volumes before state folders: a git bottle's state holds the mirror its commits are checked against.
    for v in plan.volumes:
        progress(f"archiving and removing volume {v.name}")
        try:
            # A volume without a home label (made by hand) is archived in the default home.
            saved = await save_work(Path(v.home) if v.home else default_home(), v.slug, None)
        except BottleError as exc:
            problems.append(f"kept volume {v.name}: {exc}")
            continue
        progress(saved.line)
        gone = await workspace.remove(v.name)
        if gone is not None:
            problems.append(gone)
    for s in plan.state_dirs:
        progress(f"removing {s.path}")
        problems += s.remove()
    for ref, name, h in plan.snapshot_images:  # after the bottles: a fork's agent used its image
        progress(f"removing snapshot image {ref}")
        gone = await snapshot.remove_image(ref)
        if gone is not None:
            problems.append(gone)
        elif plan.with_folders and h:
            problems += remove_tree(snapshot_dir(Path(h), name).path)
    return problems
