"""Find the smolvm CLI: the pinned ``smolmachines`` wheel first, then ``smolvm`` on PATH.

The wheel ships the real CLI as ``smol/smol-vmm`` beside libkrun; it answers to its own name only
when called ``smolvm``, so a hard link of that name is made in the same folder (no copy of a
40 MB binary, and the libraries it loads from its folder stay found).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from ...errors import BottleError

PINNED_WHEEL = "smolmachines==1.32.2"
INSTALL_HINT = f"pip install 'bottle-tui[smolvm]' (the {PINNED_WHEEL} wheel), or put smolvm on PATH"
# Names a smolvm binary explicitly (tests, operators with their own build).
BINARY_ENV = "CLAUDE_BOTTLE_SMOLVM"


def wheel_dir() -> Path | None:
    """The folder of the installed ``smol`` package, without importing it (it loads native code)."""
    spec = importlib.util.find_spec("smol")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _link_in_wheel(folder: Path) -> Path | None:
    vmm, link = folder / "smol-vmm", folder / "smolvm"
    if not vmm.is_file():
        return None
    try:
        if not (link.exists() and os.path.samefile(link, vmm)):
            link.unlink(missing_ok=True)
            os.link(vmm, link)
    except OSError:
        # A read-only site-packages where nobody made the link yet: fall back to PATH.
        return None
    return link


def find_smolvm() -> Path:
    """The smolvm binary to run, or a one-line error naming what to install."""
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        path = Path(explicit)
        if not os.access(path, os.X_OK):
            raise BottleError(f"${BINARY_ENV} names {path}, which is not an executable smolvm: fix it or unset it")
        return path
    folder = wheel_dir()
    if folder is not None:
        found = _link_in_wheel(folder)
        if found is not None:
            return found
    on_path = shutil.which("smolvm")
    if on_path:
        return Path(on_path)
    raise BottleError(f"the smolvm backend needs the smolvm CLI, which is not installed: {INSTALL_HINT}")
