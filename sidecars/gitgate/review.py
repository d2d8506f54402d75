"""Pushes held for the operator's review (gate.json ``review: true``, always for a local upstream):
a clean push stays in the mirror and each branch it moves becomes a ``git-push`` proposal in the
bottle's queue; the operator's decision reaches the agent on its next push (and list-my-requests).

Bringing an approved branch home (a local upstream) is the host's: it fetches from the mirror in
the state folder into the operator's repository. Forwarding an approved push to an https upstream
is the gate's, with its credential (held.py).
"""

from __future__ import annotations

import os
import subprocess

from push_policy import GateConfig, RefUpdate
from upstream_git import UPSTREAM_HEADS

from bottle_contract import layout
from bottle_contract import proposal as contract
from bottle_contract.clock import now_iso

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
MAX_NOTE_LINES = 20  # of one operator's note, shown to the agent on a push


def _git(git_dir: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG_")}
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return subprocess.run(["git", "--git-dir", git_dir, *argv], capture_output=True, check=check, timeout=120, env=env)


def _text(raw: bytes, limit: int) -> str:
    return raw.decode("utf-8", errors="replace")[:limit]


def queue_for(state_dir: str) -> contract.Queue:
    return contract.Queue(layout.sibling_queue(state_dir))


def is_ancestor(git_dir: str, old: str, new: str) -> bool:
    return _git(git_dir, "merge-base", "--is-ancestor", old, new, check=False).returncode == 0


def home_tip(queue: contract.Queue, slug: str, branch: str) -> str | None:
    """The tip of ``branch`` the operator last approved: what its home ref holds, as far as the gate knows."""
    approved = [
        p
        for p in queue.all()
        if p["kind"] == "git-push"
        and p["slug"] == slug
        and p["status"] == "approved"
        and p["change"].get("branch") == branch
    ]
    approved.sort(key=lambda p: str((p.get("decision") or {}).get("at") or ""))
    return str(approved[-1]["change"]["new"]) if approved else None


def upstream_tip(git_dir: str, branch: str) -> str | None:
    """An https upstream's ``branch`` as the gate last fetched it (review on); None when it has none."""
    out = _git(git_dir, "rev-parse", "-q", "--verify", f"{UPSTREAM_HEADS}{branch}^{{commit}}", check=False)
    return out.stdout.decode().strip() or None if out.returncode == 0 else None


def base_of(git_dir: str, cfg: GateConfig, new: str, home: str | None, branch: str = "") -> str | None:
    """What a push's commits and diff are counted from. A local upstream: the approved tip, else
    where the branch left the bottle's starting point (the operator's branch as mirrored at
    bring-up). An https upstream: where the branch leaves upstream's (the same branch there, else
    git.branch), as a pull request would count it."""
    if cfg.local and home is not None:
        return home
    start = cfg.start if cfg.local else upstream_tip(git_dir, branch) or upstream_tip(git_dir, cfg.branch)
    if start is None:
        return None
    out = _git(git_dir, "merge-base", new, start, check=False)
    if out.returncode != 0:
        return None  # unrelated history: everything the branch holds is new
    return out.stdout.decode().strip() or None


def commits_between(git_dir: str, base: str | None, new: str) -> tuple[int, list[dict[str, str]]]:
    span = [new] if base is None else [f"{base}..{new}"]
    count = int(_git(git_dir, "rev-list", "--count", *span).stdout.decode().strip() or 0)
    out = _git(git_dir, "log", f"-n{contract.MAX_COMMITS}", "-z", "--format=%H%x1f%an <%ae>%x1f%s", *span).stdout
    shown = []
    for record in out.split(b"\0"):
        parts = record.split(b"\x1f")
        if len(parts) == 3:
            shown.append({"id": _text(parts[0], 40), "author": _text(parts[1], 200), "subject": _text(parts[2], 300)})
    return count, shown


def files_between(git_dir: str, base: str | None, new: str) -> tuple[list[str], str]:
    """``A\\tpath`` lines (at most MAX_FILES, then a count) and git's --shortstat line."""
    old = base or EMPTY_TREE
    raw = _git(git_dir, "diff", "--no-renames", "--name-status", "-z", old, new).stdout.split(b"\0")
    pairs = [(raw[i], raw[i + 1]) for i in range(0, len(raw) - 1, 2)]
    files = [f"{_text(status, 4)}\t{_text(path, 500)}" for status, path in pairs[: contract.MAX_FILES]]
    if len(pairs) > contract.MAX_FILES:
        files.append(f"... and {len(pairs) - contract.MAX_FILES} more files")
    stat = _text(_git(git_dir, "diff", "--shortstat", old, new).stdout, 200).strip()
    return files, stat


def proposal_for(git_dir: str, cfg: GateConfig, queue: contract.Queue, update: RefUpdate) -> dict | None:
    """The git-push proposal of one ref update the mirror took (None: a delete, or not a branch)."""
    branch = update.branch
    if branch is None or update.deleted or contract.branch_problem(branch) is not None:
        return None
    home = home_tip(queue, cfg.slug, branch)
    base = base_of(git_dir, cfg, update.new, home, branch)
    count, commits = commits_between(git_dir, base, update.new)
    files, stat = files_between(git_dir, base, update.new)
    # What approving overwrites: the operator's last approved tip at home, or upstream's branch.
    replaced = home if cfg.local else upstream_tip(git_dir, branch)
    change = {
        "branch": branch,
        "new": update.new,
        "home": home,
        "base": base,
        "rewrites": replaced is not None and not is_ancestor(git_dir, replaced, update.new),
        "commits": count,
    }
    reason = commits[0]["subject"] if commits else "a push with no new commits"
    return contract.new_proposal(
        cfg.slug,
        "git-push",
        contract.validate_change("git-push", change),
        reason[: contract.MAX_REASON],
        commits=commits,
        files=files,
        stat=stat,
        # An https upstream's branch when the agent pushed: forwarding later overwrites only that.
        **({} if cfg.local else {"upstream_at_push": replaced}),
    )


def queue_pushes(git_dir: str, cfg: GateConfig, state_dir: str, updates: list[RefUpdate]) -> list[dict]:
    """Queue a git-push proposal for each branch the push moved; returns them."""
    queue = queue_for(state_dir)
    made = []
    with queue.lock():
        for u in updates:
            data = proposal_for(git_dir, cfg, queue, u)
            if data is not None:
                queue.write(data)
                made.append(data)
        queue.prune_decided()
    return made


def queue_full(cfg: GateConfig, state_dir: str) -> str | None:
    """Why a push cannot be held now (the bottle's queue is at its bound), else None."""
    queue = queue_for(state_dir)
    pending = sum(1 for p in queue.all() if p["status"] == "pending")
    if pending >= layout.MAX_PENDING:
        return f"{pending} proposals already wait for the operator; wait for decisions (list-my-requests) before pushing more"
    return None


def home_ref_of(cfg: GateConfig, branch: str) -> str:
    return contract.home_ref(cfg.slug, branch)


def deliver_decisions(cfg: GateConfig, state_dir: str) -> list[str]:
    """What the agent has not yet been told about its held pushes (a decision each), as lines;
    each is marked delivered so it is told once."""
    queue = queue_for(state_dir)
    lines: list[str] = []
    if not os.path.isdir(queue.folder):
        return lines
    with queue.lock():
        for p in queue.all():
            if p["kind"] != "git-push" or p["slug"] != cfg.slug or p["status"] == "pending" or p.get("delivered_at"):
                continue
            change, decision = p["change"], p.get("decision") or {}
            what = f"your push of {change.get('branch')} at {str(change.get('new'))[:12]} (proposal {p['id']})"
            upstream = p.get("upstream") or {}
            if p["status"] == "rejected":
                lines.append(f"git-gate: the operator rejected {what}; their note:")
                note = str(decision.get("note") or "(none)").splitlines()[:MAX_NOTE_LINES]
                lines += [f"git-gate: | {line[:500]}" for line in note]
            elif cfg.local:
                lines.append(
                    f"git-gate: the operator approved {what}: it is in {home_ref_of(cfg, str(change.get('branch')))}"
                )
            elif not upstream:
                continue  # approved, and the gate is forwarding it: told once it is done
            elif upstream.get("pushed"):
                lines.append(f"git-gate: the operator approved {what}: it is in upstream's {change.get('branch')}")
            else:
                lines.append(
                    f"git-gate: the operator approved {what}, but the gate could not push it: {str(upstream.get('message'))[:500]}"
                )
            queue.write({**p, "delivered_at": now_iso()})
    return lines


def held_lines(made: list[dict]) -> list[str]:
    lines = []
    for p in made:
        c = p["change"]
        rewrites = "; it rewrites history the operator approved before" if c["rewrites"] else ""
        lines.append(
            f"git-gate: {c['branch']} is held for the operator's review as proposal {p['id']} "
            f"({c['commits']} commit{'' if c['commits'] == 1 else 's'}{rewrites})"
        )
    if lines:
        lines.append("git-gate: the decision shows in list-my-requests (supervise) and on your next push")
    return lines
