"""Import the sidecar bundle's own modules in tests the way mitmdump does: from their folder."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

EGRESS_DIR = Path(__file__).resolve().parents[2] / "sidecars" / "egress"


def egress_module(name: str) -> ModuleType:
    """``routes`` or ``addon`` from sidecars/egress; addon imports its sibling routes by name."""
    if str(EGRESS_DIR) not in sys.path:
        sys.path.insert(0, str(EGRESS_DIR))
    return importlib.import_module(name)


SUPERVISE_DIR = EGRESS_DIR.parent / "supervise"


def supervise_module(name: str) -> ModuleType:
    """``inbox`` from sidecars/supervise (stdlib only; server.py needs the MCP SDK's venv)."""
    if str(SUPERVISE_DIR) not in sys.path:
        sys.path.insert(0, str(SUPERVISE_DIR))
    return importlib.import_module(name)
