"""The console's right-hand pane end to end: the real console process in a real tmux (isolated
socket), a real bottle, and claude started in it by `docker exec` through the pane."""

from __future__ import annotations

import sys
from pathlib import Path

import libtmux
import pytest

from tests.support.bottles import cli, pane_text, sh, start_bottle, wait_in_pane
from tests.support.console_screen import SKIP_CLAUDE_FIRST_RUN, agent_rows, focus_agents, settle
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

# How long to wait for what the console and claude do next: they answer in a second or two on a
# quiet machine; other workers' bottles starting beside this test (make test) can slow that many
# times over. A wait returns as soon as its condition holds.
WAIT = 90


def claude_processes(agent: str) -> list[str]:
    """The claude processes running in the agent container (pid and command line)."""
    out = sh("docker", "exec", agent, "ps", "-eo", "pid=,args=").stdout
    return [line.strip() for line in out.splitlines() if line.split()[1:2] == ["claude"]]


def test_attach_puts_claude_in_the_right_pane_and_reattach_replaces_it(
    fresh_home: Path, tmux_server: libtmux.Server
) -> None:
    """Two bottles of this test (any other bottle on the engine is older, so listed above them, and
    never touched): claude in the right pane for the first, again for the first (the same pane, the
    old session ended), then x on the first: its teardown shows there and the second takes the pane;
    the console quits (the pane stays), a new one adopts the pane, and the second is stopped from
    the CLI: the pane is handed on as after x."""
    b1 = start_bottle(fresh_home)
    b2 = start_bottle(fresh_home)
    try:
        for b in (b1, b2):
            b.exec("python3", "-c", SKIP_CLAUDE_FIRST_RUN, check=True)
        session = tmux_server.new_session(
            session_name="console",
            x=300,
            y=50,
            # COLUMNS/LINES from the test process would override the pane's real size.
            window_command=f"env -u COLUMNS -u LINES {sys.executable} -m bottle_tui --home {fresh_home} console",
        )
        console = session.active_window.active_pane

        def screen() -> str:
            return pane_text(console)

        def press(key: str) -> None:
            console.send_keys(key, enter=False, literal=False)

        wait_in_pane(console, "right-hand pane")  # the footer hint of the split mode

        def adjacent() -> bool:  # b2 right below b1 (a bottle of another test may sort anywhere else)
            rows = agent_rows(screen())
            return b1.slug in rows and rows[rows.index(b1.slug) + 1 : rows.index(b1.slug) + 2] == [b2.slug]

        wait_for(adjacent, timeout=WAIT, what="both bottles listed", interval=0.2)
        for _ in range(agent_rows(screen()).index(b1.slug)):  # the cursor starts on the first row
            console.send_keys("j", enter=False)
        console.send_keys("Enter", enter=False, literal=False)
        wait_for(lambda: len(session.active_window.panes) == 2, timeout=WAIT, what="the right pane", interval=0.2)
        right = [p for p in session.active_window.panes if p.pane_id != console.pane_id][0]
        wait_in_pane(right, "Claude Code v")  # claude's own banner, drawn by claude in the bottle
        wait_in_pane(right, "❯")  # ... and its prompt: a live claude, waiting for the operator
        wait_in_pane(console, f"* {b1.slug}")
        wait_for(
            lambda: len(claude_processes(b1.agent)) == 1, timeout=WAIT, what="one claude in the bottle", interval=0.3
        )
        first = claude_processes(b1.agent)
        # Back to the console, Enter again: the same pane is respawned with a new claude, and the
        # session the pane left is ended in the bottle (a killed `docker exec` client leaves it).
        settle(screen, quiet=8.0)  # claude start-up drafts can come several seconds apart
        console.select()
        focus_agents(screen, press)
        console.send_keys("Enter", enter=False, literal=False)
        try:
            wait_for(
                lambda: (procs := claude_processes(b1.agent)) and procs != first and len(procs) == 1,
                timeout=WAIT,
                what="the first claude replaced by a second",
                interval=0.3,
            )
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: {claude_processes(b1.agent)} (was {first}); the console shows:\n{pane_text(console)}"
                f"\nthe right pane shows:\n{pane_text(right)}"
            ) from None
        assert [p.pane_id for p in session.active_window.panes] == [console.pane_id, right.pane_id]
        wait_in_pane(right, "Claude Code v")
        assert claude_processes(b2.agent) == []
        # x stops b1 from the console: its teardown.log shows in the pane, then b2 (filling b1's
        # row) takes the pane with its own claude.
        settle(screen)
        console.select()
        focus_agents(screen, press)
        console.send_keys("x", enter=False)
        wait_in_pane(console, f"Stop {b1.slug}?")
        console.send_keys("y", enter=False)
        wait_in_pane(right, f"stopping {b1.slug}")
        wait_in_pane(right, f"stopping claude-bottle-{b1.slug}")  # teardown.log's first line
        wait_for(lambda: len(claude_processes(b2.agent)) == 1, timeout=90, what="b2's claude in the pane", interval=0.3)
        wait_in_pane(right, "Claude Code v")
        wait_in_pane(console, f"* {b2.slug}")
        assert not b1.state.exists() and (fresh_home / "archive" / b1.slug / "teardown.log").exists()
        assert [p.pane_id for p in session.active_window.panes] == [console.pane_id, right.pane_id]
        settle(screen)  # b2's claude has just started: its drafts are on their way
        console.select()
        console.send_keys("q", enter=False)  # the console quits; bottles and the pane stay

        def panes() -> dict[str, str]:
            out = tmux_server.cmd(
                "list-panes",
                "-a",
                "-F",
                "#{pane_id} dead=#{pane_dead},status=#{pane_dead_status},#{pane_current_command}",
            ).stdout
            return dict(line.split(" ", 1) for line in out)

        try:
            wait_for(
                lambda: console.pane_id not in panes(), timeout=WAIT, what="the console's pane to close", interval=0.2
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}: panes {panes()}; the console shows:\n{pane_text(console)}") from None
        assert list(panes()) == [right.pane_id], panes()
        assert len(claude_processes(b2.agent)) == 1
        # A console started again beside the pane adopts it; b2 stopped from outside (the CLI)
        # does not leave the pane dead on b2's last screen: the console sees b2 go and hands the
        # pane on as after x (closed here, or the next agent's claude if other bottles run).
        cmd = f"env -u COLUMNS -u LINES {sys.executable} -m bottle_tui --home {fresh_home} console"
        again = tmux_server.cmd("split-window", "-h", "-d", "-t", right.pane_id, "-P", "-F", "#{pane_id}", cmd).stdout[
            0
        ]
        console = next(p for p in session.active_window.panes if p.pane_id == again)
        wait_in_pane(console, f"* {b2.slug}")  # adopted: the pane's agent is marked
        cli(fresh_home, "stop", b2.slug)

        def right_slug() -> str | None:
            out = tmux_server.cmd("display-message", "-p", "-t", right.pane_id, "#{@bottle-tui-slug}")
            return out.stdout[0] if out.stdout and not out.stderr else None

        wait_for(
            lambda: right.pane_id not in panes() or right_slug() not in (None, b2.slug),
            timeout=60,
            what="the pane handed on from the stopped bottle",
            interval=0.3,
        )
    finally:
        cli(fresh_home, "stop", b1.slug, check=False)
        cli(fresh_home, "stop", b2.slug, check=False)
