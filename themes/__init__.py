"""The console's named Textual themes (STYLE.md: themes live at the top level, beside the package).

Every colour the console shows comes from one of these through theme variables ($primary,
$warning, ...); the TCSS next to the widgets never names a colour itself.
"""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.theme import Theme

BOTTLE_DARK = Theme(
    name="bottle-dark",
    primary="#5fafd7",
    secondary="#87afaf",
    accent="#d7af5f",
    warning="#d7af00",
    error="#d75f5f",
    success="#87af5f",
    foreground="#d0d0d0",
    background="#1c1c1c",
    surface="#262626",
    panel="#303030",
    dark=True,
)

BOTTLE_LIGHT = Theme(
    name="bottle-light",
    primary="#005f87",
    secondary="#5f8787",
    accent="#875f00",
    warning="#af5f00",
    error="#af0000",
    success="#005f00",
    foreground="#1c1c1c",
    background="#f5f5f0",
    surface="#ebebe5",
    panel="#dcdcd5",
    dark=False,
)

THEMES = {t.name: t for t in (BOTTLE_DARK, BOTTLE_LIGHT)}
DEFAULT_THEME = BOTTLE_DARK.name


def register_all(app: App[Any]) -> None:
    for theme in THEMES.values():
        app.register_theme(theme)
