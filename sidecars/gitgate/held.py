"""Pushes held for review on their way to an https upstream (gate.json ``review: true`` with an
upstream): what the agent is served meanwhile, and what the gate does once the operator decided.

The mirror keeps upstream's branches in ``refs/upstream/heads/`` and each held push's tip in
``refs/held/<branch>`` (both hidden from the agent); the branches the agent fetches and pushes
against, ``refs/heads/*``, are upstream's with the held tips laid over them, so a refresh never
takes a held push away. An approved push is forwarded by the gate, with its credential, only
while upstream's branch is what the push was made against or the push fast-forwards it (a lease
makes the push itself check that again); the outcome goes into the proposal (``upstream``) and
reaches the agent on its next push. A rejected push's tip stops being served; nothing of it
leaves.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from push_policy import GateConfig
from review import is_ancestor, queue_for, upstream_tip
from upstream_git import UPSTREAM_HEADS, forward_argv, headline, run_git, scrub

from bottle_contract.clock import now_iso

HELD = "refs/held/"
HIDDEN = ("refs/upstream/", HELD)  # transfer.hideRefs: the agent neither sees nor pushes these
FORWARD_TIMEOUT = 300


def _git(git_dir: str, *argv: str, stdin: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG_")}
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return subprocess.run(
        ["git", "--git-dir", git_dir, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    ).stdout


def refs_under(git_dir: str, prefix: str) -> dict[str, str]:
    """``{name below prefix: object id}`` of every ref under ``prefix``."""
    out = _git(git_dir, "for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return {ref[len(prefix) :]: sha for ref, _, sha in (line.partition(" ") for line in out.splitlines()) if sha}


def overlay(git_dir: str) -> None:
    """Make the served branches upstream's, with the held tips laid over them."""
    upstream, held, served = (refs_under(git_dir, p) for p in (UPSTREAM_HEADS, HELD, "refs/heads/"))
    want = {**upstream, **held}
    lines = [f"delete refs/heads/{b} {sha}" for b, sha in served.items() if b not in want]
    lines += [f"update refs/heads/{b} {sha}" for b, sha in want.items() if served.get(b) != sha]
    if lines:
        _git(git_dir, "update-ref", "--stdin", stdin="".join(f"{line}\n" for line in lines))


def hold(git_dir: str, branch: str, new: str) -> None:
    """Keep ``new`` as the held tip of ``branch`` (served until the operator decides)."""
    _git(git_dir, "update-ref", f"{HELD}{branch}", new)


def release(git_dir: str, branch: str, tip: str) -> None:
    """Stop holding ``branch`` if its held tip is ``tip`` (a later push of it stays held)."""
    if refs_under(git_dir, f"{HELD}{branch}").get("") == tip:
        _git(git_dir, "update-ref", "-d", f"{HELD}{branch}", tip)


def undone(cfg: GateConfig, state_dir: str) -> list[dict]:
    """This bottle's decided git-push proposals the gate has not acted on yet."""
    queue = queue_for(state_dir)
    if not os.path.isdir(queue.folder):
        return []
    with queue.lock():
        return [
            p
            for p in queue.all()
            if p["kind"] == "git-push" and p["slug"] == cfg.slug and p["status"] != "pending" and "upstream" not in p
        ]


def forward_one(git_dir: str, cfg: GateConfig, env: dict[str, str], p: dict) -> dict:
    """Push an approved held push upstream (upstream freshly fetched); what happened, as a record."""
    branch, new = str(p["change"]["branch"]), str(p["change"]["new"])
    now, then = upstream_tip(git_dir, branch), p.get("upstream_at_push")
    if not (now == then or (now is not None and is_ancestor(git_dir, now, new))):
        where = f"moved to {now[:12]}" if now else "was deleted"
        return {
            "at": now_iso(),
            "pushed": False,
            "message": f"upstream's {branch} {where} since the push, which does not contain it: "
            "fetch, integrate and push again",
        }
    result = run_git(["--git-dir", git_dir, *forward_argv(cfg, branch, new, now)], env, FORWARD_TIMEOUT)
    if not result.ok:
        return {
            "at": now_iso(),
            "pushed": False,
            "message": f"upstream refused it: {headline(scrub(result.output, cfg))[:300]}",
        }
    _git(git_dir, "update-ref", f"{UPSTREAM_HEADS}{branch}", new)
    return {
        "at": now_iso(),
        "pushed": True,
        "message": f"pushed to upstream's {branch}",
        "seconds": round(result.seconds, 3),
    }


def act_on_decisions(
    git_dir: str, cfg: GateConfig, state_dir: str, env: dict[str, str], fetch: Callable[[], bool]
) -> int:
    """Forward what the operator approved, drop what they rejected (under the mirror's lock).
    ``fetch`` refreshes upstream's branches first; when it fails nothing is forwarded (the next
    call tries again). Returns how many proposals were acted on."""
    todo = undone(cfg, state_dir)
    if not todo:
        return 0
    approved = [p for p in todo if p["status"] != "rejected"]
    if approved and not fetch():
        todo = [p for p in todo if p["status"] == "rejected"]
    queue = queue_for(state_dir)
    for p in todo:
        if p["status"] == "rejected":
            outcome = {"at": now_iso(), "pushed": False, "message": "rejected by the operator: not pushed"}
        else:
            outcome = forward_one(git_dir, cfg, env, p)
        release(git_dir, str(p["change"]["branch"]), str(p["change"]["new"]))
        with queue.lock():
            current = queue.read(p["id"]) or p
            queue.write({**current, "upstream": outcome})
    overlay(git_dir)
    return len(todo)
