"""Which home a command works on, and where a running bottle and its state are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import backends
from ..backends import Backend, BottleInfo
from ..state import home_path


def home(path: str | Path | None = None) -> Path:
    """The home a command works on: ``path`` when given (``--home``), else $CLAUDE_BOTTLE_HOME or
    ~/.claude-bottle."""
    return home_path(path)


def bottle_home(info: BottleInfo | None, fallback: Path) -> Path:
    """The home whose state folder belongs to a running bottle: the one that started it (its
    label) when this process can see that folder, else ``fallback`` (the caller's own home)."""
    if info is not None and info.home and Path(info.home).is_dir():
        return Path(info.home)
    return fallback


@dataclass(frozen=True)
class Located:
    """A running bottle, the home that holds its state, and its backend."""

    info: BottleInfo
    home: Path
    backend: Backend

    @property
    def slug(self) -> str:
        return self.info.slug


async def locate(slug: str, fallback: Path) -> Located:
    """The running bottle ``slug`` (one engine listing); a one-line error naming `ls` when none runs."""
    info = await backends.find(slug)
    return Located(info, bottle_home(info, fallback), backends.get(info.backend))
