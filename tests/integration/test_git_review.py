"""`git.review: true` with an https upstream, on the real engine with the real gitleaks and the
fake git host: a clean push waits in the gate's mirror as a git-push proposal (the agent's push
succeeds, upstream has nothing, and a refresh of the mirror does not take it away); approving has
the gate push it upstream with its credential; rejecting sends the note and nothing leaves; a push
that upstream moved under meanwhile is not forwarded. One bottle serves the module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_git_gate import agent_sh, commit_on_new_branch, git_bottle_in, git_home, upstream_rev
from tests.support.bottles import (
    UPSTREAM_REPO,
    Bottle,
    cli,
    sh,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rbot(tmp_path_factory: pytest.TempPathFactory, built_images: dict[str, str], upstream: str):
    home = git_home(tmp_path_factory.mktemp("review-home"))
    box = home / "bottles" / "gitbox.md"
    box.write_text(box.read_text().replace("  branch: main\n", "  branch: main\n  review: true\n"))
    yield from git_bottle_in(home, upstream)


def held(b: Bottle, sha: str) -> dict:
    found = json.loads(cli(b.home, "proposals", "ls", "--json", "--all").stdout)
    (p,) = [p for p in found if p["kind"] == "git-push" and p["change"]["new"] == sha]
    return p


def proposal_file(b: Bottle, pid: str) -> dict:
    return json.loads((b.state / "supervise" / "queue" / f"{pid}.json").read_text())


def test_a_clean_push_waits_in_the_gate_and_goes_upstream_when_approved(rbot: Bottle, upstream: str) -> None:
    b = rbot
    sha = commit_on_new_branch(b, "feature", "feature.py", "print('reviewed')\n")
    push = agent_sh(b, "git push origin feature")
    assert push.returncode == 0, push.stdout
    assert "feature is held for the operator's review as proposal" in push.stdout
    assert upstream_rev(upstream, "refs/heads/feature") is None  # nothing left the gate
    p = held(b, sha)
    assert p["status"] == "pending" and p["change"]["commits"] == 1 and not p["change"]["rewrites"]
    shown = cli(b.home, "proposals", "show", p["id"]).stdout
    assert "upstream's feature (the git gate pushes it there)" in shown and "+print('reviewed')" in shown
    # A refresh of the mirror (every fetch starts one) keeps the held push, and hides the gate's own refs.
    fetched = agent_sh(b, "git fetch origin && git rev-parse origin/feature && git ls-remote origin")
    assert fetched.returncode == 0 and fetched.stdout.splitlines()[0] == sha, fetched.stdout
    assert "refs/held/" not in fetched.stdout and "refs/upstream/" not in fetched.stdout

    approved = cli(b.home, "proposals", "approve", p["id"])
    assert "the git gate pushes it upstream now" in approved.stderr + approved.stdout
    wait_for(lambda: upstream_rev(upstream, "refs/heads/feature") == sha, 30, "the gate to push feature upstream")
    outcome = wait_for(lambda: proposal_file(b, p["id"]).get("upstream"), 10, "the outcome in the proposal")
    assert outcome["pushed"] is True
    # The agent hears it on its next push, and a push of the same branch fast-forwards upstream's.
    sha2 = agent_sh(
        b, "echo more >> feature.py && git commit -qam more && git rev-parse HEAD", check=True
    ).stdout.strip()
    push = agent_sh(b, "git push origin feature")
    assert push.returncode == 0, push.stdout
    assert "the operator approved your push of feature" in push.stdout and "it is in upstream's feature" in push.stdout
    p2 = held(b, sha2.splitlines()[-1])
    assert p2["change"]["commits"] == 1 and not p2["change"]["rewrites"]  # counted from upstream's feature
    cli(b.home, "proposals", "approve", p2["id"])
    wait_for(lambda: upstream_rev(upstream, "refs/heads/feature") == p2["change"]["new"], 30, "the second push")


def test_rejecting_sends_the_note_and_nothing_leaves(rbot: Bottle, upstream: str) -> None:
    b = rbot
    sha = commit_on_new_branch(b, "wip", "wip.py", "pass\n")
    assert agent_sh(b, "git push origin wip").returncode == 0
    p = held(b, sha)
    cli(b.home, "proposals", "reject", p["id"], "--note", "not like this")
    wait_for(lambda: proposal_file(b, p["id"]).get("upstream"), 10, "the gate to drop the held push")
    assert upstream_rev(upstream, "refs/heads/wip") is None
    # The mirror no longer serves it, and the next push brings the note.
    listed = agent_sh(b, "git ls-remote origin")
    assert "refs/heads/wip" not in listed.stdout, listed.stdout
    commit_on_new_branch(b, "other", "other.py", "x = 2\n")
    push = agent_sh(b, "git push origin other")
    assert f"the operator rejected your push of wip at {sha[:12]}" in push.stdout
    assert "git-gate: | not like this" in push.stdout


def test_an_approved_push_is_not_forced_over_what_upstream_got_meanwhile(rbot: Bottle, upstream: str) -> None:
    b = rbot
    sha = commit_on_new_branch(b, "racy", "racy.py", "a = 1\n")
    assert agent_sh(b, "git push origin racy").returncode == 0
    p = held(b, sha)
    # Someone else pushes racy to upstream after the agent's push was held.
    sh(
        "docker", "exec", upstream, "sh", "-c",
        f"cd /tmp/seed && git checkout -q -B racy main && echo theirs > theirs.txt && git add theirs.txt "
        f"&& git -c user.name=op -c user.email=op@example.test commit -qm theirs && git push -q {UPSTREAM_REPO} racy",
    )  # fmt: skip
    theirs = upstream_rev(upstream, "refs/heads/racy")
    cli(b.home, "proposals", "approve", p["id"])
    outcome = wait_for(lambda: proposal_file(b, p["id"]).get("upstream"), 30, "the gate's answer")
    assert outcome["pushed"] is False and "upstream's racy moved to" in outcome["message"], outcome
    assert upstream_rev(upstream, "refs/heads/racy") == theirs
    push = agent_sh(b, "git fetch -q origin && git checkout -q -B again origin/main && git push origin again")
    assert "the gate could not push it: upstream's racy moved to" in push.stdout, push.stdout


def test_plan_says_what_review_does(rbot: Bottle) -> None:
    out = cli(rbot.home, "start", "gitter", "--dry-run")
    assert "git.review: clean pushes wait in the gate as git-push proposals" in out.stdout


def test_held_refs_are_in_the_mirror_only(rbot: Bottle) -> None:
    """The gate's own refs (held tips, upstream's branches) are the mirror's: the state folder holds
    them, and the agent cannot push to them."""
    push = agent_sh(rbot, "git push origin HEAD:refs/held/main")
    assert push.returncode != 0, push.stdout
    assert Path(rbot.state / "git-gate" / "mirror" / "repo.git").is_dir()
