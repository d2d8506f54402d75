"""`bottle-tui diff` on real bottles with git: the start recorded at bring-up (on the host, out of
the agent's reach), then the agent's commits, uncommitted and untracked work read live from it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.integration.test_git_gate import (  # noqa: F401 (git_bottle is a fixture)
    agent_sh,
    git_bottle,
    git_home,
)
from tests.support.bottles import GIT_HOST, GIT_SECRET, SECRET, Bottle, cli, connect_fake_internet, sh, stop_bottle

pytestmark = pytest.mark.integration

MESSAGE = "[bold]agent[/bold] adds a file\x1b]0;owned\x07"
NAME = "new\nfile [x].txt"


@pytest.fixture(scope="module")
def cloned_bottle(tmp_path_factory: pytest.TempPathFactory, upstream: str):
    """A bottle whose bring-up clones the upstream: the fake internet joins its egress network
    while the bring-up waits for the gate's first mirror."""
    home = git_home(tmp_path_factory.mktemp("diff-home"))
    env = {**os.environ, "BOTTLE_TEST_TOKEN": SECRET, "BOTTLE_TEST_GIT_TOKEN": GIT_SECRET}
    start = subprocess.Popen(
        [sys.executable, "-m", "bottle_tui", "--home", str(home), "start", "gitter", "--yes", "--detach"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    bottle = None
    try:
        deadline = time.monotonic() + 120
        while bottle is None and time.monotonic() < deadline and start.poll() is None:
            for state in (home / "state").glob("gitter-*") if (home / "state").is_dir() else []:
                candidate = Bottle(state.name, home)
                if sh("docker", "network", "inspect", candidate.network("egress"), check=False).returncode == 0:
                    bottle = candidate
            time.sleep(0.1)
        assert bottle is not None, "the bottle's egress network never appeared"
        bottle.fake_ip = connect_fake_internet(bottle, upstream, (GIT_HOST,))
        out, err = start.communicate(timeout=300)
        assert start.returncode == 0, err[-2000:]
        agent_sh(bottle, "git config --global user.name agent && git config --global user.email a@b.test", check=True)
        yield bottle
    finally:
        if start.poll() is None:
            start.kill()
        if bottle is not None:
            stop_bottle(bottle, upstream)


def diff_json(bottle: Bottle) -> dict:
    return json.loads(cli(bottle.home, "diff", bottle.slug, "--json").stdout)


def work_in_agent(bottle: Bottle) -> None:
    """Commit a file with an odd name on a new branch, change a file without committing, add one
    untracked; then move every ref the agent can (the start must stay where it was recorded)."""
    agent_sh(
        bottle,
        'git checkout -q -b agent-work && printf "x\\n" > "$1" && git add -- "$1" && git commit -qm "$2"'
        ' && printf "more\\n" >> README.md && printf "u\\n" > untracked.txt'
        " && git update-ref refs/remotes/origin/main HEAD && git tag -f start HEAD >/dev/null",
        NAME,
        MESSAGE,
        check=True,
    )


def check_work(data: dict, start: str) -> None:
    assert data["base"] == start and data["head"] == "agent-work"
    files = {f["path"]: f for f in data["files"]}
    assert set(files) == {NAME, "README.md", "untracked.txt"}
    assert {k: files[NAME][k] for k in ("status", "where", "added", "deleted", "binary")} == {
        "status": "A",
        "where": "committed",
        "added": 1,
        "deleted": 0,
        "binary": False,
    }
    assert (files["README.md"]["where"], files["README.md"]["added"]) == ("uncommitted", 1)
    assert files["untracked.txt"]["where"] == "untracked"
    (work,) = [b for b in data["branches"] if b["name"] == "agent-work"]
    assert work["current"] and [c["message"] for c in work["commits"]] == [MESSAGE]
    assert work["commits"][0]["parents"] == [start]


def test_diff_compares_with_the_start_recorded_at_bring_up(cloned_bottle: Bottle) -> None:
    record = json.loads((cloned_bottle.state / "work-start.json").read_text())
    start = record["commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", start) and record["branch"] == "main"
    assert agent_sh(cloned_bottle, "git rev-parse HEAD", check=True).stdout.strip() == start
    before = diff_json(cloned_bottle)
    assert (before["base"], before["files"], before["head"]) == (start, [], "main")
    assert "where its checkout began at bring-up" in before["base_note"]

    work_in_agent(cloned_bottle)
    check_work(diff_json(cloned_bottle), start)
    stat = cli(cloned_bottle.home, "diff", cloned_bottle.slug, "--stat").stdout
    assert "3 files changed, 3 insertions(+), 0 deletions(-)" in stat
    plain = cli(cloned_bottle.home, "diff", cloned_bottle.slug).stdout
    assert "+more" in plain and "+u" in plain and "[bold]agent[/bold] adds a file" in plain
    for text in (stat, plain):  # the agent's escapes never reach the operator's terminal
        assert "\x1b" not in text and "\x07" not in text


def test_an_empty_start_compares_with_what_origin_gave(git_bottle: Bottle) -> None:  # noqa: F811
    # The shared git bottle came up before its upstream was reachable: its checkout began empty.
    record = json.loads((git_bottle.state / "work-start.json").read_text())
    assert record["commit"] is None and record["checkout"] is True
    agent_sh(git_bottle, "git pull -q origin main", check=True)
    upstream_main = agent_sh(git_bottle, "git rev-parse origin/main", check=True).stdout.strip()
    work_in_agent(git_bottle)
    agent_sh(git_bottle, f"git update-ref refs/remotes/origin/main {upstream_main}", check=True)
    data = diff_json(git_bottle)
    check_work(data, upstream_main)
    assert "the checkout began empty" in data["base_note"]
