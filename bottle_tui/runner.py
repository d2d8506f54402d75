"""The one way bottle-tui runs external commands (docker, compose, openssl, debootstrap).

Every call is an argv list through ``asyncio.create_subprocess_exec``: never a shell string, stdin
closed unless input is given, a timeout, and a structured error carrying argv, exit status and
stderr. ``handoff`` is the single exception: it replaces this process with an interactive command.
``run_blocking`` is the same call for code that runs in a worker thread already (a decision made
under the queue's file lock), with the same argv, timeout and error.
"""

from __future__ import annotations

import asyncio
import os
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from .errors import BottleError


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(BottleError):
    """A command failed, timed out or could not be started."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str, why: str = "") -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        last = _last_line(stderr)
        what = why or f"exited with status {returncode}"
        super().__init__(
            f"`{shlex.join(self.argv[:4])}{' …' if len(self.argv) > 4 else ''}` {what}" + (f": {last}" if last else "")
        )


class CommandNotFound(CommandError):
    pass


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _env(extra: Mapping[str, str] | None) -> dict[str, str] | None:
    if not extra:
        return None
    env = dict(os.environ)
    env.update(extra)
    return env


async def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = 120.0,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout_path: str | os.PathLike[str] | None = None,
    stdin_path: str | os.PathLike[str] | None = None,
) -> Completed:
    """Run ``argv`` to completion and capture its output (decoded as UTF-8, errors replaced).
    With ``stdout_path`` its stdout goes to that file instead (created 0600, bytes as they come:
    an archive streamed out of a container), and ``Completed.stdout`` is empty. With
    ``stdin_path`` its stdin is that file (an archive streamed into a container; not with ``input``)."""
    args = [str(os.fspath(a)) for a in argv]
    if stdin_path is not None and input is not None:
        raise ValueError("run: give input or stdin_path, not both")
    source = os.open(stdin_path, os.O_RDONLY) if stdin_path is not None else None
    try:
        sink = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if stdout_path is not None else None
    except OSError:
        if source is not None:
            os.close(source)
        raise
    stdin: int = (
        source if source is not None else (asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL)
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE if sink is None else sink,
            stderr=asyncio.subprocess.PIPE,
            env=_env(env),
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise CommandNotFound(args, None, "", f"cannot start: {args[0]} is not installed or not on PATH") from exc
    finally:
        for fd in (sink, source):
            if fd is not None:
                os.close(fd)  # the child holds its own copy
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        _kill(proc)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise CommandError(args, None, "", f"timed out after {timeout:g} s") from exc
    result = Completed(
        tuple(args), proc.returncode or 0, (out or b"").decode(errors="replace"), err.decode(errors="replace")
    )
    if check and result.returncode != 0:
        raise CommandError(args, result.returncode, result.stderr or result.stdout)
    return result


def run_blocking(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = 120.0,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: bytes | None = None,
) -> Completed:
    """``run`` for a caller off the event loop (a worker thread): blocks until the command ends."""
    args = [str(os.fspath(a)) for a in argv]
    try:
        proc = subprocess.run(
            args,
            stdin=subprocess.DEVNULL if input is None else None,
            input=input,
            capture_output=True,
            env=_env(env),
            cwd=cwd,
            timeout=timeout,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise CommandNotFound(args, None, "", f"cannot start: {args[0]} is not installed or not on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(args, None, "", f"timed out after {timeout:g} s") from exc
    result = Completed(
        tuple(args), proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )
    if check and result.returncode != 0:
        raise CommandError(args, result.returncode, result.stderr or result.stdout)
    return result


async def lines(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> AsyncIterator[str]:
    """Yield stdout lines of a long-running command (``docker events``); kills it when the consumer stops."""
    argv = [str(a) for a in argv]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=_env(env),
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise CommandNotFound(argv, None, "", f"cannot start: {argv[0]} is not installed or not on PATH") from exc
    assert proc.stdout is not None
    try:
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                break
            yield raw.decode(errors="replace").rstrip("\n")
    finally:
        _kill(proc)
        await proc.wait()
    if proc.returncode not in (0, None, -9, -15):
        raise CommandError(argv, proc.returncode, "")


def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill the command's whole process group (it runs in its own session), so no grandchild
    keeps a pipe open after the command is gone."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def interactive(argv: Sequence[str]) -> int:
    """Run a command that owns the terminal (an editor) and return its exit status; stdio inherited."""
    argv = [str(a) for a in argv]
    try:
        proc = await asyncio.create_subprocess_exec(*argv)
    except FileNotFoundError as exc:
        raise CommandNotFound(argv, None, "", f"cannot start: {argv[0]} is not installed or not on PATH") from exc
    return await proc.wait()


async def edit_text(editor: str, text: str, suffix: str) -> str:
    """Open ``text`` in ``editor`` (a command line, as $EDITOR holds it) on a temporary file that
    owns the terminal, and return what was saved; the file is removed either way."""
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="bottle-tui-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        await interactive([*shlex.split(editor), name])
        with open(name, encoding="utf-8") as fh:
            return fh.read()
    finally:
        os.unlink(name)


def handoff(argv: Sequence[str]) -> None:
    """Replace this process with an interactive command that owns the terminal (``docker exec -it``)."""
    argv = [str(a) for a in argv]
    if shutil.which(argv[0]) is None:
        raise CommandNotFound(argv, None, "", f"cannot start: {argv[0]} is not installed or not on PATH")
    os.execvp(argv[0], argv)


class LineSession:
    """A long-running command spoken to in lines: one request line in, one answer line out (a
    bundle's control session through `docker exec -i`). Blocking, for worker threads; one request
    at a time. The command starts on the first request and again when it has ended."""

    def __init__(self, argv: Sequence[str], *, timeout: float = 60.0) -> None:
        self.argv = [str(a) for a in argv]
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def ask(self, line: str) -> str | None:
        """The answer line to ``line``; None when the command ended without one (start it again
        with another ``ask``). A command that does not answer within the timeout is killed."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                try:
                    proc = self._proc = subprocess.Popen(
                        self.argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                except FileNotFoundError as exc:
                    raise CommandNotFound(self.argv, None, "", f"cannot start: {self.argv[0]} is not on PATH") from exc
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(line.rstrip("\n").encode() + b"\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self.close()
                return None
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
            if not ready:
                self.close()
                raise CommandError(self.argv, None, "", f"did not answer within {self.timeout:g} s")
            answer = proc.stdout.readline()
            if not answer:
                self.close()
                return None
            return answer.decode(errors="replace").rstrip("\n")

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
