"""Import the sidecar bundle's own modules in tests the way the bundle does: each daemon's
``pythonpath`` from sidecars/daemons.json, mapped from the image's /opt/bottle to this checkout."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import ModuleType

# BOTTLE_TUI_TEST_SIDECARS points the tests at another copy of the sidecars' folders: the mutation
# run (scripts/mutmut-dlp.sh) gives them one whose egress folder holds the mutated DLP package.
SIDECARS = Path(os.environ.get("BOTTLE_TUI_TEST_SIDECARS") or Path(__file__).resolve().parents[2] / "sidecars")
EGRESS_DIR = SIDECARS / "egress"
IMAGE_ROOT = "/opt/bottle/"


def daemon_path(daemon: str) -> list[str]:
    """The folders of ``daemon``'s pythonpath in daemons.json, as folders of this checkout."""
    spec = json.loads((SIDECARS / "daemons.json").read_text())[daemon]
    return [str(SIDECARS / p.removeprefix(IMAGE_ROOT)) for p in spec.get("pythonpath", [])]


def daemon_env(daemon: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """An environment that runs ``daemon``'s programs from this checkout (PYTHONPATH set)."""
    return {**(os.environ if environ is None else environ), "PYTHONPATH": os.pathsep.join(daemon_path(daemon))}


def _import(daemon: str, name: str) -> ModuleType:
    for folder in reversed(daemon_path(daemon)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return importlib.import_module(name)


def egress_module(name: str) -> ModuleType:
    """``routes``, ``dlp`` or ``addon`` from sidecars/egress."""
    return _import("egress", name)


SUPERVISE_DIR = SIDECARS / "supervise"


def supervise_module(name: str) -> ModuleType:
    """``inbox`` from sidecars/supervise (stdlib only; server.py needs the MCP SDK's venv)."""
    return _import("supervise", name)


def git_gate_module(name: str) -> ModuleType:
    """``push_policy``, ``pre_receive`` or ``gate`` from the git gate's folder."""
    return _import("git-gate", name)
