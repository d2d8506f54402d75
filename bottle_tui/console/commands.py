"""The command palette's provider: every console action, by its description, runnable from ctrl+p."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class ConsoleCommands(Provider):
    def _actions(self) -> list[tuple[str, str, str]]:
        app = self.app
        out = []
        for binding in app.BINDINGS:
            action = binding.action
            description = getattr(app, "DESCRIPTIONS", {}).get(action, binding.description)
            out.append((action, description, binding.key))
        return out

    def _runnable(self, action: str) -> bool:
        # The palette is a screen of its own: ask as if it were closed (the app's check_action
        # sees only the main screen when nothing else is open).
        return action not in ("cursor_down", "cursor_up")

    async def discover(self) -> Hits:
        for action, description, key in self._actions():
            if self._runnable(action):
                yield DiscoveryHit(f"{description}  [{key}]", partial(self.app.run_action, action), help=f"action {action}")

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for action, description, key in self._actions():
            if not self._runnable(action):
                continue
            text = f"{description}  [{key}]"
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(self.app.run_action, action), text=text, help=f"action {action}")
