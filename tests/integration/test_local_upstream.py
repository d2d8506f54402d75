"""A bottle on a repository of the operator's machine, on the real engine with the real gitleaks:
the agent clones it through the gate, pushes, and each clean push waits as a git-push proposal;
approving brings the branch home as refs/heads/bottle/<slug>/<branch>, rejecting sends the note
on the agent's next push, a push with a secret is refused and nothing of it lands. One bottle
serves the module (CI time is a budget); the last test checks that the operator's working tree,
index, HEAD and every other ref came through the whole session untouched."""

from __future__ import annotations

import json
import random
import string
import subprocess
from pathlib import Path

import pytest

from tests.support.bottles import Bottle, cli, sh, start_bottle, stop_bottle, write_home
from tests.support.repos import operator_repo, snapshot

pytestmark = pytest.mark.integration

MANIFESTS = {
    "agents/homer.md": "---\nbottle: homebox\n---\nYou are a test agent working on a local repository.\n",
    # Relative to the manifest's folder: <home>/bottles/../../code/app is <home>/../code/app.
    "bottles/homebox.md": "---\ngit: {upstream: ../../code/app, branch: main, protected: [main]}\n"
    "resources: {cpus: 1, memory: 1g, pids: 256}\n---\n",
}


def git(repo: Path, *args: str) -> str:
    return sh("git", "-C", str(repo), *args).stdout.strip()


