"""The console's flows against the real engine: start and stop a bottle from the keyboard, agent
status from a real claude's hooks, and the console under a real tmux approving a real proposal."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import libtmux
import pytest

from bottle_tui import proposals
from bottle_tui.console.app import BottleConsole
from bottle_tui.console.screens import ConfirmScreen, LogScreen, PickerScreen
from bottle_tui.state import state_dir
from tests.support.bottles import cli, pane_text, sh, start_bottle
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
FAKE_API = Path(__file__).with_name("fake_messages_api.py")


async def eventually(pilot, predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def cells(app: BottleConsole, slug: str) -> list[str]:
    return [str(c) for c in app.query_one("#bottles").get_row(slug)]


def our_rows(app: BottleConsole) -> set[str]:
    return {k.value for k in app.query_one("#bottles").rows}


async def test_start_from_the_picker_and_stop_with_a_confirm(fresh_home: Path) -> None:
    app = BottleConsole(fresh_home, poll_seconds=3600)
    slug = None
    try:
        async with app.run_test(size=(150, 45)) as pilot:
            await eventually(pilot, lambda: app.versions is not None, "the engine line")
            before = our_rows(app)
            await pilot.press("n")
            await eventually(pilot, lambda: isinstance(app.screen, PickerScreen), "the picker")
            await pilot.press(*"test", "enter")
            await eventually(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the preflight")
            assert "agent      tester" in str(app.screen.query_one(".section").render())
            await pilot.press("y")
            await eventually(pilot, lambda: isinstance(app.screen, LogScreen), "the bring-up log")
            log = app.screen.query_one("Log")
            await eventually(pilot, lambda: len(our_rows(app) - before) == 1, "the new bottle's row", timeout=180)
            slug = (our_rows(app) - before).pop()
            await eventually(
                pilot, lambda: any(n.title == "Started" for n in app._notifications), "the bottle to be up", timeout=180
            )
            shown = "\n".join(log.lines)
            assert f"starting claude-bottle-{slug}" in shown and f"bottle {slug} is up" in shown
            assert "renders written; docker compose up" in shown and "ready" in shown  # bringup.log, streamed
            await pilot.press("escape")
            await eventually(pilot, lambda: len(app.screen_stack) == 1, "the log to close")
            assert cells(app, slug)[1:5] == ["tester", "docker", cells(app, slug)[3], "up"]
            # Select our bottle (others on this engine are other people's) and stop it.
            table = app.query_one("#bottles")
            table.focus()
            table.move_cursor(row=table.get_row_index(slug))
            await pilot.press("x")
            await eventually(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the stop confirm")
            await pilot.press("y")
            await eventually(
                pilot, lambda: slug not in our_rows(app), "the stopped bottle to leave the table", timeout=120
            )
            await eventually(
                pilot, lambda: any(n.title == "Stopped" for n in app._notifications), "the stop to finish", timeout=120
            )
            assert (fresh_home / "archive" / slug / "bringup.log").is_file()
            await pilot.press("q")
    finally:
        if slug:
            cli(fresh_home, "stop", slug, check=False)


async def test_agent_status_comes_from_a_real_claudes_hooks(fresh_home: Path) -> None:
    b = start_bottle(fresh_home)
    container = f"claude-bottle-{b.slug}-agent"
    try:
        # No model is reachable from here: a FAKE Messages API on the agent's loopback answers claude.
        subprocess.run(
            ["docker", "exec", "-i", container, "sh", "-c", "cat > /tmp/fake_api.py"],
            input=FAKE_API.read_text(),
            text=True,
            check=True,
            capture_output=True,
            timeout=60,
        )
        sh("docker", "exec", "-d", container, "python3", "/tmp/fake_api.py", "18080")
        app = BottleConsole(fresh_home, poll_seconds=3600)
        async with app.run_test(size=(150, 30)) as pilot:
            await eventually(pilot, lambda: b.slug in our_rows(app), "the bottle's row")
            assert cells(app, b.slug)[6] == "agent running"  # no hook has fired yet
            env = ["-e", "ANTHROPIC_BASE_URL=http://127.0.0.1:18080", "-e", "ANTHROPIC_API_KEY=sk-fake-for-tests"]
            result = await asyncio.to_thread(sh, "docker", "exec", *env, container, "claude", "-p", "ping", timeout=120)
            assert "pong" in result.stdout
            await eventually(
                pilot, lambda: cells(app, b.slug)[6].startswith("ended "), "SessionEnd in the status column", timeout=10
            )
            status = (state_dir(fresh_home, b.slug).status / "status.json").read_text()
            assert '"event": "SessionEnd"' in status
            await pilot.press("q")
    finally:
        cli(fresh_home, "stop", b.slug, check=False)


def wait_screen(pane: libtmux.Pane, predicate, what: str, timeout: float = 30.0) -> str:
    try:
        wait_for(lambda: predicate(pane_text(pane)), timeout=timeout, what=what, interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the screen:\n{pane_text(pane)}") from None
    return pane_text(pane)


def test_console_under_tmux_approves_a_real_proposal(fresh_home: Path, tmux_server: libtmux.Server) -> None:
    b = start_bottle(fresh_home)
    container = f"claude-bottle-{b.slug}-agent"
    try:
        # COLUMNS/LINES from the test process would override the pane's real size.
        command = f"env -u COLUMNS -u LINES {shlex.quote(sys.executable)} -m bottle_tui --home {shlex.quote(str(fresh_home))} console"
        # Other engineers' bottles on this engine are listed too: a tall window keeps ours on screen.
        tmux_server.cmd(
            "new-session", "-d", "-s", "console", "-x", "160", "-y", "60", "-e", "TERM=xterm-256color", command
        )
        pane = tmux_server.sessions.get(session_name="console").active_window.active_pane
        wait_screen(pane, lambda s: b.slug in s, "the agent row")
        # The agent asks for a host egress blocks: supervise turns the block into a draft proposal.
        blocked = sh(
            "docker",
            "exec",
            container,
            "curl",
            "-s",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "https://blocked.fake.test/simple/",
            check=False,
        )
        assert blocked.stdout == "403"
        screen = wait_screen(
            pane, lambda s: "blocked.fake.test" in s and "New proposal" in s, "the new proposal and its alert"
        )
        Path(os.environ.get("BOTTLE_CONSOLE_CAPTURE", "/dev/null")).write_text(screen + "\n")
        assert "1 pending proposal" in screen and "draft x1" in screen
        pane.send_keys("a", enter=False)
        wait_screen(pane, lambda s: "o once · a always" in s, "the once/always question")
        pane.send_keys("a", enter=False)
        screen = wait_screen(pane, lambda s: "0 pending proposals" in s, "the decision")
        (p,) = proposals.list_all(fresh_home, include_decided=True)
        assert p.status == "approved" and p.data["decision"]["scope"] == "always"
        _, doc = proposals.read_policy(state_dir(fresh_home, b.slug))
        assert any(r["host"] == "blocked.fake.test" and r["paths"] == ["/simple/"] for r in doc["routes"])
        # The agent's next request passes egress's policy now (the fake internet is not connected,
        # so it fails upstream instead of being refused with egress's 403).
        after = sh(
            "docker",
            "exec",
            container,
            "curl",
            "-s",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "https://blocked.fake.test/simple/",
            check=False,
        )
        assert after.stdout != "403"
        # q quits and leaves the bottle running.
        pane.send_keys("q", enter=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and tmux_server.has_session("console"):
            time.sleep(0.1)
        assert not tmux_server.has_session("console"), "q did not quit the console"
        running = sh("docker", "inspect", "--format", "{{.State.Running}}", container).stdout.strip()
        assert running == "true"
    finally:
        cli(fresh_home, "stop", b.slug, check=False)


def test_enter_on_an_agent_hands_the_terminal_to_claude_and_comes_back(
    fresh_home: Path, tmux_server: libtmux.Server
) -> None:
    """Outside tmux (the terminal here is a tmux pane, but the console is not told so: $TMUX is
    unset), Enter suspends the console and claude gets the terminal until it exits."""
    b = start_bottle(fresh_home)
    try:
        command = f"env -u TMUX -u TMUX_PANE -u COLUMNS -u LINES {shlex.quote(sys.executable)} -m bottle_tui --home {shlex.quote(str(fresh_home))} console"
        tmux_server.cmd(
            "new-session", "-d", "-s", "console", "-x", "160", "-y", "60", "-e", "TERM=xterm-256color", command
        )
        pane = tmux_server.sessions.get(session_name="console").active_window.active_pane
        screen = wait_screen(pane, lambda s: b.slug in s, "the agent row")
        # The agents pane has the focus and its cursor on the first row; other people's bottles
        # on this engine may be listed before ours.
        slugs = [line.split()[1] for line in screen.splitlines() if line.startswith("│ ") and " docker " in line]
        pane.send_keys("j" * slugs.index(b.slug), enter=False, literal=True)
        time.sleep(0.3)
        pane.send_keys("Enter", enter=False)
        wait_screen(
            pane, lambda s: "Claude Code" in s and "Proposals" not in s, "claude in the console's terminal", timeout=60
        )
        for _ in range(2):  # claude exits on a second ctrl+c
            pane.send_keys("C-c", enter=False)
            time.sleep(0.5)
        wait_screen(pane, lambda s: "Proposals" in s and b.slug in s, "the console back after claude exits", timeout=30)
        assert len(pane.window.panes) == 1 and "opens claude here" in pane_text(pane)
        pane.send_keys("q", enter=False)
    finally:
        cli(fresh_home, "stop", b.slug, check=False)
