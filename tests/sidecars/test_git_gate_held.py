"""Held pushes on their way to an https upstream (held.py), with real git repositories and a
file:// upstream standing in for the https one: the branches the agent is served (upstream's with
the held tips over them), forwarding an approved push only over what it was made against or as a
fast-forward, a rejected push dropped, and what the agent is told on its next push."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bottle_contract import proposal as contract
from tests.support.sidecars import git_gate_module

held = git_gate_module("held")
review = git_gate_module("review")
pp = git_gate_module("push_policy")
upstream_git = git_gate_module("upstream_git")

ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, check=True, env={**os.environ, **ENV}, timeout=60
    ).stdout.strip()


def rev(git_dir: Path, ref: str) -> str | None:
    out = subprocess.run(
        ["git", "--git-dir", str(git_dir), "rev-parse", "-q", "--verify", ref], capture_output=True, text=True
    )
    return out.stdout.strip() or None


class World:
    """An upstream, a seed clone that plays the other people pushing to it, and the gate's mirror."""

    def __init__(self, tmp: Path) -> None:
        self.upstream, self.mirror, self.seed = (
            tmp / "upstream.git",
            tmp / "state" / "mirror" / "repo.git",
            tmp / "seed",
        )
        self.state = tmp / "state"
        git("init", "-q", "--bare", "-b", "main", str(self.upstream))
        git("init", "-q", "-b", "main", str(self.seed))
        self.main = self.commit("README", "first")
        git("-C", str(self.seed), "push", "-q", str(self.upstream), "main")
        git("init", "-q", "--bare", str(self.mirror))
        self.cfg = pp.GateConfig(
            upstream=f"file://{self.upstream}",
            repo="repo",
            branch="main",
            protected=("main",),
            credentials_env=None,
            port=1,
            listen_alias="git-gate",
            refresh_timeout_seconds=10,
            first_mirror_timeout_seconds=10,
            review=True,
            slug="coder-1",
        )
        self.env = {**os.environ, **ENV}
        assert self.fetch()

    def commit(self, name: str, text: str, branch: str = "main") -> str:
        git("-C", str(self.seed), "checkout", "-q", "-B", branch)
        (self.seed / name).write_text(text)
        git("-C", str(self.seed), "add", name)
        git("-C", str(self.seed), "commit", "-qm", name)
        return git("-C", str(self.seed), "rev-parse", "HEAD")

    def to_mirror(self, sha: str) -> None:
        """The objects of ``sha`` in the mirror, as the agent's push brings them."""
        git("-C", str(self.seed), "push", "-q", str(self.mirror), f"{sha}:refs/tmp/push")
        git("--git-dir", str(self.mirror), "update-ref", "-d", "refs/tmp/push")

    def fetch(self) -> bool:
        run = subprocess.run(
            ["git", *upstream_git.fetch_argv(self.cfg, str(self.mirror))],
            capture_output=True,
            env=self.env,
        )
        if run.returncode == 0:
            held.overlay(str(self.mirror))
        return run.returncode == 0

    def queue(self) -> contract.Queue:
        return review.queue_for(str(self.state / "git-gate"))

    def propose(self, branch: str, new: str, status: str, upstream_at_push: str | None, **extra) -> dict:
        p = contract.new_proposal(
            "coder-1",
            "git-push",
            {"branch": branch, "new": new, "home": None, "base": None, "rewrites": False, "commits": 1},
            "a push",
            upstream_at_push=upstream_at_push,
            **extra,
        )
        p["status"] = status
        p["decision"] = {"by": "op", "at": "2026-12-04T00:00:00+00:00", "note": "no thanks"}
        queue = self.queue()
        with queue.lock():
            queue.write(p)
        return p

    def act(self, fetch_ok: bool = True) -> int:
        return held.act_on_decisions(
            str(self.mirror),
            self.cfg,
            str(self.state / "git-gate"),
            self.env,
            self.fetch if fetch_ok else lambda: False,
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    (tmp_path / "state" / "git-gate").mkdir(parents=True)
    return World(tmp_path)


def test_the_agent_is_served_upstreams_branches_with_the_held_tips_over_them(world: World) -> None:
    m = str(world.mirror)
    assert rev(world.mirror, "refs/heads/main") == world.main
    theirs = world.commit("other", "x", branch="topic")
    git("-C", str(world.seed), "push", "-q", str(world.upstream), "topic")
    mine = world.commit("mine", "y", branch="mine")
    world.to_mirror(mine)
    held.hold(m, "topic", mine)  # the agent's push of topic, and of a branch upstream lacks
    held.hold(m, "mine", mine)
    git("--git-dir", m, "update-ref", "refs/heads/stale", world.main)  # gone upstream, not held
    assert world.fetch()
    assert rev(world.mirror, "refs/heads/topic") == mine and rev(world.mirror, "refs/heads/mine") == mine
    assert rev(world.mirror, "refs/heads/stale") is None and rev(world.mirror, "refs/upstream/heads/topic") == theirs
    held.release(m, "topic", "0" * 40)  # not its tip: stays held
    held.release(m, "topic", mine)
    held.overlay(m)
    assert rev(world.mirror, "refs/heads/topic") == theirs


def test_an_approved_push_goes_up_over_what_it_was_made_against_or_as_a_fast_forward(world: World) -> None:
    new = world.commit("a", "1", branch="feature")  # a new branch
    world.to_mirror(new)
    p = world.propose("feature", new, "approved", None)
    assert world.act() == 1
    assert rev(world.upstream, "refs/heads/feature") == new
    assert world.queue().read(p["id"])["upstream"]["pushed"] is True
    # Upstream moved on meanwhile, and the push contains it: a fast-forward goes.
    up = world.commit("b", "2", branch="feature")
    git("-C", str(world.seed), "push", "-q", str(world.upstream), "feature")
    ff = world.commit("c", "3", branch="feature")
    world.to_mirror(ff)
    world.propose("feature", ff, "approved", new)
    world.act()
    assert rev(world.upstream, "refs/heads/feature") == ff
    # A rewrite the operator approved goes while upstream is still what the agent pushed against.
    git("-C", str(world.seed), "reset", "-q", "--hard", world.main)
    rewrite = world.commit("d", "4", branch="feature")
    world.to_mirror(rewrite)
    world.propose("feature", rewrite, "approved", ff)
    world.act()
    assert rev(world.upstream, "refs/heads/feature") == rewrite
    assert up != rewrite


def test_a_push_upstream_moved_under_is_not_forced_and_says_why(world: World) -> None:
    mine = world.commit("mine", "1", branch="racy")
    world.to_mirror(mine)
    git("-C", str(world.seed), "checkout", "-q", "-B", "racy", world.main)
    theirs = world.commit("theirs", "2", branch="racy")
    git("-C", str(world.seed), "push", "-q", str(world.upstream), "racy")
    p = world.propose("racy", mine, "approved", None)
    world.act()
    outcome = world.queue().read(p["id"])["upstream"]
    assert outcome["pushed"] is False
    assert outcome["message"] == (
        f"upstream's racy moved to {theirs[:12]} since the push, which does not contain it: fetch, integrate and push again"
    )
    assert rev(world.upstream, "refs/heads/racy") == theirs


def test_rejected_pushes_are_dropped_and_approved_ones_wait_for_a_reachable_upstream(world: World) -> None:
    m = str(world.mirror)
    new = world.commit("a", "1", branch="wip")
    world.to_mirror(new)
    held.hold(m, "wip", new)
    held.overlay(m)
    rejected = world.propose("wip", new, "rejected", None)
    approved = world.propose("wip2", new, "approved", None)
    assert world.act(fetch_ok=False) == 1  # only the rejection: upstream could not be fetched
    assert world.queue().read(rejected["id"])["upstream"]["pushed"] is False
    assert "upstream" not in world.queue().read(approved["id"])
    assert rev(world.mirror, "refs/heads/wip") is None and rev(world.upstream, "refs/heads/wip") is None
    assert world.act() == 1 and rev(world.upstream, "refs/heads/wip2") == new
    assert world.act() == 0  # each decision acted on once


def test_the_agent_hears_of_a_forwarded_push_only_once_it_went(world: World) -> None:
    state = str(world.state / "git-gate")
    new = "a" * 40
    waiting = world.propose("f1", new, "approved", None)
    world.propose("f2", new, "approved", None, upstream={"pushed": True, "message": "pushed"})
    world.propose("f3", new, "approved", None, upstream={"pushed": False, "message": "upstream refused it: no"})
    # the queue's order is its ids': proposals made in the same millisecond come in either order
    lines = sorted(review.deliver_decisions(world.cfg, state), key=lambda line: line.split(" at ")[0])
    assert [line.split(" (proposal")[0] for line in lines] == [
        "git-gate: the operator approved your push of f2 at aaaaaaaaaaaa",
        "git-gate: the operator approved your push of f3 at aaaaaaaaaaaa",
    ]
    assert lines[0].endswith(": it is in upstream's f2")
    assert lines[1].endswith(", but the gate could not push it: upstream refused it: no")
    assert "delivered_at" not in world.queue().read(waiting["id"])
    assert review.deliver_decisions(world.cfg, state) == []
