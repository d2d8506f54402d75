"""Bottle lifecycle on the real engine: dry runs, stop, cleanup, and bottles outliving the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bottle_tui.backends.docker import labels
from bottle_tui.cli import claude_argv_for as claude_argv

from .support import SECRET, cli, labelled, sh, start_bottle

pytestmark = pytest.mark.integration


def slug_label(slug: str) -> str:
    return f"{labels.SLUG}={slug}"


def test_dry_run_touches_nothing(fresh_home: Path) -> None:
    before = labelled("ps", f"{labels.MANAGED}=true"), labelled("network", f"{labels.MANAGED}=true")
    out = cli(fresh_home, "start", "tester", "--dry-run")
    assert "agent      tester" in out.stdout and "allowed.fake.test" in out.stdout
    assert "BOTTLE_TEST_TOKEN" in out.stdout and SECRET not in out.stdout + out.stderr
    assert not (fresh_home / "state").exists()
    after = labelled("ps", f"{labels.MANAGED}=true"), labelled("network", f"{labels.MANAGED}=true")
    assert before == after


def test_start_without_a_terminal_needs_yes_and_starts_nothing(fresh_home: Path) -> None:
    before = labelled("ps", f"{labels.MANAGED}=true")
    r = cli(fresh_home, "start", "tester", check=False)
    assert r.returncode == 1 and "needs a yes: pass --yes" in r.stderr.strip().splitlines()[-1]
    assert labelled("ps", f"{labels.MANAGED}=true") == before
    assert not (fresh_home / "state").exists()


def test_stop_leaves_nothing_behind(fresh_home: Path) -> None:
    b = start_bottle(fresh_home)
    assert len(labelled("ps", slug_label(b.slug))) == 2
    assert len(labelled("network", slug_label(b.slug))) == 2
    cli(fresh_home, "stop", b.slug)
    assert labelled("ps", slug_label(b.slug)) == []
    assert labelled("network", slug_label(b.slug)) == []
    assert not b.state.exists()


def test_stop_keep_preserves_logs_and_transcript(fresh_home: Path) -> None:
    b = start_bottle(fresh_home)
    b.exec("sh", "-c", "mkdir -p ~/.claude/projects/p && echo '{}' > ~/.claude/projects/p/s.jsonl", check=True)
    cli(fresh_home, "stop", b.slug, "--keep")
    assert labelled("ps", slug_label(b.slug)) == []
    assert (b.state / ".preserve").exists()
    assert "sidecars" in (b.state / "compose.log").read_text()
    assert (b.state / "transcript" / "p" / "s.jsonl").exists()
    assert "stopped" in (b.state / "teardown.log").read_text()


def test_bottle_outlives_the_cli_and_another_process_stops_it(fresh_home: Path) -> None:
    b = start_bottle(fresh_home)
    holder = subprocess.Popen([sys.executable, "-m", "bottle_tui", "--home", str(fresh_home), "exec", b.slug, "--", "sleep", "600"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "sleep 600" not in b.exec("ps", "-eo", "args").stdout:
        time.sleep(0.1)
    assert holder.poll() is None, "the CLI holding the bottle exited by itself"
    assert "sleep 600" in b.exec("ps", "-eo", "args").stdout
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(10)
    listed = json.loads(cli(fresh_home, "ls", "--json").stdout)
    mine = [x for x in listed if x["slug"] == b.slug]
    assert mine and mine[0]["services_up"] == 2 and mine[0]["agent"] == "tester" and mine[0]["bottle"] == "sandbox"
    # A process with another home stops it; the state folder it finds by the bottle's labels.
    other_home = fresh_home.parent / "other-home"
    cli(other_home, "stop", b.slug)
    assert labelled("ps", slug_label(b.slug)) == []
    assert not b.state.exists()


def test_exec_returns_the_command_status(fresh_home: Path) -> None:
    b = start_bottle(fresh_home)
    try:
        assert cli(fresh_home, "exec", b.slug, "--", "sh", "-c", "exit 7", check=False).returncode == 7
        out = cli(fresh_home, "exec", b.slug, "--", "id", "-un")
        assert out.stdout.strip() == "agent"
        # attach continues the last conversation only when there is one to continue
        first = asyncio.run(claude_argv(fresh_home, b.slug, fresh=False))
        assert first[0] == "claude" and "--continue" not in first and "--append-system-prompt" in first
        b.exec("sh", "-c", "mkdir -p ~/.claude/projects/w && echo '{}' > ~/.claude/projects/w/s.jsonl", check=True)
        assert "--continue" in asyncio.run(claude_argv(fresh_home, b.slug, fresh=False))
        assert "--continue" not in asyncio.run(claude_argv(fresh_home, b.slug, fresh=True))
    finally:
        cli(fresh_home, "stop", b.slug, check=False)


def test_unknown_slug_is_a_one_line_error(fresh_home: Path) -> None:
    r = cli(fresh_home, "stop", "nope-000000", check=False)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "nope-000000" in r.stderr and "Traceback" not in r.stderr


def test_cleanup_removes_everything_but_preserved(fresh_home: Path) -> None:
    b = start_bottle(fresh_home)
    orphan = fresh_home / "state" / "ghost-abc123"
    orphan.mkdir(parents=True)
    kept = fresh_home / "state" / "kept-abc123"
    kept.mkdir()
    (kept / ".preserve").touch()
    net = "bottle-tui-test-stray"
    sh("docker", "network", "create", "--label", f"{labels.MANAGED}=true", "--label", "dev.bottle-tui.test=true", net)
    dry = cli(fresh_home, "cleanup", "--dry-run")
    assert b.project in dry.stdout and str(orphan) in dry.stdout and str(kept) not in dry.stdout
    assert len(labelled("ps", slug_label(b.slug))) == 2 and orphan.exists()
    cli(fresh_home, "cleanup", "--yes")
    assert labelled("ps", slug_label(b.slug)) == []
    assert labelled("network", slug_label(b.slug)) == []
    assert sh("docker", "network", "inspect", net, check=False).returncode != 0
    assert not orphan.exists() and not b.state.exists()
    assert kept.exists()


def test_attach_without_a_terminal_is_one_line_and_start_leaves_the_bottle_up(fresh_home: Path) -> None:
    started = cli(fresh_home, "start", "tester", "--yes")  # no --detach, but no terminal either
    slug = started.stdout.strip().splitlines()[-1]
    try:
        assert "not a terminal" in started.stderr
        r = cli(fresh_home, "attach", slug, check=False)
        assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
        assert "needs a terminal" in r.stderr and f"bottle-tui attach {slug}" in r.stderr
    finally:
        cli(fresh_home, "stop", slug)
    assert labelled("ps", slug_label(slug)) == []
