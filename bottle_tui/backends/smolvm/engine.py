"""Thin async wrapper over the smolvm CLI: one method per subcommand bottle-tui uses, all through
the one runner.

Every method names its machine with ``name=`` whatever the CLI's own flag style. Failures raise
``SmolvmError`` (argv, exit status, stderr, and smolvm's stable error code: each call asks for
``--error-format json``); ``exec`` instead returns the guest command's status, 124 when its
timeout fired. Facts this relies on (smolvm >= 1.8): names are ``--name`` flags, ``create --from``
cannot take ``--smolfile``, ``delete`` needs ``-f``, exec timeouts need a unit, exit codes are
0 ok / 1 error / 2 usage.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import BottleError
from ...runner import CommandError, run
from .install import INSTALL_HINT, find_smolvm

# Allow-lists given with --from were dropped silently before 1.8.0; 2.x may move flags again.
MIN_VERSION = (1, 8, 0)
BELOW_VERSION = (2, 0, 0)
EXEC_TIMEOUT_STATUS = 124
USAGE_STATUS = 2
# Keeps every smolvm call of this process (and the VMs it sees) under one folder: tests, CI.
STATE_DIR_ENV = "CLAUDE_BOTTLE_SMOLVM_STATE_DIR"


class SmolvmError(CommandError):
    """smolvm refused or failed. ``code`` is smolvm's stable error code (``NOT_FOUND``,
    ``CONFIG_ERROR``, …), ``USAGE`` for an argument error (exit 2), else empty."""

    def __init__(
        self, argv: Sequence[str], returncode: int | None, stderr: str, code: str = "", message: str = ""
    ) -> None:
        self.code = code
        self.detail = message or " ".join(stderr.split())  # smolvm's own words, without the command
        super().__init__(argv, returncode, message or stderr)
        self.stderr = stderr


class MachineNotFound(SmolvmError):
    pass


class UsageError(SmolvmError):
    """smolvm rejected the arguments (exit 2): a bug in bottle-tui or an incompatible smolvm."""


class ConfigError(SmolvmError):
    """A bad Smolfile (unknown keys are errors) or a refused configuration."""


def _is_usage_error(returncode: int, stderr: str) -> bool:
    return returncode == USAGE_STATUS and "Usage: smolvm" in stderr


def _error_from(argv: Sequence[str], returncode: int, stderr: str) -> SmolvmError:
    if returncode == USAGE_STATUS:
        # clap's first line says what was wrong; the last only points at --help.
        first = next((line.strip() for line in stderr.splitlines() if line.strip()), "")
        return UsageError(argv, returncode, stderr, "USAGE", first)
    for line in reversed(stderr.strip().splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict):
            code, message = str(err.get("code", "")), str(err.get("message", ""))
            kind = {"NOT_FOUND": MachineNotFound, "CONFIG_ERROR": ConfigError}.get(code, SmolvmError)
            return kind(argv, returncode, stderr, code, message)
    return SmolvmError(argv, returncode, stderr)


def _has_error_doc(stderr: str) -> bool:
    return any(line.startswith('{"error":') for line in stderr.splitlines())


def parse_version(text: str) -> tuple[int, int, int]:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    if not match:
        raise BottleError(f"smolvm --version printed '{text.strip()[:80]}', which names no version: {INSTALL_HINT}")
    return tuple(int(part) for part in match.groups())  # type: ignore[return-value]


def check_version(found: tuple[int, int, int]) -> None:
    """Refuse a smolvm outside the supported range, naming the version found and the one needed."""
    shown = ".".join(map(str, found))
    if found < MIN_VERSION:
        need = ".".join(map(str, MIN_VERSION))
        raise BottleError(
            f"smolvm {shown} is too old: bottle-tui needs smolvm >= {need} (allow-lists survive `machine create --from` only from 1.8.0); {INSTALL_HINT}"
        )
    if found >= BELOW_VERSION:
        raise BottleError(
            f"smolvm {shown} is newer than bottle-tui supports (< {'.'.join(map(str, BELOW_VERSION))}): install {INSTALL_HINT.split(' (')[0]}"
        )


def duration(seconds: float) -> str:
    """A timeout as smolvm wants it: with a unit (a bare number is a usage error)."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{int(seconds * 1000)}ms"


@dataclass(frozen=True)
class Machine:
    """One entry of ``machine ls --json``."""

    name: str
    state: str  # created / running / stopped / failed / unreachable
    cpus: int = 0
    memory_mib: int = 0
    pid: int | None = None
    network: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    state_reason: str = ""

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Machine:
        return cls(
            name=str(doc["name"]),
            state=str(doc.get("state") or "unknown"),
            cpus=int(doc.get("cpus") or 0),
            memory_mib=int(doc.get("memory_mib") or 0),
            pid=doc.get("pid"),
            network=bool(doc.get("network")),
            labels={str(k): str(v) for k, v in (doc.get("labels") or {}).items()},
            state_reason=str(doc.get("state_reason") or ""),
        )


def parse_ls(stdout: str) -> list[Machine]:
    try:
        docs = json.loads(stdout or "[]")
    except ValueError as exc:
        raise BottleError(
            f"`smolvm machine ls --json` printed something that is not JSON ({exc}): is this smolvm supported?"
        ) from exc
    if not isinstance(docs, list):
        raise BottleError("`smolvm machine ls --json` did not print a JSON array: is this smolvm supported?")
    return [Machine.from_json(d) for d in docs if isinstance(d, dict) and "name" in d]


@dataclass(frozen=True)
class ExecResult:
    status: int
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.status == EXEC_TIMEOUT_STATUS


