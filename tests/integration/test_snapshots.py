"""Snapshots and forks on the real engine: `bottle-tui snapshot` saves a running bottle (its agent's
filesystem as an image, its home volume and the policy in force), `start --from` forks it into a
new bottle of its own while the original keeps running, `snapshots ls|rm`, and the one-line
answers to bad input. Two bring-ups: the module's bottle and its fork."""

from __future__ import annotations

import json

import pytest

from tests.support.bottles import Bottle, cli, sh

pytestmark = pytest.mark.integration

BEFORE = "echo 'written before' > /home/agent/work/before.txt && echo 'outside home' > /tmp/fs-before.txt"
AFTER = "echo 'written after' > /home/agent/work/after.txt && echo 'outside home' > /tmp/fs-after.txt"
# Stands for claude's state: a conversation file where claude keeps them.
CONVERSATION = 'mkdir -p /home/agent/.claude/projects/-home-agent-work && echo \'{"type":"user"}\' > /home/agent/.claude/projects/-home-agent-work/c.jsonl'


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def image_labels(ref: str) -> dict[str, str]:
    return json.loads(sh("docker", "image", "inspect", "--format", "{{json .Config.Labels}}", ref).stdout)


def test_a_fork_has_what_was_there_at_the_snapshot_and_the_original_runs_on(bottle: Bottle) -> None:
    home = bottle.home
    bottle.exec("sh", "-c", f"{BEFORE} && {CONVERSATION}", check=True)
    routes = bottle.state / "egress" / "routes.yaml"
    policy_then = routes.read_text()
    name = f"snap-{bottle.slug}"

    out = cli(home, "snapshot", bottle.slug, "--name", name, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == name
    folder = home / "snapshots" / name
    ref = f"bottle-tui/snapshot:{name}"
    assert last_line(out) == (
        f"snapshot {name} of {bottle.slug}: filesystem in image {ref}, home and policy in {folder} "
        f"(fork it: bottle-tui start tester --from {name})"
    )
    assert {p.name for p in folder.iterdir()} == {"snapshot.json", "home.tar", "routes.yaml", "metadata.json"}
    # Labelled as a snapshot of this home; none of the bottle's own labels make it pass for a bottle.
    found = image_labels(ref)
    assert found["dev.bottle-tui.snapshot"] == name and found["dev.bottle-tui.home"] == str(home)
    assert found["dev.bottle-tui.managed"] == "" and found["com.docker.compose.project"] == ""

    # After the snapshot: a file, and an operator's change to the policy in force.
    bottle.exec("sh", "-c", AFTER, check=True)
    routes.write_text(policy_then.replace("routes:", "# changed after the snapshot\nroutes:", 1))

    again = cli(home, "snapshot", bottle.slug, "--name", name, check=False)
    assert again.returncode == 1
    assert last_line(again).startswith(f"bottle-tui: error: snapshot '{name}' exists (taken ")

    listed = json.loads(cli(home, "snapshots", "ls", "--json").stdout)
    assert [(s["name"], s["of"], s["agent"], s["image"], s["image_present"]) for s in listed] == [
        (name, bottle.slug, "tester", ref, True)
    ]

    started = cli(home, "start", "tester", "--from", name, "--yes", "--detach", check=False)
    assert started.returncode == 0, started.stderr
    fork = Bottle(started.stdout.strip().splitlines()[-1], home)
    try:
        assert fork.slug != bottle.slug
        assert f"from       snapshot {name} of {bottle.slug}" in started.stdout
        # The fork has what was there at the snapshot, in its home and in its own filesystem...
        assert fork.exec("cat", "/home/agent/work/before.txt", check=True).stdout == "written before\n"
        assert fork.exec("cat", "/tmp/fs-before.txt", check=True).stdout == "outside home\n"
        assert fork.exec("sh", "-c", "cat /home/agent/.claude/projects/*/c.jsonl", check=True).stdout.strip()
        # ...and nothing written after it.
        for path in ("/home/agent/work/after.txt", "/tmp/fs-after.txt"):
            assert fork.exec("test", "-e", path).returncode == 1, path
        assert fork.exec("id", "-u", check=True).stdout.strip() == "1000"
        assert fork.exec("sh", "-c", 'echo "$BOTTLE_SLUG"', check=True).stdout.strip() == fork.slug
        # Its own CA, the policy in force at the snapshot, and its own volume.
        ca = "ca/egress-ca.pem"
        assert (fork.state / ca).read_bytes() != (bottle.state / ca).read_bytes()
        assert (fork.state / "egress" / "routes.yaml").read_text() == policy_then
        assert json.loads((fork.state / "metadata.json").read_text())["from_snapshot"] == name
        # The original runs on, with everything it wrote.
        assert bottle.exec("cat", "/home/agent/work/after.txt", check=True).stdout == "written after\n"
        ls = json.loads(cli(home, "ls", "--json").stdout)
        assert {b["slug"]: b["services_up"] for b in ls if b["slug"] in (bottle.slug, fork.slug)} == {
            bottle.slug: 2,
            fork.slug: 2,
        }
        # The snapshot is the fork's image: it stays while the fork runs.
        busy = cli(home, "snapshots", "rm", name, check=False)
        assert last_line(busy) == (
            f"bottle-tui: error: snapshot {name} is the image of bottle {fork.slug}: stop it first (`bottle-tui stop SLUG`)"
        )
    finally:
        cli(home, "stop", fork.slug, check=False)
    gone = cli(home, "snapshots", "rm", name, check=False)
    assert gone.returncode == 0, gone.stderr
    assert not folder.exists()
    assert sh("docker", "image", "inspect", ref, check=False).returncode != 0


def test_bad_input_to_snapshots_is_one_line(bottle: Bottle) -> None:
    home = bottle.home
    cases = {
        (
            "snapshot",
            "tester-000000",
        ): "bottle-tui: error: no running bottle 'tester-000000': `bottle-tui ls` lists the running ones",
        ("snapshot", bottle.slug, "--name", "Not/A/Name"): (
            "bottle-tui: error: --name 'Not/A/Name': a snapshot name is 1-63 characters of a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit"
        ),
        (
            "snapshots",
            "rm",
            "no-such-snapshot",
        ): f"bottle-tui: error: no snapshot 'no-such-snapshot' in {home / 'snapshots'}",
        ("start", "tester", "--from", "no-such-snapshot", "--yes"): (
            f"bottle-tui: error: no snapshot 'no-such-snapshot' in {home / 'snapshots'}"
        ),
    }
    for argv, want in cases.items():
        out = cli(home, *argv, check=False)
        assert out.returncode == 1, argv
        assert last_line(out).startswith(want), (argv, out.stderr)
        assert "Traceback" not in out.stderr
