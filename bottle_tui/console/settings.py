"""The console's settings from config.yaml (theme, keymap), checked, and its entry point."""

from __future__ import annotations

import os
from pathlib import Path

from textual.app import App
from textual.binding import Binding

from ..config import config_path, load_config
from ..errors import BottleError
from ..state import home_path as home_path  # the CLI opens the console with it: the home, without ops
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
    known = known_binding_ids() if config.keymap else []  # (it imports the dialogs)
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
    notify = load_config(home).notify
    # In a browser (`bottle-tui serve`) there is no tmux pane to split, whatever the server's shell had.
    tmux_env = None if os.environ.get("TEXTUAL_DRIVER", "").endswith(":WebDriver") else os.environ
    app = BottleConsole(home, theme=chosen, keymap=keymap, tmux_env=tmux_env, notify=notify)
    app.run()
    app.pane.release()
    app.notifications.release()
    return 0


def run_notify_watch(home: Path) -> int:
    """`bottle-tui notify --watch`: the console's watchers and notifications with no screen, for
    when no console is open (a browser tab closed, a server); it shares the home's notifier lock
    with the consoles, so a message goes out once whichever of them runs."""
    from .app import BottleConsole

    settings = load_config(home).notify
    if not settings.enabled:
        raise BottleError(
            f"{config_path(home)}: notify: turns on no terminal, command or webhook, so there is nothing to send; see README (Notifications)"
        )
    app = BottleConsole(home, notify=settings, headless_notify=True, tick=False)
    app.run(headless=True)
    app.notifications.release()
    return 0
