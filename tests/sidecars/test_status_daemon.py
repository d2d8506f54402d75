"""The status daemon (sidecars/status/server.py) and the agent's hook script, for real on loopback:
the script with real curl, the daemon's real HTTP server, the file the console reads."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bottle_tui.console.rows import read_status

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "agent" / "claude" / "report-status"


def status_module():
    spec = importlib.util.spec_from_file_location("bottle_status_server", ROOT / "sidecars" / "status" / "server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    mod = status_module()
    monkeypatch.setattr(mod, "STATE_DIR", str(tmp_path))
    server = mod.make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield mod, f"http://127.0.0.1:{server.server_address[1]}/hook", tmp_path / "status.json"
    server.shutdown()
    server.server_close()


def hook(url: str, payload: object, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the hook as claude does; with ``path``, wait until its background report landed."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    before = path.read_text() if path is not None and path.exists() else None
    result = subprocess.run(
        [str(HOOK)],
        input=data,
        capture_output=True,
        text=True,
        timeout=10,
        env={**os.environ, "BOTTLE_STATUS_URL": url},
    )
    if path is not None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (not path.exists() or path.read_text() == before):
            time.sleep(0.005)
    return result


def test_hooks_move_the_state_and_since_only_changes_with_it(daemon) -> None:
    _, url, path = daemon
    assert hook(url, {"hook_event_name": "SessionStart", "source": "startup"}, path).returncode == 0
    first = read_status(path)
    assert first is not None and first.state == "idle"
    assert hook(url, {"session_id": "s", "hook_event_name": "UserPromptSubmit", "prompt": "hi"}, path).stdout == ""
    working = read_status(path)
    assert working.state == "working"
    hook(url, {"hook_event_name": "PreToolUse", "tool_name": "Bash"}, path)
    assert read_status(path).since == working.since  # still working: time in state keeps counting
    hook(url, {"hook_event_name": "Notification", "message": "Claude needs your permission"}, path)
    assert read_status(path).state == "waiting"
    hook(url, {"hook_event_name": "Stop"}, path)
    assert read_status(path).state == "idle"
    hook(url, {"hook_event_name": "SessionEnd", "reason": "exit"}, path)
    assert read_status(path).state == "ended"


def test_an_event_sent_earlier_but_arriving_later_is_dropped(daemon) -> None:
    mod, _, path = daemon
    now = time.time_ns()
    assert mod.record("PreToolUse", now - 1_000_000)["state"] == "working"
    assert mod.record("Stop", now - 2_000_000) is None  # sent before the PreToolUse that already landed
    assert read_status(path).state == "working"
    assert mod.record("Stop", time.time_ns())["state"] == "idle"


# A fixed far-future value (not time.time_ns() + ...): xdist workers must collect the same ids.
@pytest.mark.parametrize("lie", [99999999999999999999, 2**63, 4_102_444_800 * 10**9, 1, 0])
def test_the_daemon_keeps_its_own_clock_whatever_time_the_agent_claims(daemon, lie: int) -> None:
    mod, url, path = daemon
    posted = post(url, {"hook_event_name": "PreToolUse", "t": lie})
    assert posted == 204
    assert read_status(path).state == "working"
    # A genuine report right after still moves the status: the lie held nothing still.
    hook(url, {"hook_event_name": "Stop"}, path)
    assert read_status(path).state == "idle"
    assert json.loads(path.read_text())["sent"] <= time.time_ns()


def post(url: str, payload: object) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, json.dumps(payload).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_agent_text_never_reaches_the_file(daemon) -> None:
    mod, url, path = daemon
    hook(url, {"hook_event_name": "Stop", "last_assistant_message": "[bold]secret[/]"}, path)
    before = path.read_text()
    for payload in (
        {"hook_event_name": "[bold]x[/]\x1b[2J"},
        {"hook_event_name": "Unknown"},
        "not json",
        ["Stop"],
        {"prompt": 'say "hook_event_name": "Stop"'},
    ):
        assert hook(url, payload).returncode == 0
    time.sleep(0.5)  # what a background report would need to land
    assert path.read_text() == before
    doc = json.loads(before)
    assert set(doc) == {"version", "state", "since", "event", "at", "sent"} and doc["event"] == "Stop"
    assert "secret" not in before
    assert mod.record("__proto__") is None


def test_the_hook_returns_at_once_and_never_fails_when_the_bundle_does_not_answer(tmp_path: Path) -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (backlog) and never answers, like a hung bundle
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        for url in (f"http://127.0.0.1:{port}/hook", "http://status.invalid:8766/hook"):
            started = time.monotonic()
            result = hook(url, {"hook_event_name": "Stop"})
            assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
            assert time.monotonic() - started < 0.5, url


def test_managed_settings_wire_every_event_to_the_hook() -> None:
    doc = json.loads((ROOT / "agent" / "claude" / "managed-settings.json").read_text())
    events = {"SessionStart", "UserPromptSubmit", "PreToolUse", "Notification", "Stop", "SessionEnd"}
    assert set(doc["hooks"]) == events
    for event in events:
        (entry,) = doc["hooks"][event]
        (cmd,) = entry["hooks"]
        assert cmd == {"type": "command", "command": "/opt/bottle/claude/report-status", "timeout": 2}
    assert set(status_module().STATES) == events
