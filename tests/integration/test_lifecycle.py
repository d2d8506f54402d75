"""Bottle lifecycle on the real engine: dry runs, stop, cleanup, and bottles outliving the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bottle_tui.backends.docker import labels
from bottle_tui.ops import claude_argv
from tests.support.bottles import SECRET, Bottle, cli, labelled, sh, start_bottle, write_home

pytestmark = pytest.mark.integration


def slug_label(slug: str) -> str:
    return f"{labels.SLUG}={slug}"


def home_label(home: Path) -> str:
    """Only this test's home: other workers (make test runs modules side by side) start bottles too."""
    return f"{labels.HOME}={home}"


def test_dry_run_touches_nothing(fresh_home: Path) -> None:
    out = cli(fresh_home, "start", "tester", "--dry-run")
    assert "agent      tester" in out.stdout and "allowed.fake.test" in out.stdout
    assert "BOTTLE_TEST_TOKEN" in out.stdout and SECRET not in out.stdout + out.stderr
    assert not (fresh_home / "state").exists()
    assert labelled("ps", home_label(fresh_home)) == [] and labelled("network", home_label(fresh_home)) == []


def test_start_without_a_terminal_needs_yes_and_starts_nothing(fresh_home: Path) -> None:
    r = cli(fresh_home, "start", "tester", check=False)
    assert r.returncode == 1 and "needs a yes: pass --yes" in r.stderr.strip().splitlines()[-1]
    assert labelled("ps", home_label(fresh_home)) == []
    assert not (fresh_home / "state").exists()


def test_start_without_a_terminal_leaves_the_bottle_up_attach_refuses_and_stop_leaves_nothing(fresh_home: Path) -> None:
    """One bottle for the whole path a user takes without a terminal: start (no --detach), attach
    (one line: it needs a terminal), a blocked request, then stop, which leaves nothing behind."""
    started = cli(fresh_home, "start", "tester", "--yes")  # no --detach, but no terminal either
    slug = started.stdout.strip().splitlines()[-1]
    b = Bottle(slug, fresh_home)
    try:
        assert "not a terminal" in started.stderr
        r = cli(fresh_home, "attach", slug, check=False)
        assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
        assert "needs a terminal" in r.stderr and f"bottle-tui attach {slug}" in r.stderr
        assert len(labelled("ps", slug_label(b.slug))) == 2
        assert len(labelled("network", slug_label(b.slug))) == 2
        b.exec("sh", "-c", "curl -s -o /dev/null http://blocked.fake.test/ || true")
        out = cli(fresh_home, "stop", b.slug)
    finally:
        cli(fresh_home, "stop", slug, check=False)
    assert labelled("ps", slug_label(b.slug)) == []
    assert labelled("network", slug_label(b.slug)) == []
    assert not b.state.exists()
    archive = fresh_home / "archive" / b.slug
    assert str(archive) in out.stderr
    assert json.loads((archive / "metadata.json").read_text())["slug"] == b.slug
    assert "blocked.fake.test" in (archive / "egress" / "requests.jsonl").read_text()
    assert "sidecars" in (archive / "compose.log").read_text() and "stopped" in (archive / "teardown.log").read_text()
    assert not list(archive.rglob("*ca*.pem")), "the egress CA key must not outlive the bottle"


def test_stop_with_failing_compose_logs_leaves_no_container_and_an_archive(fresh_home: Path, tmp_path: Path) -> None:
    b = start_bottle(fresh_home)
    # A docker CLI whose `compose logs` fails, in front of the real one (fault injection at the
    # process boundary; everything else reaches the real engine).
    shim = tmp_path / "shim-bin"
    shim.mkdir()
    real = sh("sh", "-c", "command -v docker").stdout.strip()
    (shim / "docker").write_text(f"""#!/bin/sh
case " $* " in *" compose "*" logs "*) echo "simulated: compose logs timed out" >&2; exit 1 ;; esac
exec {real} "$@"
""")
    (shim / "docker").chmod(0o755)
    r = cli(fresh_home, "stop", b.slug, env={"PATH": f"{shim}:{os.environ['PATH']}"})
    assert "warning: saving compose logs failed" in r.stderr and "simulated: compose logs timed out" in r.stderr
    assert labelled("ps", slug_label(b.slug)) == [] and labelled("network", slug_label(b.slug)) == []
    archive = fresh_home / "archive" / b.slug
    assert (archive / "metadata.json").exists() and "saving compose logs failed" in (
        archive / "teardown.log"
    ).read_text()
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
    # --keep keeps the work volume too (for resume); this test removes it.
    volume = f"bottle-tui-work-{b.slug}"
    assert sh("docker", "volume", "rm", volume, check=False).returncode == 0, f"{volume} was not kept"


