"""The console's right-hand tmux pane (DESIGN.md §6), through libtmux.

The console runs in a tmux pane (its id comes from ``$TMUX_PANE``). The first time it shows
something for an agent it splits one pane to its right; after that it respawns that same pane, so
the window never grows past two panes. The pane is found again by a pane option it carries
(``@bottle-tui-role right``), so a pane the user closed is noticed (the next ``show`` splits a new
one) and a console restarted in the same window adopts the pane that is already there.

Commands are given to tmux as an argv (tmux >= 3.0 runs them with execvp, no shell): a path or an
argument with spaces or quotes reaches the command as it was. Every method here blocks on a tmux
subprocess: the console calls them from a thread, never on its event loop. Every tmux failure is
a ``TmuxError`` whose message is one line.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import libtmux
from libtmux import exc as tmux_exc

from ..errors import BottleError

ROLE = "@bottle-tui-role"
SLUG = "@bottle-tui-slug"
SHOWS = "@bottle-tui-shows"  # what the right pane shows: claude, bringup or teardown
MIN_VERSION = (3, 0)
RIGHT_PERCENT = 50  # of the console's pane, which the split halves
# What a command in the pane needs from the console's environment: tmux starts panes with the
# server's environment, which may predate the console's (another PATH, another docker context).
PASS_ENV = ("PATH", "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")


class TmuxError(BottleError):
    """tmux could not do what the console asked (one line)."""


@dataclass(frozen=True)
class Occupant:
    """The right pane and what it shows."""

    pane_id: str
    slug: str
    shows: str
    dead: bool = False


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


def tmux_version(tmux: str = "tmux") -> tuple[int, int] | None:
    """(major, minor) of the tmux on PATH, or None when there is none."""
    path = shutil.which(tmux)
    if path is None:
        return None
    try:
        from libtmux.common import get_version

        found = re.match(r"(\d+)\.(\d+)", str(get_version(tmux_bin=path)))
    except (tmux_exc.LibTmuxException, OSError):
        return None
    return (int(found.group(1)), int(found.group(2))) if found else None


class RightPane:
    """The console's pane and the one pane to its right that shows an agent."""

    def __init__(self, console: libtmux.Pane, version: tuple[int, int] = MIN_VERSION) -> None:
        self.console = console
        self.version = version
        self.server = console.server
        assert console.pane_id is not None
        self.console_id: str = console.pane_id

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RightPane | None:
        """The console's pane from ``$TMUX``/``$TMUX_PANE``; None outside tmux. A tmux that is
        missing, too old or unreachable raises TmuxError."""
        env = os.environ if env is None else env
        if not env.get("TMUX"):
            return None
        version = tmux_version()
        if version is None:
            raise TmuxError("$TMUX is set but no tmux is on PATH")
        if version < MIN_VERSION:
            raise TmuxError(
                f"tmux {version[0]}.{version[1]} is too old for the split pane (it needs {MIN_VERSION[0]}.{MIN_VERSION[1]} or later)"
            )
        try:
            return cls(libtmux.Pane.from_env(env), version)
        except (tmux_exc.LibTmuxException, OSError) as exc:
            raise TmuxError(f"cannot reach the console's tmux pane: {_one_line(exc) or type(exc).__name__}") from None

    def _tmux(self, *args: str) -> list[str]:
        try:
            proc = self.server.cmd(*args)
        except (tmux_exc.LibTmuxException, OSError) as exc:
            raise TmuxError(f"tmux {args[0]}: {_one_line(exc) or type(exc).__name__}") from None
        if proc.stderr:
            raise TmuxError(f"tmux {args[0]}: {_one_line(proc.stderr[0])}")
        return proc.stdout

    def alive(self) -> bool:
        """The server answers and the console's pane is still there."""
        try:
            return self._tmux("display-message", "-p", "-t", self.console_id, "#{pane_id}") == [self.console_id]
        except TmuxError:
            return False

    def find(self) -> Occupant | None:
        """The right pane in the console's window, or None when there is none (never made, or
        closed by the user)."""
        fmt = "\t".join(("#{pane_id}", "#{%s}" % ROLE, "#{%s}" % SLUG, "#{%s}" % SHOWS, "#{pane_dead}"))
        for line in self._tmux("list-panes", "-t", self.console_id, "-F", fmt):
            pane_id, role, slug, shows, dead = (line.split("\t") + [""] * 5)[:5]
            if role == "right" and pane_id != self.console_id:
                return Occupant(pane_id, slug, shows, dead == "1")
        return None

    def show(
        self, argv: Sequence[str], *, slug: str, shows: str, select: bool, env: Mapping[str, str] | None = None
    ) -> tuple[Occupant, Occupant | None]:
        """Run ``argv`` in the right pane: respawned when there is one, split off the console's
        pane when not. ``select`` makes it the active pane (the user types there at once).
        Returns what the pane shows now, and what it showed before (None: there was no pane)."""
        if not argv or "=" in argv[0]:
            raise TmuxError("nothing to run in the right pane")
        passed = {name: os.environ[name] for name in PASS_ENV if name in os.environ}
        passed.update(env or {})
        # Through env(1) rather than tmux's -e: tmux 3.3 puts its own PATH over a -e PATH.
        prefix = [shutil.which("env") or "/usr/bin/env", *(f"{name}={value}" for name, value in passed.items())]
        current = self.find()
        pane_id = None
        keep_failed = False
        if current is not None:
            try:
                self._tmux("respawn-pane", "-k", "-t", current.pane_id, *prefix, *argv)
                pane_id = current.pane_id
            except TmuxError:
                if self.find() is not None:  # still there: a real failure
                    raise
                # closed between the look and the respawn: split a new one below
        if pane_id is None:
            width = (
                ["-l", f"{RIGHT_PERCENT}%"] if self.version >= (3, 1) else ["-p", str(RIGHT_PERCENT)]
            )  # -l N% is 3.1+
            split = [
                "split-window",
                "-h",
                "-d",
                *width,
                "-t",
                self.console_id,
                "-P",
                "-F",
                "#{pane_id}",
                *prefix,
                *argv,
            ]
            if self.version >= (3, 2) and self._tmux("show-options", "-gwv", "remain-on-exit") == ["off"]:
                # A command that fails (claude cannot reach its API, say) leaves its last screen
                # up to be read; one that ends well closes the pane. It is set on the window in
                # the split's own call, so that even a command that fails at once is caught, and
                # moved to the new pane just below: the console's own pane keeps the operator's
                # setting. (An operator's own remain-on-exit setting, when there is one, stands.)
                split = [*_sequence([["set-option", "-w", "-t", self.console_id, "remain-on-exit", "failed"], split])]
                keep_failed = True
            out = self._tmux(*split)
            if not out or not out[0].startswith("%"):
                raise TmuxError("tmux split-window did not name the new pane")
            pane_id = out[0]
        # One tmux call: tag the pane, title it, and select it when asked.
        cmds = [
            ["set-option", "-p", "-t", pane_id, ROLE, "right"],
            ["set-option", "-p", "-t", pane_id, SLUG, slug],
            ["set-option", "-p", "-t", pane_id, SHOWS, shows],
            ["select-pane", "-t", pane_id, "-T", f"{slug} ({shows})"],
        ]
        if keep_failed:
            cmds += [
                ["set-option", "-p", "-t", pane_id, "remain-on-exit", "failed"],
                ["set-option", "-w", "-u", "-t", self.console_id, "remain-on-exit"],
            ]
        if select:
            cmds.append(["select-pane", "-t", pane_id])
        self._tmux(*_sequence(cmds))
        return Occupant(pane_id, slug, shows), current

    def close(self) -> None:
        """Close the right pane, if there is one."""
        current = self.find()
        if current is not None:
            self._tmux("kill-pane", "-t", current.pane_id)

    def select_console(self) -> None:
        """Make the console's pane (and its window) the active one."""
        self._tmux("select-window", "-t", self.console_id, ";", "select-pane", "-t", self.console_id)

    def mark_console(self, on: bool) -> None:
        """Tag the console's own pane (``bottle-tui --tmux`` looks for it before opening another)."""
        if on:
            self._tmux("set-option", "-p", "-t", self.console_id, ROLE, "console")
        else:
            self._tmux("set-option", "-p", "-u", "-t", self.console_id, ROLE)


def _sequence(commands: Sequence[Sequence[str]]) -> list[str]:
    """Several tmux commands as one invocation (tmux separates them with a lone ';')."""
    out: list[str] = []
    for cmd in commands:
        if out:
            out.append(";")
        out.extend(cmd)
    return out


def session_has_console(server: libtmux.Server, session: str) -> bool:
    """Whether a pane of ``session`` runs a console (carries the console's role option)."""
    proc = server.cmd("list-panes", "-s", "-t", f"={session}", "-F", "#{%s}" % ROLE)
    return not proc.stderr and "console" in proc.stdout
