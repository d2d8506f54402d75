"""What the swarm backend does not do yet is refused in one line naming what and what to do, before
anything is made: git bottles, forks, resume and `stop --keep`, snapshots, budget changes (in
test_proposals.py), `usage` of a running swarm bottle; and a node without the images."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest

from bottle_tui import ops
from bottle_tui.backends.swarm import lifecycle
from bottle_tui.backends.swarm.backend import SwarmBackend
from bottle_tui.errors import BottleError
from bottle_tui.state import SnapshotDir, StateDir
from tests.support.console import info as console_info
from tests.support.manifests import BOTTLE, plan_of
from tests.support.snapshots import write_snapshot

# The tests' bottle (with git) on the swarm, and without its git.
GIT = BOTTLE.replace("---\n", "---\nbackend: swarm\n", 1)
SWARM = "".join(line for line in GIT.splitlines(keepends=True) if not line.startswith("git:"))


def one_line(exc: pytest.ExceptionInfo[BottleError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    # A context that does not exist: a refusal must come before the swarm is ever asked.
    (home / "config.yaml").write_text("swarm: {context: bottle-tui-test-no-such-context}\n")
    return home


def swarm_plan(home: Path, text: str = SWARM):  # type: ignore[no-untyped-def]
    plan = plan_of(text)
    return dataclasses.replace(plan, home=home, state=StateDir(home / "state" / plan.slug))


def test_a_git_bottle_is_refused_before_the_swarm_is_asked(home: Path) -> None:
    with pytest.raises(BottleError) as refused:
        asyncio.run(lifecycle.preflight(swarm_plan(home, GIT)))
    message = one_line(refused)
    assert message.startswith("/home/op/.claude-bottle/bottles/web.md: git: a swarm bottle has no git gate yet")
    assert "remove git: or use backend: docker" in message
    assert not (home / "state").exists()


def test_a_fork_is_refused_before_the_swarm_is_asked(home: Path) -> None:
    snap = write_snapshot(home, "coder-snap")
    plan = ops.forked_plan(swarm_plan(home), snap)
    with pytest.raises(BottleError) as refused:
        asyncio.run(lifecycle.preflight(plan))
    message = one_line(refused)
    assert message.startswith("snapshot coder-snap: a fork cannot start on a swarm yet")
    assert "start coder without --from" in message


def test_resume_and_stop_keep_are_refused(home: Path) -> None:
    with pytest.raises(BottleError) as refused:
        asyncio.run(SwarmBackend().resume(swarm_plan(home), print))
    assert one_line(refused) == "coder-0a1b2c is a swarm bottle, which cannot be resumed yet: start a new one"
    with pytest.raises(BottleError) as refused:
        asyncio.run(lifecycle.stop(home, "coder-0a1b2c", print, keep=True))
    assert "cannot be kept for resume yet: stop it without --keep" in one_line(refused)
    assert not (home / "archive").exists()


def test_a_snapshot_is_refused(home: Path) -> None:
    info = dataclasses.replace(console_info("coder-0a1b2c", agent="coder"), backend="swarm", home=str(home))
    folder = SnapshotDir(home / "snapshots" / "s1")
    said: list[str] = []
    with pytest.raises(BottleError) as refused:
        asyncio.run(SwarmBackend().snapshot(home, info, folder, said.append))
    assert "cannot be snapshotted yet: snapshots need a docker bottle" in one_line(refused)
    assert not folder.path.exists()
    assert said == []  # no "snapshotting ..." line before the refusal


def test_usage_of_a_running_swarm_bottle_says_where_it_is_and_when_it_can_be_read(home: Path) -> None:
    state = StateDir(home / "state" / "coder-0a1b2c")
    state.create()
    state.metadata.write_text(json.dumps({"backend": "swarm", "node": "node-a", "agent": "coder"}))
    with pytest.raises(BottleError) as refused:
        ops.usage(home, "coder-0a1b2c")
    message = one_line(refused)
    assert message.startswith("coder-0a1b2c is a swarm bottle: what it spends is counted on the volume of node node-a")
    assert "`bottle-tui stop coder-0a1b2c`" in message


# `docker image ls --format '{{.Repository}}:{{.Tag}}'` of a lab node (engine 20.10), with a
# dangling image and one of another repository as a node may hold them.
NODE_IMAGES = """bottle-tui/sidecars:99b2a972b345
bottle-tui/agent:6eb599a3f56a
<none>:<none>
debian:bookworm-slim
"""


def test_a_node_without_the_images_is_named_with_the_commands_that_fix_it() -> None:
    refs = ["bottle-tui/agent:6eb599a3f56a", "bottle-tui/sidecars:0123456789ab"]
    missing = lifecycle.missing_images(NODE_IMAGES, refs)
    assert missing == ["bottle-tui/sidecars:0123456789ab"]
    assert lifecycle.missing_images(NODE_IMAGES, refs[:1]) == []
    assert lifecycle.missing_images("", refs) == refs
    message = lifecycle.no_images_message("lab-worker2", "lab-worker2-ctx", missing)
    assert "\n" not in message
    assert message.startswith("swarm node lab-worker2 does not have bottle-tui/sidecars:0123456789ab: load them there")
    assert "`docker save bottle-tui/sidecars:0123456789ab | docker --context lab-worker2-ctx load`" in message
    assert "`bottle-tui images push REGISTRY`" in message
