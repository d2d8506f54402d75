"""The console's alerts going out (console/notifications.py): driven by Pilot on a fake engine and
real state files, sent for real to a webhook receiver on loopback and to a command."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import pytest

from bottle_contract.files import atomic_write
from bottle_tui.cli import main
from bottle_tui.config import NotifySettings, Webhook
from bottle_tui.console.notifications import ConsoleNotifications, take_lock
from bottle_tui.state import notify_lock_path, state_dir
from tests.support.console import FakeEngine, cli_process, make_app, make_state, until, write_proposal, write_status
from tests.support.webhooks import Receiver

SLUG = "implementer-aaaaaa"
OTHER = "reviewer-bbbbbb"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch):
    r = Receiver().start()
    monkeypatch.setenv("BOTTLE_TEST_HOOK", r.url)
    yield r
    r.stop()


def hook_settings(**kw) -> NotifySettings:
    kw = {"coalesce_seconds": 0.05, "max_per_minute": 6000.0, **kw}
    return NotifySettings(webhooks=(Webhook("BOTTLE_TEST_HOOK", "json"),), **kw)


def write_budget(home: Path, slug: str, budget: dict | None) -> None:
    s = make_state(home, slug)
    doc = {"schema": 1, "updated": 0, "models": {}, "totals": {}, "budget": budget}  # the shape egress writes
    atomic_write(s.usage, json.dumps(doc), mode=0o644)


def budget(level: str, spent: float) -> dict:
    return {"usd": 5.0, "tokens": None, "level": level, "spent_usd": spent, "spent_tokens": 1000}


async def received(pilot, receiver: Receiver, count: int) -> list[dict]:
    await until(pilot, lambda: len(receiver.received) >= count, f"{count} webhook message(s)", timeout=10)
    await pilot.pause(0.2)  # nothing more arrives
    return [r.json() for r in receiver.received]


async def test_each_alert_goes_to_the_webhook(home: Path, fake: FakeEngine, receiver: Receiver) -> None:
    write_proposal(home, SLUG, host="queued.example.org")  # queued before startup: no message
    write_budget(home, OTHER, budget("warn", 4.2))  # at 80% already at startup: no message
    write_status(home, SLUG, "working")
    app = make_app(home, fake, watch_files=True, notify=hook_settings())
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: app.notifications.active and app.proposals_pane.loaded, "the notifier")
        await until(pilot, lambda: app.notifications.budgets.get(OTHER) == "warn", "the budgets' baseline")
        await pilot.pause(0.3)
        assert receiver.received == []

        await asyncio.to_thread(write_proposal, home, SLUG, host="new.example.org", reason="\x1b[2J<!channel>")
        got = await received(pilot, receiver, 1)
        assert got[0]["events"][0]["kind"] == "proposal" and got[0]["events"][0]["bottle"] == SLUG
        assert "new.example.org" in got[0]["text"] and "queued.example.org" not in got[0]["text"]

        await asyncio.to_thread(write_status, home, SLUG, "waiting", "2026-11-27T07:59:50+00:00")
        got = await received(pilot, receiver, 2)
        assert got[1]["title"] == "bottle-tui: Waiting for input" and got[1]["text"] == f"{SLUG}: waiting for input"

        # usage.json (egress's metering) moves: once per level change, not per write.
        await asyncio.to_thread(write_budget, home, SLUG, budget("ok", 1.0))
        await asyncio.to_thread(write_budget, home, SLUG, budget("warn", 4.0))
        got = await received(pilot, receiver, 3)
        assert got[2]["events"][0] | {"at": ""} == {
            "kind": "budget",
            "bottle": SLUG,
            "text": "budget at 80%: spent $4.00 of $5.00",
            "level": "warn",
            "at": "",
        }
        await asyncio.to_thread(write_budget, home, SLUG, budget("warn", 4.5))
        await pilot.pause(0.4)
        assert len(receiver.received) == 3
        await asyncio.to_thread(write_budget, home, OTHER, budget("reached", 5.01))
        got = await received(pilot, receiver, 4)
        assert got[3]["text"] == f"{OTHER}: budget reached: spent $5.01 of $5.00"

        # The agent container of one bottle exits; the other bottle is being stopped (its teardown began).
        teardown = state_dir(home, OTHER).teardown_log
        teardown.write_text("stopping claude-bottle-reviewer-bbbbbb\n")
        exited = {"agent": "exited", "sidecars": "running"}
        fake.bottles = [dataclasses.replace(b, services=exited) for b in fake.bottles]
        app.refresh_bottles()
        got = await received(pilot, receiver, 5)
        assert got[4]["events"] == [
            {
                "kind": "died",
                "bottle": SLUG,
                "text": "the agent stopped running (exited)",
                "at": got[4]["events"][0]["at"],
            }
        ]
        app.refresh_bottles()  # still exited: no news
        await pilot.pause(0.4)
        assert len(receiver.received) == 5


async def test_a_burst_of_drafts_is_one_message(home: Path, fake: FakeEngine, receiver: Receiver) -> None:
    make_state(home, SLUG).queue.mkdir(parents=True, exist_ok=True)
    # The shipped window (3 s): 50 drafts written through the library take about 1 s here.
    app = make_app(
        home, fake, watch_files=True, notify=hook_settings(coalesce_seconds=NotifySettings().coalesce_seconds)
    )
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: app.notifications.active and app.proposals_pane.loaded, "the notifier")
        await pilot.pause(0.3)

        def burst() -> None:
            # written aside, then renamed into the queue: a burst inside the window however loaded the machine
            staging = home.parent / "staging"
            for i in range(50):
                write_proposal(
                    staging,
                    SLUG,
                    host=f"h{i}.example.org",
                    draft=True,
                    created_at=f"2026-11-27T07:58:{i:02d}.000+00:00",
                )
            for made in sorted(staging.glob("state/*/supervise/queue/*.json")):
                os.rename(made, home / made.relative_to(staging))

        await asyncio.to_thread(burst)
        await until(pilot, lambda: len(app.proposals_pane.pending) == 50, "the 50 rows")
        await until(pilot, lambda: receiver.received, "the message", timeout=10)
        await pilot.pause(0.5)
    assert len(receiver.received) == 1
    doc = receiver.received[0].json()
    assert doc["count"] == 50 and doc["text"] == f"50 new proposals ({SLUG} x50)"


async def test_the_command_hears_of_a_new_proposal(home: Path, fake: FakeEngine, tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = f"import sys, pathlib; pathlib.Path({str(out)!r} + '.tmp').write_bytes(sys.stdin.buffer.read()); pathlib.Path({str(out)!r} + '.tmp').rename({str(out)!r})"
    settings = NotifySettings(command=(sys.executable, "-c", script), coalesce_seconds=0.05)
    make_state(home, SLUG)
    app = make_app(home, fake, watch_files=True, notify=settings)
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: app.notifications.active and app.proposals_pane.loaded, "the notifier")
        await pilot.pause(0.3)
        await asyncio.to_thread(write_proposal, home, SLUG, host="cmd.example.org")
        await until(pilot, out.exists, "the command's output", timeout=10)
    doc = json.loads(out.read_text())
    assert doc["count"] == 1 and doc["events"][0]["kind"] == "proposal"
    assert doc["text"] == f"{SLUG}: egress-route GET cmd.example.org:443 /simple/*"


async def test_one_notifier_per_home(home: Path, fake: FakeEngine, receiver: Receiver) -> None:
    """A second console on the same home stays quiet while the first sends, and takes over when it goes."""
    held = take_lock(notify_lock_path(home))
    assert held is not None
    assert take_lock(notify_lock_path(home)) is None  # another open of the lock is refused
    app = make_app(home, fake, watch_files=True, notify=hook_settings(), poll_seconds=0.2)
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: app.proposals_pane.loaded, "the first load")
        await pilot.pause(0.5)
        assert not app.notifications.active
        os.close(held)  # the other console quit
        await until(pilot, lambda: app.notifications.active, "taking over on a reconcile")


def test_no_settings_no_notifier(home: Path, fake: FakeEngine) -> None:
    app = make_app(home, fake)
    notes = ConsoleNotifications(app, NotifySettings())
    assert notes.claim() == [] and not notes.active
    assert not notify_lock_path(home).exists()


def write_config(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text(text)


def test_notify_test_sends_one_message_to_each_sink(
    home: Path, receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmd.json"
    script = f"import sys, pathlib; pathlib.Path({str(out)!r}).write_bytes(sys.stdin.buffer.read())"
    write_config(
        home,
        "notify:\n  webhooks: [{url_env: BOTTLE_TEST_HOOK, format: slack}]\n"
        f"  command: [{json.dumps(sys.executable)}, -c, {json.dumps(script)}]\n",
    )
    assert main(["--home", str(home), "notify", "--test"]) == 0
    assert "a test message went to every sink" in capsys.readouterr().err
    assert len(receiver.received) == 1 and receiver.received[0].json()["text"].startswith("bottle-tui: New proposal")
    assert json.loads(out.read_text())["events"][0]["bottle"] == "bottle-tui-test"


def test_notify_test_says_what_does_not_work(home: Path, receiver: Receiver, capsys) -> None:
    receiver.fail = 10
    write_config(home, "notify:\n  webhooks: [{url_env: BOTTLE_TEST_HOOK}, {url_env: BOTTLE_UNSET_HOOK}]\n")
    assert main(["--home", str(home), "notify", "--test"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "notify.webhooks[1]: $BOTTLE_UNSET_HOOK is not set: that webhook is off",
        "notify: webhook $BOTTLE_TEST_HOOK (json) failed (HTTP 500) after 1 try; further failures are not reported until it works again",
    ]
    write_config(home, "")
    assert main(["--home", str(home), "notify", "--test"]) == 1
    assert "config.yaml turns on no terminal, command or webhook" in capsys.readouterr().err
    assert main(["--home", str(home), "notify", "--watch"]) == 1
    assert "notify: turns on no terminal, command or webhook, so there is nothing to send" in capsys.readouterr().err
    write_config(home, "notify: {webhooks: [{url: 'https://hooks.example/x'}]}\n")
    assert main(["--home", str(home), "notify", "--watch"]) == 1
    err = capsys.readouterr().err
    assert "url: a webhook URL is a secret" in err and err.count("\n") == 1


def test_notify_watch_sends_while_no_console_is_open(home: Path, receiver: Receiver, tmp_path: Path) -> None:
    """The headless watch, for real in its own process: it sees a new proposal and sends it."""
    write_config(home, "notify:\n  webhooks: [{url_env: BOTTLE_TEST_HOOK}]\n  coalesce_seconds: 0.1\n")
    make_state(home, SLUG)
    with cli_process(home, "notify", "--watch"):
        lock = notify_lock_path(home)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (held := take_lock(lock)) is not None:
            os.close(held)  # not yet claimed by the watch
            time.sleep(0.1)
        assert take_lock(lock) is None, "the watch never became the home's notifier"
        time.sleep(0.5)  # its file watch is armed
        write_proposal(home, SLUG, host="watched.example.org")
        got = receiver.wait_for(1, timeout=20)
        assert got and "watched.example.org" in got[0].json()["text"]


async def test_a_sink_that_cannot_work_is_a_toast_once(home: Path, fake: FakeEngine, monkeypatch) -> None:
    monkeypatch.delenv("BOTTLE_UNSET_HOOK", raising=False)
    settings = NotifySettings(webhooks=(Webhook("BOTTLE_UNSET_HOOK"),), command=(sys.executable, "-c", "pass"))
    app = make_app(home, fake, notify=settings, poll_seconds=0.2)
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: app.notifications.active, "the notifier")
        await pilot.pause(0.6)  # a few reconciles: the notifier is not claimed (nor reported) again
        toasts = [n for n in app._notifications if n.title == "Notifications"]
        assert [t.message for t in toasts] == ["notify.webhooks[0]: $BOTTLE_UNSET_HOOK is not set: that webhook is off"]
