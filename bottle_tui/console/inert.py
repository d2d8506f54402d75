"""Untrusted text (agent output, engine labels) made safe to show: no markup, no terminal escapes."""

from __future__ import annotations

import unicodedata

from rich.text import Text


def inert_text(value: object) -> str:
    """``value`` as a string whose control and format characters (and the Unicode line and
    paragraph separators, which some terminals break lines at) are U+FFFD; tabs stay."""
    return "".join(
        "\ufffd" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch != "\t" else ch for ch in str(value)
    )


def inert(value: object) -> Text:
    """A Text that shows ``value`` literally (no markup), made of ``inert_text``."""
    return Text(inert_text(value), no_wrap=True, end="")
