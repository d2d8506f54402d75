"""Reading the decision audit log (JSONL, one record per decision or policy edit): the history
of one proposal. Pure over the file it reads (blocking); shared by the console and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def records(path: Path) -> list[dict[str, Any]]:
    """Every record of the audit log at ``path`` (none when it is missing; a line that is not a
    JSON object is skipped: the log is appended by more than one writer)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def proposal_history(path: Path, data: dict[str, Any]) -> list[str]:
    """One line per event of the proposal ``data`` (its file's content), oldest first: asked,
    each decision the audit log holds for it, and the decision in the file itself."""
    history = [f"{data.get('created_at')}  asked" + (" (draft: egress blocked it)" if data.get("draft") else "")]
    for rec in records(path):
        if rec.get("id") == data.get("id"):
            history.append(
                f"{rec.get('at')}  {rec.get('status')} by {rec.get('by')}"
                + (f": {rec.get('note')}" if rec.get("note") else "")
            )
    dec = data.get("decision")
    if isinstance(dec, dict):
        scope = f", scope {dec['scope']}" if dec.get("scope") else ""
        history.append(f"{dec.get('at')}  {data.get('status')} by {dec.get('by')}{scope}")
    return list(dict.fromkeys(history))
