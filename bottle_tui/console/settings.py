"""The console's settings from config.yaml (theme, keymap), checked, and its entry point."""

from __future__ import annotations

import os
from pathlib import Path

from textual.app import App
from textual.binding import Binding

from ..config import config_path, load_config
from ..errors import BottleError
from . import keys


def known_binding_ids() -> list[str]:
    from .screens import ConfirmScreen as C
    from .screens import EditorScreen as E
    from .screens import LogScreen as L
    from .screens import NoteScreen as N
    from .screens import PickerScreen as P
    from .screens import ProposalDetail as D
    from .screens import ScopeScreen as S

    ids = [b.id for b in keys.ALL if b.id]
    for cls in (D, S, N, E, P, C, L):
        ids += [b.id for b in cls.BINDINGS if isinstance(b, Binding) and b.id]
    return ids


def console_settings(home: Path, theme: str | None) -> tuple[str | None, dict[str, str]]:
    """Theme and keymap from config.yaml (``theme`` from --theme wins), checked: a one-line error
    names the file and the key."""
    from themes import THEMES

    config = load_config(home)
    path = config_path(home)
    known = known_binding_ids()
    for binding_id, _ in config.keymap:
        if binding_id not in known:
            raise BottleError(f"{path}: keymap.{binding_id}: unknown binding id; use one of: {', '.join(known)}")
    chosen = theme or config.theme
    if chosen is not None:
        builtin = set(App[None]().available_themes)
        if chosen not in THEMES and chosen not in builtin:
            where = "--theme" if theme else f"{path}: theme"
            raise BottleError(
                f"{where}: unknown theme '{chosen[:40]}'; use one of: {', '.join([*THEMES, *sorted(builtin)])}"
            )
    return chosen, dict(config.keymap)


def run_console(home: Path, theme: str | None = None) -> int:
    from .app import BottleConsole

    chosen, keymap = console_settings(home, theme)
    app = BottleConsole(home, theme=chosen, keymap=keymap, tmux_env=os.environ)
    app.run()
    app.pane.release()
    return 0
