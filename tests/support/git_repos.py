"""What a test compares of the operator's repository around a bottle's session: every ref but the
bottle's own under refs/heads/bottle/, the working tree's status, HEAD and the index."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def snapshot(repo: Path) -> dict[str, str]:
    """Everything of the operator's repository a bottle must never change."""
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    return {
        "refs": "\n".join(r for r in refs.splitlines() if not r.startswith("refs/heads/bottle/")),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "head": git(repo, "symbolic-ref", "HEAD") + " " + git(repo, "rev-parse", "HEAD"),
        "index": (repo / ".git" / "index").read_bytes().hex(),
    }
