"""What the console's workers report, as typed messages (DESIGN.md §6; posting's ``messages.py``).

A worker posts one of these to the pane it concerns; the pane handles it (its rows), and the
message then bubbles to the app, which updates what is app-wide (the header line, the hint, the
bell, the right-hand tmux pane). Workers never change a pane's or the app's state themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from ..ops import BottleInfo, BottleUsage, Proposal
    from .rows import AgentStatus


@dataclass
class BottlesFound(Message):
    """One discovery: every bottle on the engine, the status of each that has one, and the engine
    line when it was fetched (None: unchanged). The bottles pane fills in ``gone`` (slugs whose
    rows went) and ``order`` (the row order before) for the app."""

    bottles: list[BottleInfo]
    statuses: dict[str, AgentStatus]
    versions: str | None = None
    gone: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    usages: dict[str, BottleUsage] | None = None  # what each spent (None: not read this time)


@dataclass
class EngineDown(Message):
    """Discovery failed: the engine's problem, one line."""

    problem: str
    gone: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)


@dataclass
class ProposalsLoaded(Message):
    """Pending proposals by id: all of them (``changed`` None, a full load), or those among the
    ids in ``changed`` whose files changed (an id of ``changed`` missing from ``pending`` went). The
    proposals pane fills in ``new`` (ids never shown before, oldest first) and ``ring`` (whether
    they are news: not the proposals already queued at startup)."""

    pending: dict[str, Proposal]
    changed: set[str] | None = None
    new: list[str] = field(default_factory=list)
    ring: bool = False


@dataclass
class StatusRead(Message):
    """Status files read again after they changed: slug -> status (None: gone or not one)."""

    statuses: dict[str, AgentStatus | None]


@dataclass
class UsageRead(Message):
    """usage.json files read again after egress rewrote them: slug -> usage (None: gone or not one)."""

    usages: dict[str, BottleUsage | None]
