"""The one error type a user sees: a single sentence naming the file, key or command and what to do."""

from __future__ import annotations


class BottleError(Exception):
    """An error meant for the operator. ``str(err)`` is one line; the CLI prints it without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)
