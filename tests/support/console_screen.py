"""Reading and driving the real console through its terminal (a tmux pane), shared by the
end-to-end tests and the benchmarks: ``screen`` returns what the pane shows, ``press`` sends a key."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.waiting import wait_for

Screen = Callable[[], str]
Press = Callable[[str], None]

# claude's first-run screens (onboarding, the workspace trust question) would stand between the
# pane and claude's prompt; an operator answers them once. Here they are answered in the agent's
# own ~/.claude.json, as claude itself records the answers (run with `python3 -c` in the agent).
SKIP_CLAUDE_FIRST_RUN = """
import json, os
path = os.path.expanduser("~/.claude.json")
try:
    doc = json.load(open(path))
except (OSError, ValueError):
    doc = {}
doc.update(hasCompletedOnboarding=True, theme="dark")
doc.setdefault("projects", {}).setdefault("/home/agent/work", {})["hasTrustDialogAccepted"] = True
json.dump(doc, open(path, "w"))
"""


def agent_rows(text: str) -> list[str]:
    """The slugs in the console's agents pane, top to bottom (a marked one without its '* ')."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "─ Agents" in line) + 2  # past the border and the header
    out = []
    for line in lines[start:]:
        cells = line.strip("│ ").split()
        if not cells or line.lstrip().startswith("╰"):
            break
        out.append(cells[1] if cells[0] == "*" else cells[0])
    return out


def settle(screen: Screen, quiet: float = 3.0) -> None:
    """Wait until the console's header stops changing for ``quiet`` seconds: claude's blocked
    start-up requests become drafts, and a new proposal moves the console's focus to the
    proposals pane (a key pressed at that moment would land there)."""
    last, since = None, time.monotonic()

    def quiet_enough() -> bool:
        nonlocal last, since
        lines = screen().splitlines()
        header = lines[1] if len(lines) > 1 else ""
        if header != last:
            last, since = header, time.monotonic()
        return time.monotonic() - since >= quiet

    wait_for(quiet_enough, timeout=30, what="the console's header to settle", interval=0.2)


def focus_agents(screen: Screen, press: Press) -> None:
    """Give the console's agents pane the focus (the footer offers Stop only there); a dialog
    that a key opened meanwhile is closed first."""

    def focused() -> bool:
        text = screen()
        if "Stop" in (text.splitlines() or [""])[-1]:
            return True
        press("Tab" if "─ Agents" in text else "Escape")
        return False

    try:
        wait_for(focused, timeout=15, what="the agents pane to have the focus", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the console shows:\n{screen()}") from None
