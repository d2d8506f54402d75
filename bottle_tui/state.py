"""The one place on the host that knows the state layout under ``$CLAUDE_BOTTLE_HOME/state/<slug>/``.

The names of what the host shares with the sidecars come from the contract
(bottle_contract.layout); this module adds the host's own files, and the slug and
compose-project naming that discovery trusts.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bottle_contract import layout
from bottle_contract.files import atomic_write

from .errors import BottleError

PROJECT_PREFIX = "claude-bottle-"
PRESERVE_MARKER = ".preserve"
# audit.jsonl (a bottle's and the home's): rotated at 8 MiB, four older files kept.
AUDIT_LOG_CAP = layout.Cap(8 << 20, 4)
# What an operator wants after the fact, kept in archive/<slug>/ when a bottle stops; the rest
# of the state folder (CA key, compose file, routes) is runtime material and goes.
ARCHIVED = (
    "metadata.json",
    "bringup.log",
    "teardown.log",
    "compose.log",
    "transcript",
    "work-start.json",  # where the agent's checkout began: what its work is read against
    f"{layout.EGRESS}/{layout.REQUESTS_LOG}*",
    f"{layout.EGRESS}/{layout.USAGE}",  # what the bottle spent (`bottle-tui usage` reads it after stop)
    f"{layout.EGRESS}/{layout.METERING}",  # its budget and prices as they last were
)


def default_home() -> Path:
    """$CLAUDE_BOTTLE_HOME, or ~/.claude-bottle."""
    env = os.environ.get("CLAUDE_BOTTLE_HOME", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".claude-bottle"


def home_path(path: str | Path | None = None) -> Path:
    """The home a command works on: ``path`` when given (``--home``), else ``default_home()``."""
    return Path(path).expanduser() if path else default_home()


def new_slug(agent: str) -> str:
    return f"{agent}-{secrets.token_hex(3)}"


def project_name(slug: str) -> str:
    return PROJECT_PREFIX + slug


def slug_of_project(project: str) -> str | None:
    return project[len(PROJECT_PREFIX) :] if project.startswith(PROJECT_PREFIX) else None


def _read_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class StateDir:
    """Paths of one bottle's state folder. Each sidecar gets a sub-folder, bind-mounted as a folder."""

    path: Path

    @property
    def slug(self) -> str:
        return self.path.name

    @property
    def metadata(self) -> Path:
        return self.path / "metadata.json"

    @property
    def compose_file(self) -> Path:
        return self.path / "compose.yaml"

    @property
    def bringup_log(self) -> Path:
        return self.path / "bringup.log"

    @property
    def teardown_log(self) -> Path:
        return self.path / "teardown.log"

    @property
    def compose_log(self) -> Path:
        return self.path / "compose.log"

    @property
    def transcript(self) -> Path:
        return self.path / "transcript"

    @property
    def egress(self) -> Path:
        """Mounted into sidecars only: routes.yaml, the egress CA key, requests.jsonl, ready."""
        return self.path / layout.EGRESS

    @property
    def supervise(self) -> Path:
        """Mounted into sidecars only: queue/ of proposals (see proposals.py), the daemon's cursor."""
        return self.path / layout.SUPERVISE

    @property
    def queue(self) -> Path:
        """The proposals the supervise daemon queues, one JSON file each."""
        return self.supervise / layout.QUEUE

    @property
    def git_gate(self) -> Path:
        """Mounted into sidecars only: gate.json, upstream-ca.pem, the mirror, pushes.jsonl, ready."""
        return self.path / layout.GIT_GATE

    @property
    def status(self) -> Path:
        """Mounted into sidecars only: status.json, the agent's state as claude's hooks report it."""
        return self.path / layout.STATUS

    # Files the sidecars and the host share: named here only.
    @property
    def routes(self) -> Path:
        """The policy in force (egress reloads it on SIGHUP)."""
        return self.egress / layout.ROUTES

    @property
    def egress_log(self) -> Path:
        """egress's decisions, one JSON line each (rotated to .1 ... .4)."""
        return self.egress / layout.REQUESTS_LOG

    @property
    def metering(self) -> Path:
        """What egress meters and the budget (the host writes it; a budget decision rewrites it)."""
        return self.egress / layout.METERING

    @property
    def usage(self) -> Path:
        """What the bottle spent, per model, as egress counted it."""
        return self.egress / layout.USAGE

    @property
    def egress_ready(self) -> Path:
        return self.egress / layout.READY

    @property
    def supervise_ready(self) -> Path:
        return self.supervise / layout.READY

    @property
    def git_gate_ready(self) -> Path:
        return self.git_gate / layout.READY

    @property
    def status_file(self) -> Path:
        """What claude's hooks last reported, written by the bundle's status daemon."""
        return self.status / layout.STATUS_FILE

    @property
    def audit_log(self) -> Path:
        """Every decision on this bottle's proposals and policy (the home has one for all)."""
        return self.path / "audit.jsonl"

    @property
    def git_mirror(self) -> Path:
        """The gate's mirror(s) of the upstream (``<repo>.git`` folders): what the gate holds."""
        return self.git_gate / layout.MIRROR

    def mirror_repo(self, repo: str) -> Path:
        """The gate's mirror of ``repo`` (``<repo>.git``), where the gate and the host agree it is."""
        return self.git_gate / layout.mirror_git_dir(repo)

    @property
    def work_start(self) -> Path:
        """Where the agent's checkout began (its commit and branch, recorded at bring-up): host only,
        so the agent, which can rewrite every ref of its own repository, cannot move it."""
        return self.path / "work-start.json"

    @property
    def gate_config(self) -> Path:
        """gate.json: written for a bottle with git (its upstream and branch), absent without."""
        return self.git_gate / layout.GATE_CONFIG

    def write_work_start(self, record: dict[str, Any]) -> None:
        atomic_write(self.work_start, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)

    def read_work_start(self) -> dict[str, Any] | None:
        """The record of where the checkout began, or None when none was made (or it is unreadable)."""
        return _read_object(self.work_start)

    def read_gate_config(self) -> dict[str, Any] | None:
        return _read_object(self.gate_config)

    @property
    def ca(self) -> Path:
        """Mounted read-only into the agent: only the egress CA certificate, never its key."""
        return self.path / "ca"

    @property
    def preserve_marker(self) -> Path:
        return self.path / PRESERVE_MARKER

    @property
    def preserved(self) -> bool:
        return self.preserve_marker.exists()

    def create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.path.mkdir(mode=0o700)
        except FileExistsError as exc:
            raise BottleError(
                f"state folder {self.path} already exists: pick another slug or run `bottle-tui cleanup`"
            ) from exc
        os.chmod(self.path, 0o700)
        for sub in (self.egress, self.git_gate, self.supervise, self.status, self.ca):
            sub.mkdir(mode=0o700)
        # The agent (another uid) reads the CA certificate through its bind mount.
        os.chmod(self.ca, 0o755)

    def write_metadata(self, data: dict[str, Any]) -> None:
        atomic_write(self.metadata, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def read_metadata(self) -> dict[str, Any] | None:
        return _read_object(self.metadata)

    def remove(self) -> list[str]:
        """Delete the folder; returns one line for each path that could not be removed."""
        return remove_tree(self.path)

    def archive_to(self, dest: Path) -> list[str]:
        """Copy what ARCHIVED names into ``dest`` (created 0700); returns one line per failure."""
        problems: list[str] = []
        try:
            dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            return [f"cannot create {dest}: {exc.strerror or exc}"]
        for pattern in ARCHIVED:
            for src in sorted(self.path.glob(pattern)):
                target = dest / src.relative_to(self.path)
                try:
                    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    if src.is_dir():
                        shutil.copytree(src, target, dirs_exist_ok=True, symlinks=True)
                    else:
                        shutil.copy2(src, target, follow_symlinks=False)
                except (OSError, shutil.Error) as exc:
                    problems.append(f"cannot archive {src}: {getattr(exc, 'strerror', None) or exc}")
        return problems


def remove_tree(path: Path) -> list[str]:
    """rmtree that keeps going and says what it could not remove (one line each)."""
    problems: list[str] = []

    def failed(_func: object, failed_path: str, exc_info: tuple[Any, ...]) -> None:
        exc = exc_info[1]
        if isinstance(exc, FileNotFoundError):
            return  # gone already: that is what we wanted
        problems.append(f"cannot remove {failed_path}: {getattr(exc, 'strerror', None) or exc}")

    if path.exists() or path.is_symlink():
        shutil.rmtree(path, onerror=failed)  # onexc needs Python 3.12
    return problems


def state_root(home: Path) -> Path:
    return home / "state"


def pool_root(home: Path) -> Path:
    """``pool/<member>/``: warm bottles waiting for a claim (backends/docker/pool.py), each a state
    folder until a claim moves it to ``state/<slug>/``."""
    return home / "pool"


def archive_root(home: Path) -> Path:
    """``archive/<slug>/``: logs, transcript, egress decisions and metadata of stopped bottles."""
    return home / "archive"


# What stop saves of the agent's checkout, in archive/<slug>/work/ (see backends/docker/workspace.py).
WORK_ARCHIVE = "work"
UNCOMMITTED_PATCH = "uncommitted.patch"  # `git diff --binary` of tracked and untracked files against HEAD
REFS_BUNDLE = "refs.bundle"  # a git bundle of every local ref, HEAD and every stash entry
WORK_TARBALL = "work.tar.gz"  # the checkout of a bottle without git (a plain folder)


def archive_dir(home: Path, slug: str) -> Path:
    """``archive/<slug>/``, checked as a slug."""
    return archive_root(home) / state_dir(home, slug).slug


def work_archive(home: Path, slug: str) -> Path:
    """``archive/<slug>/work/``: what stop saved of the agent's checkout that nothing else holds."""
    return archive_dir(home, slug) / WORK_ARCHIVE


def snapshot_root(home: Path) -> Path:
    """``snapshots/<name>/``: what `bottle-tui snapshot` saved of a bottle (its image lives in the engine)."""
    return home / "snapshots"


@dataclass(frozen=True)
class SnapshotDir:
    """Paths of one snapshot's folder: the record, the agent's home, and the policy at snapshot time."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def record(self) -> Path:
        """snapshot.json: what was saved, from which bottle, and the engine image of its filesystem."""
        return self.path / "snapshot.json"

    @property
    def home_tar(self) -> Path:
        """The agent's work volume (checkout and ~/.claude), as a tar of /home/agent."""
        return self.path / "home.tar"

    @property
    def routes(self) -> Path:
        """The routes.yaml in force when the snapshot was taken (a fork starts with it)."""
        return self.path / layout.ROUTES

    @property
    def metadata(self) -> Path:
        """The source bottle's metadata.json, as it was."""
        return self.path / "metadata.json"

    def partial(self) -> Path:
        """Where a snapshot is written before it is renamed into place."""
        return self.path.with_name(f".{self.name}.partial")

    def read_record(self) -> dict[str, Any] | None:
        return _read_object(self.record)

    def write_record(self, record: dict[str, Any], folder: Path | None = None) -> None:
        target = (folder or self.path) / self.record.name
        atomic_write(target, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)


def snapshot_dir(home: Path, name: str) -> SnapshotDir:
    """``snapshots/<name>/``; the name is checked where it comes in (``snapshots.check_name``)."""
    if not name or "/" in name or name.startswith("."):
        raise BottleError(f"'{name}' is not a snapshot name: use one that `bottle-tui snapshots ls` prints")
    return SnapshotDir(snapshot_root(home) / name)


def all_snapshot_dirs(home: Path) -> list[SnapshotDir]:
    root = snapshot_root(home)
    if not root.is_dir():
        return []
    return [SnapshotDir(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def prune_archive(
    home: Path, *, max_age_days: float, max_total_mb: float, now: float, keep: Path | None = None
) -> tuple[list[Path], list[str]]:
    """Drop archived bottles older than ``max_age_days``, then the oldest until the archive holds
    at most ``max_total_mb``; ``keep`` (the archive just written) always stays. Returns (removed
    folders, problems)."""
    root = archive_root(home)
    if not root.is_dir():
        return [], []
    entries = []
    for folder in root.iterdir():
        if not folder.is_dir() or folder.is_symlink() or folder == keep:
            continue
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
        entries.append((folder.stat().st_mtime, folder, size))
    entries.sort()  # oldest first
    removed: list[Path] = []
    problems: list[str] = []
    total = sum(size for _, _, size in entries)
    limit = max_total_mb * 1024 * 1024
    for mtime, folder, size in entries:
        too_old = now - mtime > max_age_days * 86400
        if too_old or total > limit:
            problems += remove_tree(folder)
            removed.append(folder)
            total -= size
    return removed, problems


def state_dir(home: Path, slug: str) -> StateDir:
    if not slug or "/" in slug or slug.startswith("."):
        raise BottleError(f"'{slug}' is not a bottle slug: use one that `bottle-tui ls` prints")
    return StateDir(state_root(home) / slug)


def notify_lock_path(home: Path) -> Path:
    """Held by the one process that sends this home's notifications (a console or `notify --watch`)."""
    return state_root(home) / ".notify.lock"


def changed_file(home: Path, raw: str | Path) -> tuple[str, StateDir] | None:
    """What a changed file under ``state/`` is, for a watcher: ("proposal", its bottle's state)
    for a queued proposal, ("status", ...) for claude's status file, ("usage", ...) for what it
    spent, None for anything else."""
    path = Path(raw)
    root = state_root(home)
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    if len(rel.parts) < 2 or rel.parts[0].startswith("."):
        return None
    state = StateDir(root / rel.parts[0])
    if path == state.status_file:
        return "status", state
    if path == state.usage:
        return "usage", state
    if path.parent == state.queue and path.suffix == ".json" and not path.name.startswith("."):
        return "proposal", state
    return None


def all_state_dirs(home: Path) -> list[StateDir]:
    root = state_root(home)
    if not root.is_dir():
        return []
    return [StateDir(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
