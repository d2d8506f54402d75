"""File operations both sides share: atomic replace, an exclusive lock file (waited for, or tried), and a JSONL log
appended one record per write, kept under a size cap by rotation.

Every writer on either side of a bind mount uses these, so that a reader never sees a torn file,
two writers never interleave a line, and no log on the operator's disk grows without bound.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

PathLike = str | os.PathLike[str]


def atomic_write(path: PathLike, data: bytes | str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the new one, never a
    part: a temporary file in the same folder, fsync, rename. The file gets ``mode``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path = os.fspath(path)
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` of ``path`` (created when missing) for the ``with`` block.
    The queue's lock (layout.QUEUE_LOCK) is taken this way by the host and by supervise."""
    fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def try_lock(path: PathLike) -> int | None:
    """An exclusive ``flock`` of ``path`` (created 0600 when missing) held by the returned
    descriptor until it is closed, or None at once when someone else holds it (the host's one
    notifier per home is chosen this way)."""
    fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def rotate(path: PathLike, max_bytes: int, keep: int, incoming: int = 0) -> bool:
    """When ``path`` holds something and ``incoming`` more bytes would take it past ``max_bytes``,
    shift it to ``.1`` (``.1`` to ``.2``, ...), dropping what would become ``.keep+1`` (with
    ``keep`` 0 the file is dropped). True when it rotated. Racing rotators are harmless: each
    rename is atomic and a missing file is skipped."""
    path = os.fspath(path)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return False
    if size == 0 or size + incoming <= max_bytes:
        return False
    for n in range(keep - 1, 0, -1):
        older = f"{path}.{n}"
        if os.path.exists(older):
            with contextlib.suppress(FileNotFoundError):
                os.replace(older, f"{path}.{n + 1}")
    if keep <= 0:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return True
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, f"{path}.1")
    return True


def append_line(
    path: PathLike, line: bytes, *, max_bytes: int, keep: int, mode: int = 0o600, lock: PathLike | None = None
) -> None:
    """Append one line (a newline is added) with one O_APPEND write, so concurrent writers never
    interleave, rotating the file first when the line would take it past ``max_bytes``: each file
    stays within the cap (writers racing at the edge may pass it by a line each). A line longer
    than ``max_bytes`` is refused (ValueError): the cap would not hold.

    Writers in several processes pass a ``lock`` file they share: a rotation then happens under
    it, once (two rotating at the same moment could move a fresh file over the one just kept)."""
    if len(line) + 1 > max_bytes:
        raise ValueError(f"a log line of {len(line)} bytes is over the {max_bytes}-byte cap of {os.fspath(path)}")
    if lock is None:
        rotate(path, max_bytes, keep, incoming=len(line) + 1)
    else:
        try:
            due = os.stat(os.fspath(path)).st_size + len(line) + 1 > max_bytes
        except FileNotFoundError:
            due = False
        if due:
            with locked(lock):
                rotate(path, max_bytes, keep, incoming=len(line) + 1)
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        os.write(fd, line + b"\n")
    finally:
        os.close(fd)


def append_jsonl(path: PathLike, record: dict[str, Any], *, max_bytes: int, keep: int, mode: int = 0o600) -> None:
    """``record`` as one JSON line (keys sorted), through append_line."""
    append_line(path, json.dumps(record, sort_keys=True).encode("utf-8"), max_bytes=max_bytes, keep=keep, mode=mode)
