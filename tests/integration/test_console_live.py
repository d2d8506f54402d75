"""The console against the real engine, and claude reached through a real tmux pane."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import libtmux
import pytest

from bottle_tui.config import NotifySettings, Webhook
from bottle_tui.console.app import BottleConsole
from tests.support.bottles import cli, sh, start_bottle, wait_in_pane
from tests.support.waiting import wait_for
from tests.support.webhooks import Receiver

pytestmark = pytest.mark.integration


async def eventually(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_console_follows_bottles_through_docker_events(fresh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows follow `docker events`; and a container that dies is a notification (to a webhook
    receiver on loopback), while a bottle being stopped is not."""
    b = start_bottle(fresh_home)
    receiver = Receiver().start()
    monkeypatch.setenv("BOTTLE_TEST_HOOK", receiver.url)
    notify = NotifySettings(webhooks=(Webhook("BOTTLE_TEST_HOOK"),), coalesce_seconds=0.1, max_per_minute=600.0)
    # The poll is pushed out of reach: only `docker events` can make the row go away in time.
    app = BottleConsole(fresh_home, poll_seconds=3600, notify=notify)
    try:
        async with app.run_test(size=(140, 30)) as pilot:
            table = app.query_one("#bottles")
            await eventually(lambda: b.slug in {k.value for k in table.rows}, "the bottle to be listed")
            row = [str(c) for c in table.get_row(b.slug)]
            assert row[1:3] == ["tester", "docker"] and row[4] == "up"
            assert "engine " in str(app.query_one("#engine").render())
            await eventually(lambda: app.notifications.active, "the console to be the home's notifier")
            agent = sh(
                "docker",
                "ps",
                "-q",
                "--filter",
                f"label=com.docker.compose.project=claude-bottle-{b.slug}",
                "--filter",
                "label=com.docker.compose.service=agent",
            ).stdout.strip()
            await asyncio.to_thread(sh, "docker", "kill", agent)
            await eventually(lambda: receiver.received, "the notification that the agent died")
            doc = receiver.received[0].json()
            assert [(e["kind"], e["bottle"], e["text"]) for e in doc["events"]] == [
                ("died", b.slug, "the agent stopped running (exited)")
            ]
            await asyncio.to_thread(cli, fresh_home, "stop", b.slug)
            await eventually(
                lambda: b.slug not in {k.value for k in table.rows}, "the stopped bottle to leave the table"
            )
            await pilot.pause(0.5)
            assert len(receiver.received) == 1  # the bundle going down with the stop is no news
            await pilot.press("q")
    finally:
        receiver.stop()
        cli(fresh_home, "stop", b.slug, check=False)


def test_start_opens_claude_in_the_bottle_and_attach_reopens_it(fresh_home: Path, tmux_server: libtmux.Server) -> None:
    base = f"{sys.executable} -m bottle_tui --home {fresh_home}"
    session = tmux_server.new_session(
        session_name="t", window_command=f"{base} start tester --yes; sleep 600", x=140, y=40
    )
    pane = session.active_window.active_pane
    wait_in_pane(pane, "Claude Code")
    # claude took the screen over; find the bottle the way another process would.
    mine = [b for b in json.loads(cli(fresh_home, "ls", "--json").stdout) if b["home"] == str(fresh_home)]
    assert len(mine) == 1, mine
    slug = mine[0]["slug"]
    try:
        # claude runs inside the agent container, and its traffic went out through egress only.
        log = fresh_home / "state" / slug / "egress" / "requests.jsonl"
        wait_for(
            lambda: log.exists() and log.read_text(),
            timeout=30,
            what="claude's requests in the egress log",
            interval=0.2,
        )
        hosts = {json.loads(line)["host"] for line in log.read_text().splitlines()}
        assert hosts, "claude sent nothing through egress"
        # Attach from a second window: claude opens again in the same bottle, and its requests
        # (blocked: the sandbox bottle has no route to Anthropic) add to the same egress log.
        seen = len(log.read_text().splitlines())
        window = session.new_window(window_name="attach", window_shell=f"{base} attach {slug}; sleep 600")
        wait_in_pane(window.active_pane, "Claude Code")
        wait_for(
            lambda: len(log.read_text().splitlines()) > seen,
            timeout=30,
            what="attach's requests in the egress log",
            interval=0.2,
        )
        assert all(json.loads(line)["decision"] == "block" for line in log.read_text().splitlines())
    finally:
        cli(fresh_home, "stop", slug, check=False)
