"""Untrusted text (agent output, engine labels) made safe to show: no markup, no terminal escapes."""

from __future__ import annotations

import unicodedata

from rich.text import Text


def inert(value: object) -> Text:
    """A Text that shows ``value`` literally; control and format characters (and the Unicode line
    and paragraph separators, which some terminals break lines at) become U+FFFD."""
    raw = str(value)
    clean = "".join(
        "\ufffd" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch != "\t" else ch for ch in raw
    )
    return Text(clean, no_wrap=True, end="")
