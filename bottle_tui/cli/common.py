"""What every `bottle-tui` subcommand shares: one-line messages, the yes/no question, the home,
agent text made inert for a terminal, and plain tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import BottleError


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise BottleError(f"{question.rstrip('?')} needs a yes: pass --yes when stdin is not a terminal")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _home(args: argparse.Namespace) -> Path:
    from .. import ops

    return ops.home(args.home)


def _shown(value: object) -> str:
    """Agent-supplied text for a terminal: control characters and escapes made inert."""
    from ..console.inert import inert

    return inert(value).plain


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(col.ljust(w) for col, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    for line in _table(rows):
        print(line)
