"""Untrusted text (agent output, engine labels) made inert: no control or format characters, so
no terminal escape, no line break and no invisible reordering survives. Every front end and every
notification sink shows agent-derived text through this (the console's Rich Text is
``console/inert.py``)."""

from __future__ import annotations

import unicodedata


def inert_text(value: object) -> str:
    """``value`` as a string whose control and format characters (and the Unicode line and
    paragraph separators, which some terminals break lines at) are U+FFFD; tabs stay."""
    return "".join(
        "\ufffd" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch != "\t" else ch for ch in str(value)
    )
