"""A local git upstream on the host, against real repositories in temp folders: the one-line
errors for bad input, the gate's mirror the host makes (no path of the operator's left in it),
bringing an approved push home (one ref under refs/heads/bottle/, nothing else touched), the
git-push proposals the gate's review code writes, and their decisions through proposals.decide."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from bottle_contract import proposal as contract
from bottle_tui import local_repo, proposals
from bottle_tui.errors import BottleError
from bottle_tui.manifest import GitSpec
from bottle_tui.state import StateDir
from tests.support.repos import operator_repo as make_operator_repo
from tests.support.repos import snapshot
from tests.support.sidecars import git_gate_module

pp = git_gate_module("push_policy")
review = git_gate_module("review")

ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "op",
    "GIT_AUTHOR_EMAIL": "op@example.test",
    "GIT_COMMITTER_NAME": "op",
    "GIT_COMMITTER_EMAIL": "op@example.test",
}
SOURCE = Path("/h/bottles/box.md")


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HOME", str(tmp_path))


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def commit(repo: Path, name: str, text: str = "") -> str:
    (repo / name).write_text(text or name + "\n")
    git(repo, "add", name)
    git(repo, "commit", "-qm", f"add {name}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def operator_repo(tmp_path: Path) -> Path:
    return make_operator_repo(tmp_path / "code" / "app")


def spec(repo: Path, branch: str = "main") -> GitSpec:
    return GitSpec(upstream=str(repo), branch=branch, credentials_env=None, local=repo)


# --- bad input: one line naming the file and key -------------------------------------------------


def test_a_folder_that_is_not_a_repository_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(BottleError) as err:
        asyncio.run(local_repo.check(spec(tmp_path), SOURCE))
    assert (
        str(err.value)
        == f"{SOURCE}: git.upstream: {tmp_path} is not a git repository; point it at a clone (or run git init there)"
    )
    with pytest.raises(BottleError, match="does not exist; point it at a clone"):
        asyncio.run(local_repo.check(spec(tmp_path / "nope"), SOURCE))


def test_a_repository_with_no_commits_is_one_line(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    with pytest.raises(BottleError) as err:
        asyncio.run(local_repo.check(spec(tmp_path), SOURCE))
    assert str(err.value) == f"{SOURCE}: git.upstream: {tmp_path} has no commits yet; commit something there first"


def test_a_missing_branch_names_git_branch_and_the_branches_there(operator_repo: Path) -> None:
    with pytest.raises(BottleError) as err:
        asyncio.run(local_repo.check(spec(operator_repo, "trunk"), SOURCE))
    assert str(err.value) == (
        f"{SOURCE}: git.branch: {operator_repo} has no branch 'trunk' (it has dev, main); name one of those or create it"
    )
    assert asyncio.run(local_repo.check(spec(operator_repo, "dev"), SOURCE)) == git(operator_repo, "rev-parse", "dev")


# --- the mirror ------------------------------------------------------------------------------------


def test_the_mirror_has_the_branches_and_tags_and_no_trace_of_the_operators_path(
    operator_repo: Path, tmp_path: Path
) -> None:
    mirror = tmp_path / "state" / "git-gate" / "mirror" / "app.git"
    tip = asyncio.run(local_repo.make_mirror(spec(operator_repo), SOURCE, mirror))
    assert tip == git(operator_repo, "rev-parse", "main")
    refs = git(mirror, "for-each-ref", "--format=%(refname)").splitlines()
    assert refs == ["refs/heads/dev", "refs/heads/main", "refs/tags/v1"]
    for path in mirror.rglob("*"):
        if path.is_file() and path.stat().st_size < 1 << 20:
            assert str(operator_repo).encode() not in path.read_bytes(), path
    # Copied, never hard-linked: the bundle gets no write access to the operator's objects.
    ours = {p.stat().st_ino for p in (operator_repo / ".git" / "objects").rglob("*") if p.is_file()}
    assert not ours & {p.stat().st_ino for p in mirror.rglob("*") if p.is_file()}


# --- the gate's proposals and bringing them home ---------------------------------------------------


class Bottle:
    """A bottle's state folder with a mirror and a queue, and an agent clone pushing to the mirror
    directly (the gate's hooks are the integration tests' to run, with the real gitleaks)."""

    def __init__(self, tmp: Path, repo: Path, slug: str = "coder-1a2b") -> None:
        self.repo = repo
        self.state = StateDir(tmp / "home" / "state" / slug)
        self.state.create()
        self.mirror = self.state.mirror_repo("app")
        self.start = asyncio.run(local_repo.make_mirror(spec(repo), SOURCE, self.mirror))
        (self.state.git_gate / "gate.json").write_text(json.dumps({"repo": "app"}))
        self.state.write_metadata({"slug": slug, "local_upstream": str(repo)})
        self.cfg = pp.GateConfig(
            upstream=None,
            repo="app",
            branch="main",
            protected=(),
            credentials_env=None,
            port=8418,
            listen_alias="git-gate",
            refresh_timeout_seconds=20,
            first_mirror_timeout_seconds=60,
            review=True,
            slug=slug,
            start=self.start,
        )
        self.work = tmp / "agent-work"
        subprocess.run(["git", "clone", "-q", str(self.mirror), str(self.work)], check=True, capture_output=True)

    @property
    def home(self) -> Path:
        return self.state.path.parent.parent

    def push(self, branch: str, *, force: bool = False) -> dict:
        """Push ``branch`` into the mirror as the gate takes it, and queue its proposal as post-receive does."""
        old = (
            git(self.mirror, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")
            if self.has(branch)
            else pp.ZERO
        )
        git(self.work, "push", "-q", *(["--force"] if force else []), "origin", branch)
        new = git(self.mirror, "rev-parse", f"refs/heads/{branch}")
        made = review.queue_pushes(
            str(self.mirror), self.cfg, str(self.state.git_gate), [pp.RefUpdate(old, new, f"refs/heads/{branch}")]
        )
        assert len(made) == 1
        return made[0]

    def has(self, branch: str) -> bool:
        return (
            subprocess.run(
                ["git", "--git-dir", str(self.mirror), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
                capture_output=True,
            ).returncode
            == 0
        )

    def home_rev(self, branch: str) -> str | None:
        out = subprocess.run(
            [
                "git",
                "-C",
                str(self.repo),
                "rev-parse",
                "--verify",
                "--quiet",
                f"refs/heads/bottle/{self.cfg.slug}/{branch}",
            ],
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() or None


@pytest.fixture
def bottle(tmp_path: Path, operator_repo: Path) -> Bottle:
    return Bottle(tmp_path, operator_repo)


def test_a_held_push_is_a_git_push_proposal_with_its_commits_and_files(bottle: Bottle) -> None:
    git(bottle.work, "checkout", "-q", "-b", "feature")
    first = commit(bottle.work, "a.py", "print('a')\n")
    second = commit(bottle.work, "b.py", "print('b')\n")
    p = bottle.push("feature")
    assert p["kind"] == "git-push" and p["status"] == "pending" and p["slug"] == "coder-1a2b"
    assert p["change"] == {
        "branch": "feature",
        "new": second,
        "home": None,
        "base": bottle.start,
        "rewrites": False,
        "commits": 2,
    }
    assert [c["id"] for c in p["commits"]] == [second, first] and p["commits"][0]["subject"] == "add b.py"
    assert p["files"] == ["A\ta.py", "A\tb.py"] and "2 files changed" in p["stat"]
    assert contract.summary("git-push", p["change"]) == f"git push of branch feature at {second[:12]} (2 commits)"
    shown = proposals.git_push_diff(bottle.state, proposals.find(bottle.home, p["id"])[1])
    assert "+print('b')" in shown and "b.py | 1 +" in shown


def test_approving_brings_the_branch_home_and_touches_nothing_else(bottle: Bottle) -> None:
    before = snapshot(bottle.repo)
    git(bottle.work, "checkout", "-q", "-b", "feature")
    one = commit(bottle.work, "a.py")
    p1 = bottle.push("feature")
    d = proposals.decide(bottle.home, p1["id"], "approve", by="op")
    assert d.home == "refs/heads/bottle/coder-1a2b/feature created" and bottle.home_rev("feature") == one
    two = commit(bottle.work, "b.py")
    p2 = bottle.push("feature")
    assert p2["change"]["home"] == one and p2["change"]["base"] == one and p2["change"]["commits"] == 1
    d = proposals.decide(bottle.home, p2["id"], "approve", by="op")
    assert d.home and "fast-forward" in d.home and bottle.home_rev("feature") == two
    # A rewrite says so, and approving it moves the ref over the old tip it names.
    git(bottle.work, "reset", "-q", "--hard", "HEAD~2")
    three = commit(bottle.work, "c.py")
    p3 = bottle.push("feature", force=True)
    assert p3["change"]["rewrites"] is True and "rewrites history" in contract.summary("git-push", p3["change"])
    d = proposals.decide(bottle.home, p3["id"], "approve", by="op")
    assert d.home and "rewrote" in d.home and bottle.home_rev("feature") == three
    # A rejection moves nothing.
    git(bottle.work, "checkout", "-q", "-b", "wip")
    commit(bottle.work, "wip.py")
    p4 = bottle.push("wip")
    proposals.decide(bottle.home, p4["id"], "reject", by="op", note="not like this")
    assert bottle.home_rev("wip") is None
    assert snapshot(bottle.repo) == before
    refs = git(bottle.repo, "for-each-ref", "--format=%(refname)", "refs/heads/bottle/").splitlines()
    assert refs == ["refs/heads/bottle/coder-1a2b/feature"]


def test_the_decisions_reach_the_agent_once_each(bottle: Bottle) -> None:
    git(bottle.work, "checkout", "-q", "-b", "wip")
    commit(bottle.work, "wip.py")
    p = bottle.push("wip")
    proposals.decide(bottle.home, p["id"], "reject", by="op", note="split it up\nand add tests")
    lines = review.deliver_decisions(bottle.cfg, str(bottle.state.git_gate))
    assert lines == [
        f"git-gate: the operator rejected your push of wip at {p['change']['new'][:12]} (proposal {p['id']}); their note:",
        "git-gate: | split it up",
        "git-gate: | and add tests",
    ]
    assert review.deliver_decisions(bottle.cfg, str(bottle.state.git_gate)) == []
    git(bottle.work, "checkout", "-q", "-b", "good")
    commit(bottle.work, "good.py")
    p = bottle.push("good")
    proposals.decide(bottle.home, p["id"], "approve", by="op")
    assert review.deliver_decisions(bottle.cfg, str(bottle.state.git_gate)) == [
        f"git-gate: the operator approved your push of good at {p['change']['new'][:12]} (proposal {p['id']}): "
        "it is in refs/heads/bottle/coder-1a2b/good"
    ]


def test_a_ref_moved_at_home_or_checked_out_is_never_overwritten(bottle: Bottle) -> None:
    git(bottle.work, "checkout", "-q", "-b", "feature")
    commit(bottle.work, "a.py")
    p1 = bottle.push("feature")
    proposals.decide(bottle.home, p1["id"], "approve", by="op")
    # The operator commits on the bottle's ref at home; the agent's next push is not a fast-forward of it.
    ours = git(
        bottle.repo, "commit-tree", "-p", p1["change"]["new"], "-m", "operator's", f"{p1['change']['new']}^{{tree}}"
    )
    git(bottle.repo, "update-ref", "refs/heads/bottle/coder-1a2b/feature", ours)
    commit(bottle.work, "b.py")
    p2 = bottle.push("feature")
    with pytest.raises(BottleError, match="neither contains nor was told it rewrites"):
        proposals.decide(bottle.home, p2["id"], "approve", by="op")
    assert bottle.home_rev("feature") == ours and proposals.find(bottle.home, p2["id"])[1].pending
    # A ref checked out in a worktree is refused before anything moves.
    git(bottle.repo, "update-ref", "refs/heads/bottle/coder-1a2b/feature", p1["change"]["new"])
    git(bottle.repo, "worktree", "add", "-q", str(bottle.repo.parent / "wt"), "bottle/coder-1a2b/feature")
    with pytest.raises(BottleError, match="checked out; switch that worktree"):
        proposals.decide(bottle.home, p2["id"], "approve", by="op")
    assert bottle.home_rev("feature") == p1["change"]["new"]


def test_a_git_push_cannot_be_modified(bottle: Bottle) -> None:
    git(bottle.work, "checkout", "-q", "-b", "feature")
    commit(bottle.work, "a.py")
    p = bottle.push("feature")
    with pytest.raises(BottleError, match="can be approved or rejected as pushed"):
        proposals.decide(bottle.home, p["id"], "modify", by="op", change={**p["change"], "branch": "main"})


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"branch": "../x"}, "branch"),
        ({"branch": "a b"}, "branch"),
        ({"branch": "x.lock"}, "branch"),
        ({"new": "HEAD"}, "new"),
        ({"home": "abc"}, "home"),
        ({"rewrites": "no"}, "rewrites"),
        ({"commits": -1}, "commits"),
        ({"extra": 1}, "extra"),
    ],
)
def test_git_push_changes_are_checked_by_the_contract(change: dict, key: str) -> None:
    good = {"branch": "f", "new": "a" * 40, "home": None, "base": None, "rewrites": False, "commits": 1}
    assert contract.validate_change("git-push", good) == good
    with pytest.raises(contract.ChangeError) as err:
        contract.validate_change("git-push", {**good, **change})
    assert err.value.key == key


def test_review_refuses_tags_and_a_full_queue(bottle: Bottle, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = pp.RefUpdate(pp.ZERO, "a" * 40, "refs/tags/v2")
    assert "review, which takes branches only" in (pp.refusal(tag, (), review=True) or "")
    assert pp.refusal(tag, (), review=False) is None
    assert review.queue_full(bottle.cfg, str(bottle.state.git_gate)) is None
    monkeypatch.setattr(review.layout, "MAX_PENDING", 1)
    git(bottle.work, "checkout", "-q", "-b", "feature")
    commit(bottle.work, "a.py")
    bottle.push("feature")
    assert "1 proposals already wait for the operator" in (
        review.queue_full(bottle.cfg, str(bottle.state.git_gate)) or ""
    )
    assert os.path.isdir(bottle.state.queue)
