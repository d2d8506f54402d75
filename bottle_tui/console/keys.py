"""The main screen's keys: one Binding per action with a stable id (config.yaml's keymap uses it),
shared by the panes that offer them, in the order the footer shows them."""

from __future__ import annotations

from textual.binding import Binding

SWITCH = Binding("tab", "app.switch_pane", "Switch pane", id="switch-pane")
QUIT = Binding("q", "app.quit", "Quit (bottles keep running)", id="quit")
DOWN = Binding("j", "cursor_down", "Down", show=False, id="cursor-down")
UP = Binding("k", "cursor_up", "Up", show=False, id="cursor-up")
OPEN = Binding("enter", "open", "Open", id="open")
APPROVE = Binding("a", "approve", "Approve", id="approve")
MODIFY = Binding("m", "modify", "Modify", id="modify")
REJECT = Binding("r", "reject", "Reject", id="reject")
NEW = Binding("n", "app.new_agent", "New agent", id="new-agent")
STOP = Binding("x", "stop", "Stop", id="stop")
ROUTES = Binding("e", "edit_routes", "Routes", id="edit-routes")
DLP = Binding("p", "edit_dlp", "DLP", id="edit-dlp")
LOGS = Binding("l", "logs", "Logs", id="logs")
DIFF = Binding("d", "diff", "Diff", id="diff")
# The same key on a bottle whose work cannot be reviewed (no git): not in the footer, and it says why.
NO_DIFF = Binding("d", "no_diff", "Diff", show=False, id="diff")
SNAPSHOT = Binding("s", "snapshot", "Snapshot", id="snapshot")
REFRESH = Binding("f5", "app.refresh", "Refresh", id="refresh")

# Every main-screen key, as the command palette lists them.
ALL = [QUIT, SWITCH, DOWN, UP, OPEN, APPROVE, MODIFY, REJECT, NEW, STOP, ROUTES, DLP, LOGS, DIFF, SNAPSHOT, REFRESH]
# The app-wide ones, for when no pane has the focus.
APP_WIDE = [QUIT, SWITCH, NEW, REFRESH]
# Actions that act on the selected row of one pane (the panes' check_action hides them when empty).
PROPOSAL_ACTIONS = ("open", "approve", "modify", "reject")
AGENT_ACTIONS = ("open", "stop", "edit_routes", "edit_dlp", "logs", "diff", "no_diff", "snapshot")

DESCRIPTIONS = {
    "quit": "Quit the console (every bottle keeps running)",
    "switch_pane": "Switch between proposals and agents",
    "cursor_down": "Move down",
    "cursor_up": "Move up",
    "open": "Open the proposal / attach to the agent",
    "approve": "Approve the selected proposal",
    "modify": "Modify (narrow) the selected proposal, then approve it",
    "reject": "Reject the selected proposal with a note",
    "new_agent": "Start a new agent (picker, then the plan)",
    "stop": "Stop the selected bottle",
    "edit_routes": "Edit the selected bottle's routes (routes.yaml)",
    "edit_dlp": "Edit the selected bottle's DLP policy",
    "logs": "Show the selected bottle's logs",
    "diff": "Review what the selected agent changed (files, diffs, commits)",
    "snapshot": "Snapshot the selected agent (a fork starts from it: n, then pick the snapshot)",
    "refresh": "Refresh bottles and proposals now",
}


def action_name_of(action: str) -> str:
    """An action without its namespace ('app.quit' -> 'quit')."""
    return action.removeprefix("app.")


def action_name(binding: Binding) -> str:
    return action_name_of(binding.action)
