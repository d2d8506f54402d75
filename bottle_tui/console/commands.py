"""The command palette's provider: every console action, by its description, runnable from ctrl+p."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from . import keys


class ConsoleCommands(Provider):
    def _actions(self) -> list[tuple[str, str, str]]:
        out = []
        for binding in keys.ALL:
            action = keys.action_name(binding)
            if action not in ("cursor_down", "cursor_up"):
                out.append((binding.action, keys.DESCRIPTIONS.get(action, binding.description), binding.key))
        return out

    async def _run(self, action: str) -> None:
        # A pane's action acts on the pane that has the focus once the palette has closed.
        await self.app.run_action(action, None if action.startswith("app.") else self.app.focused)

    async def discover(self) -> Hits:
        for action, description, key in self._actions():
            yield DiscoveryHit(
                f"{description}  [{key}]", partial(self._run, action), help=f"action {keys.action_name_of(action)}"
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for action, description, key in self._actions():
            text = f"{description}  [{key}]"
            score = matcher.match(text)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(text),
                    partial(self._run, action),
                    text=text,
                    help=f"action {keys.action_name_of(action)}",
                )