def test_bottle_outlives_the_cli_and_another_process_stops_it(fresh_home: Path) -> None:
    b = start_bottle(fresh_home)
    holder = subprocess.Popen(
        [sys.executable, "-m", "bottle_tui", "--home", str(fresh_home), "exec", b.slug, "--", "sleep", "600"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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


def test_exec_returns_the_command_status(bottle: Bottle) -> None:
    """Exec changes nothing a later test of this module looks at: it uses the shared bottle."""
    b, home = bottle, bottle.home
    assert cli(home, "exec", b.slug, "--", "sh", "-c", "exit 7", check=False).returncode == 7
    out = cli(home, "exec", b.slug, "--", "id", "-un")
    assert out.stdout.strip() == "agent"
    # attach continues the last conversation only when there is one to continue: decided in
    # the agent as it starts. A stand-in claude first on PATH prints what it was given.
    b.exec(
        "sh",
        "-c",
        'mkdir -p ~/fake-bin && printf \'#!/bin/sh\\nprintf "<%%s>" "$@"\\n\' > ~/fake-bin/claude && chmod +x ~/fake-bin/claude',
        check=True,
    )

    def attach_runs(fresh: bool) -> str:
        return b.exec(
            "env",
            "PATH=/home/agent/fake-bin:/usr/bin:/bin",
            *claude_argv(home, b.slug, fresh=fresh),
            check=True,
        ).stdout

    first = attach_runs(fresh=False)
    assert "<--continue>" not in first and first.startswith("<--append-system-prompt>")
    b.exec("sh", "-c", "mkdir -p ~/.claude/projects/w && echo '{}' > ~/.claude/projects/w/s.jsonl", check=True)
    assert attach_runs(fresh=False) == "<--continue>" + first
    assert attach_runs(fresh=True) == first


def test_unknown_slug_is_a_one_line_error(fresh_home: Path) -> None:
    r = cli(fresh_home, "stop", "nope-000000", check=False)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "nope-000000" in r.stderr and "Traceback" not in r.stderr


def test_cleanup_acts_on_its_own_home_only(fresh_home: Path, tmp_path: Path) -> None:
    b = start_bottle(fresh_home)
    other_home = write_home(tmp_path / "another-home")
    other = start_bottle(other_home)
    try:
        orphan = fresh_home / "state" / "ghost-abc123"
        orphan.mkdir(parents=True)
        kept = fresh_home / "state" / "kept-abc123"
        kept.mkdir()
        (kept / ".preserve").touch()
        net = "bottle-tui-test-stray-" + b.slug
        net_id = sh(
            "docker",
            "network",
            "create",
            "--label",
            f"{labels.MANAGED}=true",
            "--label",
            f"{labels.HOME}={fresh_home}",
            "--label",
            "dev.bottle-tui.test=true",
            net,
        ).stdout.strip()
        dry = cli(fresh_home, "cleanup", "--dry-run")
        assert b.project in dry.stdout and str(orphan) in dry.stdout and f"network {net_id[:12]}" in dry.stdout
        assert str(kept) not in dry.stdout and other.project not in dry.stdout
        assert len(labelled("ps", slug_label(b.slug))) == 2 and orphan.exists()
        cli(fresh_home, "cleanup", "--yes")
        assert labelled("ps", slug_label(b.slug)) == []
        assert labelled("network", slug_label(b.slug)) == []
        assert sh("docker", "network", "inspect", net, check=False).returncode != 0
        assert not orphan.exists() and not b.state.exists()
        assert (fresh_home / "archive" / b.slug / "metadata.json").exists()
        assert kept.exists()
        # The other home's bottle is untouched until cleanup is widened to it.
        assert len(labelled("ps", slug_label(other.slug))) == 2 and other.state.exists()
        wide = cli(fresh_home, "cleanup", "--dry-run", "--all-homes")
        assert other.project in wide.stdout
        cli(fresh_home, "cleanup", "--yes", "--homes-under", str(tmp_path))
        assert labelled("ps", slug_label(other.slug)) == []
        assert (other_home / "archive" / other.slug / "metadata.json").exists()
    finally:
        cli(other_home, "stop", other.slug, check=False)
