"""What one table row shows (pure: no Textual widgets, no I/O), and the agent status file's reader.

Cells are plain strings; everything an agent or a docker label supplied goes through ``inert``
here, and the app shows each cell as a Text with no markup, so no cell can carry markup or a
terminal escape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..spend import spend_cell
from .inert import inert

if TYPE_CHECKING:
    from ..ops import BottleInfo, BottleUsage, Proposal

PROPOSAL_COLUMNS = (
    ("agent", "AGENT"),
    ("kind", "KIND"),
    ("change", "CHANGE"),
    ("reason", "REASON"),
    ("age", "AGE"),
    ("status", "STATUS"),
)
AGENT_COLUMNS = (
    ("slug", "SLUG"),
    ("agent", "AGENT"),
    ("backend", "BACKEND"),
    ("started", "STARTED"),
    ("sidecars", "SIDECARS"),
    ("pending", "PENDING"),
    ("status", "STATUS"),
    ("spend", "SPEND"),
)
STATES = ("working", "waiting", "idle", "ended")
STATE_LABELS = {"working": "working", "waiting": "waiting for input", "idle": "idle", "ended": "ended"}


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def age(since: object, now: datetime) -> str:
    """'45s', '12m', '3h', '2d'; '?' when ``since`` is not a time."""
    t = parse_time(since)
    if t is None:
        return "?"
    secs = max(0, int((now - t).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def first_line(text: object, limit: int = 60) -> str:
    lines = str(text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def safe(value: object) -> str:
    """``value`` as text a cell can show literally (see inert)."""
    return inert(value).plain


def proposal_static(p: Proposal) -> dict[str, str]:
    """The cells of a proposal row that do not change with time (computed once per file version)."""
    draft = bool(p.data.get("draft"))
    return {
        "agent": safe(p.slug),
        "kind": safe(p.kind),
        "change": safe(p.summary()),
        "reason": safe(first_line(p.data.get("reason"))),
        "status": safe(f"draft x{p.data.get('count', 1)}" if draft else p.status),
    }


def proposal_cells(p: Proposal, now: datetime, static: dict[str, str] | None = None) -> dict[str, str]:
    return {**(static or proposal_static(p)), "age": age(p.data.get("created_at"), now)}


@dataclass(frozen=True)
class AgentStatus:
    """What claude's hooks last reported through the bundle (state/<slug>/status/status.json)."""

    state: str  # one of STATES
    since: str  # when it entered that state (ISO 8601)
    event: str = ""

    @property
    def waiting(self) -> bool:
        return self.state == "waiting"


def read_status(path: Path) -> AgentStatus | None:
    """The status file, or None when there is none yet or it is not one (a foreign file is ignored)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("state") not in STATES or parse_time(doc.get("since")) is None:
        return None
    event = doc.get("event")
    return AgentStatus(doc["state"], doc["since"], event[:40] if isinstance(event, str) else "")


def sidecars_cell(info: BottleInfo) -> str:
    state = info.services.get("sidecars")
    if state == "running":
        return "up"
    return state or "starting"


def agent_cells(
    info: BottleInfo, pending: int, status: AgentStatus | None, now: datetime, usage: BottleUsage | None = None
) -> dict[str, str]:
    if status is None:
        shown = (
            "agent running" if info.services.get("agent") == "running" else (info.services.get("agent") or "starting")
        )
    else:
        shown = f"{STATE_LABELS[status.state]} {age(status.since, now)}"
    return {
        "slug": safe(info.slug),
        "agent": safe(info.agent),
        "backend": safe(info.backend),
        "started": age(info.started_at, now) + " ago" if parse_time(info.started_at) else safe(info.started_at),
        "sidecars": safe(sidecars_cell(info)),
        "pending": str(pending) if pending else "-",
        "spend": safe(spend_cell(usage)),
        "status": shown,
    }
