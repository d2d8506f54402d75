"""File helpers shared by the sidecar bundle's programs (bottle_init.py and the egress addon).

The bundle cannot import bottle_tui, so this is its one atomic-write helper. The image copies this
folder to /opt/bottle/common; each program puts that folder on sys.path (see common_path()).
"""

from __future__ import annotations

import os


def atomic_write(path: str, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the new one, never a part.

    The temporary name carries the pid: two processes writing the same file never share one.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
