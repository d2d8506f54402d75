"""Timestamps both sides write into shared files: UTC, ISO 8601, milliseconds."""

from __future__ import annotations

from datetime import datetime, timezone


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
