"""A bottle whose git upstream is a repository on the operator's machine (``git.upstream`` a path).

The host does everything that touches that repository, and the bottle sees none of it: at
bring-up the host fetches its branches and tags into the gate's mirror in the state folder
(``git-gate/mirror/<repo>.git``, which the bundle mounts; no remote URL or path is left in it);
the agent pushes to the gate, which scans and holds each clean push as a ``git-push`` proposal;
approving one fetches that one commit from the mirror into the operator's repository and moves
exactly one ref, ``refs/heads/bottle/<slug>/<branch>``, with ``git update-ref`` and the value it
expects there (never the working tree, the index, HEAD or any other ref).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bottle_contract import proposal as contract

from .errors import BottleError
from .manifest import GitSpec
from .runner import CommandError, run, run_blocking

ZERO = "0" * 40
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
MAX_DIFF_BYTES = 256 << 10  # of a git-push proposal's diff shown to the operator
# git for the host's own calls: no prompts, and no program of the repository's choosing runs.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"}


async def check(git: GitSpec, source: Path) -> str:
    """The tip of ``git.branch`` in the local upstream; a one-line error naming the manifest and
    key when the path is not a git repository, has no commits, or lacks the branch."""
    path = git.local
    assert path is not None
    if not path.is_dir():
        raise BottleError(f"{source}: git.upstream: {path} does not exist; point it at a clone on this machine")
    top = await run(["git", "-C", path, "rev-parse", "--git-dir"], check=False, env=GIT_ENV, timeout=30)
    if top.returncode != 0:
        raise BottleError(
            f"{source}: git.upstream: {path} is not a git repository; point it at a clone (or run git init there)"
        )
    heads = await run(
        ["git", "-C", path, "for-each-ref", "--format=%(refname:short)", "refs/heads/"], env=GIT_ENV, timeout=30
    )
    branches = heads.stdout.split()
    if not branches:
        raise BottleError(f"{source}: git.upstream: {path} has no commits yet; commit something there first")
    tip = await run(
        ["git", "-C", path, "rev-parse", "--verify", "--quiet", f"refs/heads/{git.branch}^{{commit}}"],
        check=False,
        env=GIT_ENV,
        timeout=30,
    )
    if tip.returncode != 0:
        shown = ", ".join(branches[:8]) + (" ..." if len(branches) > 8 else "")
        raise BottleError(
            f"{source}: git.branch: {path} has no branch '{git.branch}' (it has {shown}); name one of those or create it"
        )
    return tip.stdout.strip()


async def make_mirror(git: GitSpec, source: Path, git_dir: Path) -> str:
    """The gate's mirror of the local upstream: its branches and tags, fetched (never hard-linked:
    the bundle must have no write access to the operator's objects), with no URL or path of it
    left behind. Returns the tip of git.branch it holds (what held pushes are counted from)."""
    tip = await check(git, source)
    assert git.local is not None
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        await run(["git", "init", "--quiet", "--bare", git_dir], env=GIT_ENV, timeout=60)
        await run(
            [
                "git",
                "--git-dir",
                git_dir,
                "fetch",
                "--quiet",
                "--no-write-fetch-head",
                "--no-auto-gc",
                "--no-recurse-submodules",
                git.local,
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            ],
            env=GIT_ENV,
            timeout=1800,
        )
        # What a clone of the gate checks out (the gate sets it too, as for every upstream).
        await run(["git", "--git-dir", git_dir, "symbolic-ref", "HEAD", f"refs/heads/{git.branch}"], env=GIT_ENV)
    except CommandError as exc:
        raise BottleError(f"{source}: git.upstream: cannot mirror {git.local} for the gate: {exc}") from exc
    return tip


# --- bringing an approved push home -------------------------------------------------------------------


@dataclass(frozen=True)
class BroughtHome:
    ref: str
    action: str  # created | fast-forward | rewrote | already there
    old: str | None
    new: str

    def line(self) -> str:
        return f"{self.ref} {self.action}" + (f" ({self.old[:12]} -> {self.new[:12]})" if self.old else "")


def _git(repo: Path, *argv: str, check: bool = True, timeout: float = 120) -> str:
    return run_blocking(["git", "-C", repo, *argv], check=check, env=GIT_ENV, timeout=timeout).stdout.strip()


def _is_ancestor(repo: Path, old: str, new: str) -> bool:
    out = run_blocking(
        ["git", "-C", repo, "merge-base", "--is-ancestor", old, new], check=False, env=GIT_ENV, timeout=60
    )
    return out.returncode == 0


def _checked_out(repo: Path) -> set[str]:
    """The branches some worktree of ``repo`` has checked out (update-ref would move them under it)."""
    out = _git(repo, "worktree", "list", "--porcelain")
    return {line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("branch ")}


def bring_home(repo: Path, git_dir: Path, slug: str, pid: str, change: dict[str, Any]) -> BroughtHome:
    """Approve ``change`` (a validated git-push change) into ``repo``: fetch its commit from the
    mirror and move refs/heads/bottle/<slug>/<branch> to it, expecting the value it holds now.
    Blocking (a worker thread). A one-line BottleError when it cannot be done as approved."""
    ref = contract.home_ref(slug, change["branch"])
    new = change["new"]
    if run_blocking(["git", "check-ref-format", ref], check=False, env=GIT_ENV).returncode != 0:
        raise BottleError(f"proposal {pid}: {ref!r} is not a ref git accepts; reject it")
    if not repo.is_dir() or run_blocking(["git", "-C", repo, "rev-parse", "--git-dir"], check=False).returncode:
        raise BottleError(f"proposal {pid}: the bottle's upstream {repo} is no longer a git repository; reject it")
    if ref in _checked_out(repo):
        raise BottleError(
            f"proposal {pid}: {repo} has {ref} checked out; switch that worktree to another branch and approve again"
        )
    current = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False) or None
    try:
        # The objects only (no ref, no FETCH_HEAD, no tags): the one ref moves below, with a lease.
        run_blocking(
            [
                "git",
                "-C",
                repo,
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--no-auto-gc",
                "--no-recurse-submodules",
                git_dir,
                new,
            ],
            env=GIT_ENV,
            timeout=1800,
        )
    except CommandError as exc:
        raise BottleError(f"proposal {pid}: cannot fetch {new[:12]} from the gate's mirror {git_dir}: {exc}") from exc
    if current is None:
        action = "created"
    elif _is_ancestor(repo, new, current):
        return BroughtHome(ref, "already there", current, new)
    elif _is_ancestor(repo, current, new):
        action = "fast-forward"
    elif change["rewrites"] and change["home"] == current:
        action = "rewrote"
    else:
        raise BottleError(
            f"proposal {pid}: {ref} holds {current[:12]}, which this push neither contains nor was told it "
            f"rewrites (was the ref moved at home?); reject it, or delete {ref} and approve again"
        )
    message = f"bottle-tui: approve git-push {pid} of bottle {slug}"
    _git(repo, "update-ref", "-m", message, ref, new, current or ZERO)
    return BroughtHome(ref, action, current, new)


def push_diff(git_dir: Path, change: dict[str, Any], max_bytes: int = MAX_DIFF_BYTES) -> str:
    """The diff a git-push proposal brings (base -> new), read from the gate's mirror; cut at
    ``max_bytes`` with a line saying so. Blocking. A sentence when the mirror cannot show it."""
    base = change.get("base") or EMPTY_TREE
    argv: list[str | Path] = [
        "git",
        "--no-pager",
        "--git-dir",
        git_dir,
        "diff",
        "--no-ext-diff",
        "--no-textconv",
        "--no-color",
    ]
    try:
        out = run_blocking([*argv, "--stat", base, change["new"]], env=GIT_ENV, timeout=60).stdout
        out += "\n" + run_blocking([*argv, base, change["new"]], env=GIT_ENV, timeout=120).stdout
    except CommandError as exc:
        return f"the gate's mirror cannot show this push ({exc})"
    if len(out) > max_bytes:
        return (
            out[:max_bytes]
            + f"\n... cut at {max_bytes >> 10} KiB (git --git-dir {git_dir} diff {base} {change['new']})"
        )
    return out
