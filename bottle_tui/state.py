"""The one place that knows the state layout under ``$CLAUDE_BOTTLE_HOME/state/<slug>/``.

Also the one atomic-write helper (temp file in the same folder, fsync, rename) and the slug and
compose-project naming that discovery trusts.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BottleError

PROJECT_PREFIX = "claude-bottle-"
PRESERVE_MARKER = ".preserve"


def new_slug(agent: str) -> str:
    return f"{agent}-{secrets.token_hex(3)}"


def project_name(slug: str) -> str:
    return PROJECT_PREFIX + slug


def slug_of_project(project: str) -> str | None:
    return project[len(PROJECT_PREFIX):] if project.startswith(PROJECT_PREFIX) else None


def atomic_write(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Replace ``path`` so readers see the old or the new content, never a torn file."""
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        return self.path / "egress"

    @property
    def git_gate(self) -> Path:
        """Mounted into sidecars only: gate.json, upstream-ca.pem, the mirror, pushes.jsonl, ready."""
        return self.path / "git-gate"

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
            raise BottleError(f"state folder {self.path} already exists: pick another slug or run `bottle-tui cleanup`") from exc
        os.chmod(self.path, 0o700)
        for sub in (self.egress, self.git_gate, self.ca):
            sub.mkdir(mode=0o700)
        # The agent (another uid) reads the CA certificate through its bind mount.
        os.chmod(self.ca, 0o755)

    def write_metadata(self, data: dict[str, Any]) -> None:
        atomic_write(self.metadata, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def read_metadata(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.metadata.read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def state_root(home: Path) -> Path:
    return home / "state"


def state_dir(home: Path, slug: str) -> StateDir:
    if not slug or "/" in slug or slug.startswith("."):
        raise BottleError(f"'{slug}' is not a bottle slug: use one that `bottle-tui ls` prints")
    return StateDir(state_root(home) / slug)


def all_state_dirs(home: Path) -> list[StateDir]:
    root = state_root(home)
    if not root.is_dir():
        return []
    return [StateDir(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
