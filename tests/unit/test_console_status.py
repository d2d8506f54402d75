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
    server = mod.ThreadingHTTPServer(("127.0.0.1", 0), mod.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield mod, f"http://127.0.0.1:{server.server_address[1]}/hook", tmp_path / "status.json"
    server.shutdown()
    server.server_close()


def hook(url: str, payload: object) -> subprocess.CompletedProcess[str]:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return subprocess.run([str(HOOK)], input=data, capture_output=True, text=True, timeout=10,
                          env={**os.environ, "BOTTLE_STATUS_URL": url})


def test_hooks_move_the_state_and_since_only_changes_with_it(daemon) -> None:
    _, url, path = daemon
    assert hook(url, {"hook_event_name": "SessionStart", "source": "startup"}).returncode == 0
    first = read_status(path)
    assert first is not None and first.state == "idle"
    assert hook(url, {"hook_event_name": "UserPromptSubmit", "prompt": "hi"}).stdout == ""
    working = read_status(path)
    assert working.state == "working"
    time.sleep(0.01)
    hook(url, {"hook_event_name": "PreToolUse", "tool_name": "Bash"})
    assert read_status(path).since == working.since  # still working: time in state keeps counting
    hook(url, {"hook_event_name": "Notification", "message": "Claude needs your permission"})
    assert read_status(path).state == "waiting"
    hook(url, {"hook_event_name": "Stop"})
    assert read_status(path).state == "idle"
    hook(url, {"hook_event_name": "SessionEnd", "reason": "exit"})
    assert read_status(path).state == "ended"


def test_agent_text_never_reaches_the_file(daemon) -> None:
    _, url, path = daemon
    hook(url, {"hook_event_name": "Stop"})
    before = path.read_text()
    for payload in ({"hook_event_name": "[bold]x[/]\x1b[2J"}, {"hook_event_name": "__proto__"}, "not json", ["Stop"]):
        assert hook(url, payload).returncode == 0
    assert path.read_text() == before
    doc = json.loads(before)
    assert set(doc) == {"version", "state", "since", "event", "at"} and doc["event"] == "Stop"


def test_the_hook_gives_up_at_once_and_never_fails_when_the_bundle_is_gone(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = hook(f"http://127.0.0.1:{port}/hook", {"hook_event_name": "Stop"})
    assert result.returncode == 0 and result.stdout == "" and time.monotonic() - started < 1.0
    result = hook("http://status.invalid:8766/hook", {"hook_event_name": "Stop"})
    assert result.returncode == 0 and result.stdout == ""


def test_managed_settings_wire_every_event_to_the_hook() -> None:
    doc = json.loads((ROOT / "agent" / "claude" / "managed-settings.json").read_text())
    events = {"SessionStart", "UserPromptSubmit", "PreToolUse", "Notification", "Stop", "SessionEnd"}
    assert set(doc["hooks"]) == events
    for event in events:
        (entry,) = doc["hooks"][event]
        (cmd,) = entry["hooks"]
        assert cmd == {"type": "command", "command": "/opt/bottle/claude/report-status", "timeout": 2}
    assert set(status_module().STATES) == events
