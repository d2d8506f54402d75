"""What the console imports before its first frame (issue 20: a quick console): `bottle-tui` alone
parses its command line, checks the settings and draws the first screen without the operations,
the backends, the dialogs, tmux's library or yaml; the workers import those after the frame.

A fresh interpreter runs the real entry path (the parser, the settings, the app) and notes
sys.modules when the first frame is out, just before the app's own after-the-frame start runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, sys
from bottle_tui.cli import build_parser

args = build_parser().parse_args(["--home", sys.argv[1]])
from bottle_tui.console.app import BottleConsole
from bottle_tui.console.settings import console_settings, home_path

home = home_path(args.home)
console_settings(home, None)


class Probe(BottleConsole):
    def on_mount(self):
        self.call_after_refresh(self.note)  # before on_mount's own: it runs first after the frame
        super().on_mount()

    def note(self):
        self.seen = sorted(sys.modules)
        self.exit()


app = Probe(home)
app.run(headless=True)
print(json.dumps(app.seen))
"""

# Our modules the first frame may import; a new one here is a choice to make, not a slip.
FIRST_FRAME = {
    "bottle_tui",
    "bottle_tui.cli",
    "bottle_tui.cli.common",
    "bottle_tui.cli.pool",  # its parsers; ops only when `pool` runs
    "bottle_tui.cli.snapshots",
    "bottle_tui.config",
    "bottle_tui.console",
    "bottle_tui.console.app",
    "bottle_tui.console.commands",
    "bottle_tui.console.inert",
    "bottle_tui.console.keys",
    "bottle_tui.console.messages",
    "bottle_tui.console.notifications",
    "bottle_tui.console.pane_control",
    "bottle_tui.console.panes",
    "bottle_tui.console.rows",
    "bottle_tui.console.settings",
    "bottle_tui.console.table",
    "bottle_tui.console.watchers",
    "bottle_tui.errors",
    "bottle_tui.inert",
    "bottle_tui.spend",
    "bottle_tui.state",
    "bottle_contract",
    "bottle_contract.files",
    "bottle_contract.layout",
    "themes",
}
# What the first frame must go without (the workers, the keys and the other commands need them).
HEAVY = {
    "bottle_tui.ops",
    "bottle_tui.notify",
    "bottle_tui.backends",
    "bottle_tui.manifest",
    "bottle_tui.proposals",
    "bottle_tui.local_repo",
    "bottle_tui.work_review",
    "bottle_tui.plan",
    "bottle_tui.cli.bottles",
    "bottle_tui.cli.review",
    "bottle_tui.console.screens",
    "bottle_tui.console.review",
    "bottle_tui.console.agent_flows",
    "bottle_tui.console.proposal_flows",
    "bottle_tui.console.policy_flow",
    "bottle_tui.console.tmux",
    "bottle_tui.console.web",
    "libtmux",
    "yaml",
    "watchfiles",
    "urllib.request",
    "aiohttp",
    "textual.widgets._text_area",
}


def first_frame_modules(home: Path) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(home)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_first_frame_imports_only_what_the_first_screen_needs(tmp_path: Path) -> None:
    seen = first_frame_modules(tmp_path)
    assert "bottle_tui.console.panes" in seen and "textual.widgets._data_table" in seen  # the probe saw the screen
    ours = {m for m in seen if m.split(".")[0] in ("bottle_tui", "bottle_contract", "themes")}
    assert sorted(ours - FIRST_FRAME) == [], "new imports before the first frame: defer them, or add them here"
    assert sorted(seen & HEAVY) == []


def test_a_config_without_a_keymap_leaves_the_dialogs_and_yaml_for_later(tmp_path: Path) -> None:
    """A config.yaml is read with yaml (then loaded, as it must be), but the dialogs that only a
    keymap's check needs stay unimported."""
    (tmp_path / "config.yaml").write_text("theme: bottle-light\n")
    seen = first_frame_modules(tmp_path)
    assert "yaml" in seen and "bottle_tui.console.screens" not in seen
