"""The console's modify flow through $EDITOR under a real tmux (no engine needed): ctrl+e suspends
the console, a real editor process (a sed script standing in for the operator) changes the file,
and the console validates what was saved and decides through the proposals library."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import libtmux
import pytest

from bottle_tui import proposals
from tests.support.console import write_proposal

from .test_console_flows import wait_screen

pytestmark = pytest.mark.integration


def test_modify_in_editor_through_suspend(tmp_path: Path, tmux_server: libtmux.Server) -> None:
    home = tmp_path / "home"
    p = write_proposal(home, "implementer-aaaaaa", host="pypi.example.org")
    editor = tmp_path / "narrowing-editor"
    # The "operator": narrows the asked paths to one package, then saves.
    editor.write_text("#!/bin/sh\nsed -i 's#/simple/\\*#/simple/requests/*#' \"$1\"\n")
    editor.chmod(0o755)
    command = (
        f"env -u COLUMNS -u LINES EDITOR={shlex.quote(str(editor))} {shlex.quote(sys.executable)} -m bottle_tui "
        f"--home {shlex.quote(str(home))} console"
    )
    tmux_server.cmd("new-session", "-d", "-s", "console", "-x", "150", "-y", "40", command)
    pane = tmux_server.sessions.get(session_name="console").active_window.active_pane
    wait_screen(pane, lambda s: "pypi.example.org" in s, "the proposal row")
    pane.send_keys("Tab", enter=False)  # from the agents pane, where the console starts
    # The footer shows a/m/r only while the proposals pane has the focus: press m once it does.
    wait_screen(pane, lambda s: "m Modify" in s.splitlines()[-1], "the proposals pane to take the focus")
    pane.send_keys("m", enter=False)
    wait_screen(pane, lambda s: "ctrl+e edit in $EDITOR" in s, "the modify editor")
    pane.send_keys("C-e", enter=False)
    wait_screen(pane, lambda s: "o once · a always" in s, "the scope question after a valid edit")
    pane.send_keys("a", enter=False)
    wait_screen(pane, lambda s: "0 pending proposals" in s, "the decision")
    decided = proposals.load(p.path)
    assert decided.status == "modified" and decided.data["decision"]["change"]["paths"] == ["/simple/requests/*"]
    pane.send_keys("q", enter=False)
