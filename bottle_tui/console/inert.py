"""Untrusted text (agent output, engine labels) made safe to show: no markup, no terminal escapes."""

from __future__ import annotations

from rich.text import Text

from ..inert import inert_text as inert_text  # the rule itself lives below the front ends


def inert(value: object) -> Text:
    """A Text that shows ``value`` literally (no markup), made of ``inert_text``."""
    return Text(inert_text(value), no_wrap=True, end="")