def agent_sh(bottle: Bottle, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A script as the agent in its checkout; stderr folded in (git's remote: lines)."""
    return sh("docker", "exec", bottle.agent, "sh", "-c", "{ " + script + "\n} 2>&1", "agent-sh", *args, check=False)


def commit_and_push(bottle: Bottle, branch: str, name: str, text: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    made = agent_sh(
        bottle,
        'git checkout -q -B "$1" 2>/dev/null || git checkout -q -b "$1"; printf "%s" "$3" > "$2" && git add "$2" '
        '&& git commit -qm "add $2" && git rev-parse HEAD',
        branch,
        name,
        text,
    )
    assert made.returncode == 0, made.stdout
    sha = made.stdout.strip().splitlines()[-1]
    return sha, agent_sh(bottle, 'git push origin "$1"', branch)


def proposals(home: Path) -> list[dict]:
    return json.loads(cli(home, "proposals", "ls", "--json", "--all").stdout)


def home_rev(repo: Path, ref: str) -> str | None:
    out = sh("git", "-C", str(repo), "rev-parse", "--verify", "--quiet", ref, check=False)
    return out.stdout.strip() or None


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, built_images: dict[str, str]):
    root = tmp_path_factory.mktemp("local-upstream")
    repo = operator_repo(root / "code" / "app")  # with the operator's work in progress
    home = write_home(root / "home")
    for rel, text in MANIFESTS.items():
        (home / rel).write_text(text)
    before = snapshot(repo)
    b = start_bottle(home, "homer")
    try:
        setup = agent_sh(b, "git config --global user.name agent && git config --global user.email agent@bottle.test")
        assert setup.returncode == 0, setup.stdout
        yield b, repo, before
    finally:
        stop_bottle(b)


def test_the_agent_works_on_a_clone_whose_origin_is_the_gate_and_sees_no_host_path(session) -> None:
    b, repo, _ = session
    out = agent_sh(b, "git remote get-url origin && git log --format=%s -1 origin/main && git branch -r")
    assert out.returncode == 0, out.stdout
    assert out.stdout.splitlines()[:2] == ["http://git-gate:8418/app.git", "first"] and "origin/dev" in out.stdout
    # The operator's path is in no container's mounts or environment, nor in the gate's folder.
    for container in (b.agent, b.sidecars):
        inspect = sh("docker", "inspect", container).stdout
        assert str(repo) not in inspect
    for path in (b.state / "git-gate").rglob("*"):
        if path.is_file() and path.stat().st_size < 1 << 20:
            assert str(repo).encode() not in path.read_bytes(), path
    assert json.loads((b.state / "git-gate" / "gate.json").read_text())["upstream"] is None


def test_a_clean_push_succeeds_and_waits_as_a_proposal_and_approving_brings_it_home(session) -> None:
    b, repo, _ = session
    sha, push = commit_and_push(b, "feature", "feature.py", "print('hello')\n")
    assert push.returncode == 0, push.stdout
    assert "is held for the operator's review as proposal" in push.stdout
    (p,) = [p for p in proposals(b.home) if p["kind"] == "git-push" and p["change"]["new"] == sha]
    assert p["status"] == "pending" and p["change"]["branch"] == "feature" and p["change"]["commits"] == 1
    assert home_rev(repo, f"refs/heads/bottle/{b.slug}/feature") is None  # nothing lands before approval
    shown = cli(b.home, "proposals", "show", p["id"]).stdout
    assert f"refs/heads/bottle/{b.slug}/feature" in shown and "add feature.py" in shown and "+print('hello')" in shown
    approved = cli(b.home, "proposals", "approve", p["id"])
    assert f"brought home: refs/heads/bottle/{b.slug}/feature created" in approved.stderr + approved.stdout
    assert home_rev(repo, f"refs/heads/bottle/{b.slug}/feature") == sha
    # A later push of the same branch moves the same ref forward; the agent hears of the approval.
    sha2, push = commit_and_push(b, "feature", "more.py", "x = 1\n")
    assert push.returncode == 0 and "the operator approved your push of feature" in push.stdout, push.stdout
    (p2,) = [p for p in proposals(b.home) if p["change"].get("new") == sha2]
    assert p2["change"]["home"] == sha and not p2["change"]["rewrites"]
    cli(b.home, "proposals", "approve", p2["id"])
    assert home_rev(repo, f"refs/heads/bottle/{b.slug}/feature") == sha2


def test_rejecting_sends_the_note_on_the_next_push(session) -> None:
    b, repo, _ = session
    sha, push = commit_and_push(b, "wip", "wip.py", "pass\n")
    assert push.returncode == 0, push.stdout
    (p,) = [p for p in proposals(b.home) if p["change"].get("new") == sha]
    cli(b.home, "proposals", "reject", p["id"], "--note", "please add tests first")
    assert home_rev(repo, f"refs/heads/bottle/{b.slug}/wip") is None
    _, push = commit_and_push(b, "wip", "test_wip.py", "def test(): pass\n")
    assert push.returncode == 0, push.stdout
    assert f"the operator rejected your push of wip at {sha[:12]}" in push.stdout
    assert "git-gate: | please add tests first" in push.stdout


def test_a_push_with_a_secret_is_refused_and_nothing_lands(session) -> None:
    b, repo, _ = session
    key = "AKIA" + "".join(random.SystemRandom().choice(string.ascii_uppercase + "234567") for _ in range(16))
    sha, push = commit_and_push(b, "leak", "config.py", f'aws_access_key_id = "{key}"\n')
    assert push.returncode != 0 and "aws-access-token in config.py" in push.stdout, push.stdout
    assert not [p for p in proposals(b.home) if p["change"].get("new") == sha]
    assert sh("git", "-C", str(repo), "cat-file", "-e", sha, check=False).returncode != 0
    assert home_rev(repo, f"refs/heads/bottle/{b.slug}/leak") is None
    mirror = b.state / "git-gate" / "mirror" / "app.git"
    assert sh("git", "--git-dir", str(mirror), "cat-file", "-e", sha, check=False).returncode != 0


def test_protected_branches_and_tags_are_refused(session) -> None:
    b, _, _ = session
    out = agent_sh(b, "git checkout -q main && git commit -q --allow-empty -m x && git push origin main")
    assert out.returncode != 0 and "branch 'main' is protected" in out.stdout, out.stdout
    out = agent_sh(b, "git tag v2 && git push origin v2")
    assert out.returncode != 0 and "takes branches only" in out.stdout, out.stdout


def test_the_operators_repository_came_through_the_session_untouched(session) -> None:
    b, repo, before = session
    assert snapshot(repo) == before
    bottle_refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/bottle/").splitlines()
    assert bottle_refs == [f"refs/heads/bottle/{b.slug}/feature"]