class Smolvm:
    """The smolvm CLI at ``binary``, its state under ``state_dir`` (smolvm's default when None)."""

    def __init__(self, binary: Path, *, state_dir: Path | None = None) -> None:
        self.binary = binary
        self.state_dir = state_dir

    @classmethod
    def find(cls) -> Smolvm:
        state = os.environ.get(STATE_DIR_ENV)
        return cls(find_smolvm(), state_dir=Path(state) if state else None)

    @property
    def env(self) -> dict[str, str]:
        # Error-level logs of the VMM end up in smolvm's error message: a failed boot then says why
        # (e.g. KVM_EXIT_INTERNAL_ERROR) instead of only that the boot process exited.
        env = {"RUST_LOG": os.environ.get("RUST_LOG") or "error"}
        if os.geteuid() == 0:
            # As root smolvm drops the VM process to another uid, which then cannot open root's files.
            env["SMOLVM_VM_UID_DROP"] = "off"
        return env

    def argv(self, *args: str) -> list[str]:
        head = [str(self.binary), "--error-format", "json"]
        if self.state_dir is not None:
            head += ["--state-dir", str(self.state_dir)]
        return head + list(args)

    def interactive_argv(self, *args: str) -> list[str]:
        """argv for a handoff (the process is replaced, so the environment goes in through `env`)."""
        return ["env", *(f"{k}={v}" for k, v in self.env.items()), *self.argv(*args)]

    async def _run(self, *args: str, timeout: float) -> str:
        argv = self.argv(*args)
        result = await run(argv, timeout=timeout, check=False, env=self.env)
        if result.returncode != 0:
            raise _error_from(argv, result.returncode, result.stderr)
        return result.stdout

    async def version(self) -> tuple[int, int, int]:
        result = await run([str(self.binary), "--version"], timeout=30, check=False, env=self.env)
        if result.returncode != 0:
            raise _error_from([str(self.binary), "--version"], result.returncode, result.stderr)
        return parse_version(result.stdout)

    async def pack_create(
        self, *, image: str, output: Path, smolfile: Path | None = None, timeout: float = 1800
    ) -> None:
        args = ["pack", "create", "--image", image, "--output", str(output)]
        if smolfile is not None:
            args += ["--smolfile", str(smolfile)]
        await self._run(*args, timeout=timeout)

    async def machine_create(
        self,
        *,
        name: str,
        flags: Sequence[str] = (),
        from_pack: Path | None = None,
        smolfile: Path | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        await self._run(
            *create_args(name=name, flags=flags, from_pack=from_pack, smolfile=smolfile, labels=labels), timeout=300
        )

    async def machine_start(self, *, name: str, timeout: float = 120) -> None:
        await self._run("machine", "start", "--name", name, timeout=timeout)

    async def machine_stop(self, *, name: str, grace: int = 3) -> None:
        await self._run("machine", "stop", "--name", name, "--timeout", str(grace), timeout=grace + 60)

    async def machine_delete(self, *, name: str) -> None:
        # Without -f it asks on stdin, and a closed stdin does not delete.
        await self._run("machine", "delete", "--name", name, "-f", timeout=120)

    async def machine_exec(
        self,
        *,
        name: str,
        argv: Sequence[str],
        timeout: float = 60,
        user: str | None = None,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the machine; returns its status (124 when ``timeout`` fired)."""
        args = ["machine", "exec", "--name", name, "--timeout", duration(timeout), *_exec_options(user, workdir, env)]
        full = self.argv(*args, "--", *argv)
        result = await run(full, timeout=timeout + 30, check=False, env=self.env)
        # A failure of smolvm itself (no such machine, not running) prints its error document;
        # anything else is the guest command's own status.
        if result.returncode != 0 and (
            _is_usage_error(result.returncode, result.stderr) or _has_error_doc(result.stderr)
        ):
            raise _error_from(full, result.returncode, result.stderr)
        return ExecResult(result.returncode, result.stdout, result.stderr)

    def exec_argv(
        self,
        *,
        name: str,
        argv: Sequence[str],
        tty: bool,
        user: str | None = None,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """argv of an interactive ``machine exec`` (stdin attached, a terminal when ``tty``), for a handoff."""
        args = ["machine", "exec", "--name", name, "-i", *(["-t"] if tty else []), *_exec_options(user, workdir, env)]
        return self.interactive_argv(*args, "--", *argv)

    async def machine_cp(self, *, src: str, dst: str, timeout: float = 300) -> None:
        """Copy between the host and a machine; a machine path is ``machine_path(name, path)``."""
        await self._run("machine", "cp", src, dst, timeout=timeout)

    async def machine_ls(self) -> list[Machine]:
        return parse_ls(await self._run("machine", "ls", "--json", timeout=30))


def create_args(
    *,
    name: str,
    flags: Sequence[str] = (),
    from_pack: Path | None = None,
    smolfile: Path | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[str]:
    """The arguments of `machine create` (after the global options)."""
    if from_pack is not None and smolfile is not None:
        # smolvm refuses the pair (exit 2): the Smolfile belongs in the pack.
        raise BottleError(
            "machine create takes a pack (--from) or a Smolfile, not both: put the Smolfile into the pack"
        )
    args = ["machine", "create", "--name", name, *flags]
    for key, value in sorted((labels or {}).items()):
        args += ["--label", f"{key}={value}"]
    if from_pack is not None:
        args += ["--from", str(from_pack)]
    if smolfile is not None:
        args += ["--smolfile", str(smolfile)]
    return args


def _exec_options(user: str | None, workdir: str | None, env: Mapping[str, str] | None) -> list[str]:
    args: list[str] = []
    if user:
        args += ["--user", user]
    if workdir:
        args += ["--workdir", workdir]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    return args


def machine_path(name: str, path: str) -> str:
    return f"{name}:{path}"
