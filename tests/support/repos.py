"""Git repositories made for tests: as an agent leaves them (hostile file names, binary files,
renames, deletes, staged, unstaged and untracked changes), and an operator's with work in progress,
with what a test compares of it around a bottle's session."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "agent",
    "GIT_AUTHOR_EMAIL": "agent@bottle.test",
    "GIT_COMMITTER_NAME": "agent",
    "GIT_COMMITTER_EMAIL": "agent@bottle.test",
    # Fixed times: the same content gives the same commit ids on every run (the snapshots show them).
    "GIT_AUTHOR_DATE": "2026-11-27T07:00:00+00:00",
    "GIT_COMMITTER_DATE": "2026-11-27T07:00:00+00:00",
}

# Names an agent may give its files: a newline, a tab, escapes, Rich markup, a leading dash, quotes,
# bytes that are not UTF-8. Each must list, count and diff exactly.
HOSTILE = [
    b"new\nline.txt",
    b"tab\there.txt",
    b"\x1b[31mred\x1b[0m.txt",
    b"[bold]markup[/bold].txt",
    b"-n",
    b'quo"te\\s.txt',
    b"latin-\xe9\xff.txt",
    b"dir with space/\xe2\x80\xaeevil.txt",
]


def git(repo: Path, *args: str | bytes, input: bytes | None = None) -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, env=GIT_ENV, input=input
    ).stdout


def write(repo: Path, name: bytes, data: bytes) -> None:
    path = os.path.join(os.fsencode(repo), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def content(name: bytes) -> bytes:
    """One line of text that names the file (its newlines made spaces)."""
    return b"content of " + name.replace(b"\n", b" ") + b"\n"


def make_repo(path: Path) -> tuple[Path, str]:
    """A repository with a first commit (the starting point); returns it and that commit."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    write(path, b"README.md", b"# project\n")
    write(path, b"old.py", b"def f():\n    return 1\n" * 20)
    write(path, b"gone.txt", b"to be deleted\n")
    write(path, b"staged.txt", b"one\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "start")
    return path, git(path, "rev-parse", "HEAD").decode().strip()


def make_worked_repo(path: Path) -> tuple[Path, str]:
    """What an agent leaves: commits (a rename, a delete, hostile names, a binary file), then
    staged, unstaged and untracked changes."""
    repo, base = make_repo(path)
    git(repo, "mv", "old.py", "renamed.py")
    git(repo, "rm", "-q", "gone.txt")
    for name in HOSTILE:
        write(repo, name, content(name))
    write(repo, b"image.bin", bytes(range(256)) * 4)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "\x1b[2J[bold]agent[/bold] work\n\nbody line\n")
    write(repo, b"staged.txt", b"one\ntwo\n")
    git(repo, "add", "staged.txt")
    write(repo, b"README.md", b"# project\nunstaged line\n")
    write(repo, b"untracked\nfile.txt", b"never added\n")
    write(repo, b".gitignore", b"ignored.log\n")
    write(repo, b"ignored.log", b"not shown\n")
    return repo, base


def operator_repo(repo: Path) -> Path:
    """The operator's repository: a first commit on main, a tag v1 and a branch dev, then work in
    progress no bottle may disturb (an unstaged edit, a staged file, an untracked file)."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    write(repo, b"README.md", b"# app\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-qm", "first")
    git(repo, "tag", "v1")
    git(repo, "branch", "dev")
    write(repo, b"README.md", b"# app, edited\n")
    write(repo, b"staged.txt", b"staged\n")
    git(repo, "add", "staged.txt")
    write(repo, b"scratch.txt", b"untracked\n")
    return repo


def snapshot(repo: Path) -> dict[str, str]:
    """Everything of the operator's repository a bottle must never change: every ref but the
    bottle's own under refs/heads/bottle/, the working tree's status, HEAD and the index."""

    def text(*args: str) -> str:
        return git(repo, *args).decode().strip()

    refs = text("for-each-ref", "--format=%(refname) %(objectname)")
    return {
        "refs": "\n".join(r for r in refs.splitlines() if not r.startswith("refs/heads/bottle/")),
        "status": text("status", "--porcelain", "--untracked-files=all"),
        "head": text("symbolic-ref", "HEAD") + " " + text("rev-parse", "HEAD"),
        "index": (repo / ".git" / "index").read_bytes().hex(),
    }
