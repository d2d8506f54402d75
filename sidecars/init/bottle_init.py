#!/usr/bin/env python3
"""PID-1 init of the bottle's sidecar bundle: start daemons, reap, restart with backoff, forward signals.
With arguments it is a small client of a running init: `restart NAME...` and `status`.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time

# The contract comes from PYTHONPATH (the image sets it for init; daemons get their own from
# the pythonpath of their daemons.json entry).
from bottle_contract import ports, workers
from bottle_contract.files import append_line, atomic_write

DEFAULT_DAEMONS_FILE = "/etc/bottle/daemons.json"
DEFAULT_RUN_DIR = "/run/bottle-init"
RESTART_FILE = "restart"
RESTART_FILE_CAP = 64 << 10  # restart requests waiting for init: a few names, never more
STATUS_FILE = "status.json"
DEFAULT_GRACE = 5.0
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 30.0
# A child that ran this long counts as healthy: its next crash starts the backoff again at 1 s.
HEALTHY_AFTER = 30.0
HANDLED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}
DAEMON_KEYS = {"argv", "pythonpath", "reload_signal", "env", "cwd", "pass_env", "secrets_from", "workers_from"}
# What every daemon gets from init's environment; everything else only when its daemons.json
# entry names it (pass_env) or lists it as a secret (secrets_from).
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "BOTTLE_NAME", "BOTTLE_SLUG")
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


def log(msg: str) -> None:
    print(f"init: {msg}", file=sys.stderr, flush=True)


class ConfigError(Exception):
    pass


def parse_signal(value, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f'{where}: reload_signal must be a signal name like "HUP"')
    name = value.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ConfigError(f"{where}: unknown signal {value!r}") from None


_PORT_TOKEN = re.compile(r"\{port:([A-Z_]+)\}")


def _with_ports(arg: str, where: str) -> str:
    """``{port:NAME}`` in an argument becomes the contract's port NAME (bottle_contract.ports)."""

    def port(m: re.Match[str]) -> str:
        value = getattr(ports, m.group(1), None)
        if not isinstance(value, int):
            raise ConfigError(f"{where}: argv names {m.group(0)}, which bottle_contract.ports does not define")
        return str(value)

    return _PORT_TOKEN.sub(port, arg)


def load_daemons(path: str) -> dict[str, dict]:
    """daemons.json: {name: {"argv": [...], "pythonpath": [DIR, ...], "reload_signal": "HUP"|null,
    "env": {...}, "cwd": "...", "pass_env": [NAME, ...], "secrets_from": "VAR", "workers_from": "VAR"}}.

    ``workers_from`` names the variable that says how many copies of the daemon run side by side
    (bottle_contract.workers: a count or "auto"); each is a daemon of its own, ``name.1`` ..
    ``name.N``, told its number and the count in its environment (``expand``).

    ``pythonpath`` is the daemon's whole import path besides its interpreter's own (PYTHONPATH):
    its folder and the contract package's. No daemon puts anything on sys.path itself.

    A daemon's environment is least privilege: BASE_ENV, the names in ``pass_env``, the secrets
    whose names the variable ``secrets_from`` lists (comma-separated, set by the host per bottle),
    and ``env``. Nothing else of init's environment reaches it."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected an object mapping daemon names to specs")
    specs = {}
    for name, spec in raw.items():
        where = f"{path}: {name}"
        if not name or "," in name or not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a name without commas and an object")
        unknown = sorted(set(spec) - DAEMON_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
        argv = spec.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ConfigError(f"{where}: argv must be a non-empty list of strings")
        argv = [_with_ports(a, where) for a in argv]
        env = spec.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ConfigError(f"{where}: env must map names to strings")
        cwd = spec.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise ConfigError(f"{where}: cwd must be a string")
        pass_env = spec.get("pass_env") or []
        if not isinstance(pass_env, list) or not all(isinstance(n, str) and n for n in pass_env):
            raise ConfigError(f"{where}: pass_env must be a list of variable names")
        pythonpath = spec.get("pythonpath") or []
        if not isinstance(pythonpath, list) or not all(isinstance(p, str) and p.startswith("/") for p in pythonpath):
            raise ConfigError(f"{where}: pythonpath must be a list of absolute folders")
        secrets_from = spec.get("secrets_from")
        if secrets_from is not None and (not isinstance(secrets_from, str) or not secrets_from):
            raise ConfigError(f"{where}: secrets_from must name the variable that lists the daemon's secrets")
        workers_from = spec.get("workers_from")
        if workers_from is not None and (not isinstance(workers_from, str) or not workers_from):
            raise ConfigError(f"{where}: workers_from must name the variable that says how many workers run")
        if "." in name:
            raise ConfigError(f"{where}: a daemon's name has no dot (init names the workers of one name.N)")
        specs[name] = {
            "argv": argv,
            "pythonpath": tuple(pythonpath),
            "reload_signal": parse_signal(spec.get("reload_signal"), where),
            "env": env,
            "cwd": cwd,
            "pass_env": tuple(pass_env),
            "secrets_from": secrets_from,
            "workers_from": workers_from,
        }
    return specs


def expand(specs: dict[str, dict], names: list[str], environ) -> list[tuple[str, str, dict]]:
    """(daemon name, group, spec) of every daemon to run: one per name, or ``name.1`` .. ``name.N``
    for a daemon with ``workers_from`` (the count resolved here; ConfigError for a bad one)."""
    out = []
    for name in names:
        spec = specs[name]
        var = spec["workers_from"]
        if var is None:
            out.append((name, name, spec))
            continue
        try:
            count = workers.resolve(environ.get(var), workers.cpu_allowance(), var)
        except ValueError as e:
            raise ConfigError(f"{name}: {e}") from None
        for n in range(1, count + 1):
            env = {**spec["env"], workers.WORKERS_ENV: str(count), workers.WORKER_ENV: str(n)}
            out.append((workers.worker_name(name, n), name, {**spec, "env": env}))
    return out


def _child_setup(reload_signal: int | None):
    def setup() -> None:
        # init blocks the signals it waits for; Popen keeps the mask across exec, so undo it here.
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        # Start with the reload signal ignored (dispositions survive exec): a SIGHUP forwarded
        # before the daemon installed its handler is then dropped instead of killing it, and
        # the daemon reads its current config on start anyway.
        if reload_signal is not None:
            signal.signal(reload_signal, signal.SIG_IGN)

    return setup


class Daemon:
    def __init__(self, name: str, spec: dict, group: str | None = None):
        self.name = name
        self.group = group or name  # the daemons.json name: a restart of it restarts every worker
        self.spec = spec
        self.proc: subprocess.Popen | None = None
        self.state = "stopped"  # running | backoff | stopped
        self.restarts = 0
        self.started_at: float | None = None  # wall clock, for status.json
        self.started_mono = 0.0
        self.last_exit: int | None = None
        self.failures = 0  # consecutive short-lived runs: drives the backoff
        self.restart_at: float | None = None  # monotonic time of a pending backoff restart
        self.kill_at: float | None = None  # monotonic time to SIGKILL a child asked to stop
        self.restart_after_stop = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def status(self) -> dict:
        return {
            "pid": self.pid,
            "state": self.state,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "last_exit": self.last_exit,
            "group": self.group,
        }


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def secret_names(specs: dict, environ) -> list[str]:
    """Every secret some daemon gets: the names its ``secrets_from`` variable lists."""
    names: list[str] = []
    for spec in specs.values():
        if spec["secrets_from"]:
            names += [n.strip() for n in environ.get(spec["secrets_from"], "").split(",") if n.strip()]
    return list(dict.fromkeys(names))


def read_secret_files(specs: dict, environ, folder: str) -> dict[str, str]:
    """``environ`` with each daemon secret not in it read from ``folder/<NAME>`` (a Docker
    secret): the value reaches init's memory and its daemon's environment, never the service's."""
    env = dict(environ)
    for name in secret_names(specs, environ):
        if name in env or "/" in name or name.startswith("."):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                env[name] = f.read()
        except FileNotFoundError:
            continue  # not given: the routes that inject it fail, as with an unset variable
        except (OSError, UnicodeDecodeError) as e:
            log(f"cannot read the secret {name} from {folder}: {getattr(e, 'strerror', None) or e}")
    return env


def wait_for_seed(mark: str) -> bool:
    """Block until the host has seeded the bundle's state volume (``mark`` exists); False when
    told to stop first. A restarted task finds the mark at once."""
    stop: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signo, _frame: stop.append(signo))
    try:
        if not os.path.exists(mark):
            log(f"waiting for the host to seed the state ({mark})")
        while not os.path.exists(mark):
            if stop:
                return False
            time.sleep(0.05)
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)


def daemon_env(spec: dict, environ) -> dict[str, str]:
    """The environment one daemon starts with (see load_daemons)."""
    names = list(BASE_ENV) + list(spec["pass_env"])
    if spec["secrets_from"]:
        names.append(spec["secrets_from"])
        names += [n.strip() for n in environ.get(spec["secrets_from"], "").split(",") if n.strip()]
    env = {n: environ[n] for n in names if n in environ}
    if spec["pythonpath"]:
        env["PYTHONPATH"] = os.pathsep.join(spec["pythonpath"])
    env.update(spec["env"])
    return env


class Init:
    def __init__(self, daemons: list[Daemon], run_dir: str, grace: float, environ=None):
        self.environ = dict(os.environ if environ is None else environ)
        self.daemons = daemons
        self.by_name = {d.name: d for d in daemons}
        self.groups: dict[str, list[Daemon]] = {}
        for d in daemons:
            self.groups.setdefault(d.group, []).append(d)
        self.by_pid: dict[int, Daemon] = {}
        self.run_dir = run_dir
        self.grace = grace
        self.shutting_down = False

    # status ------------------------------------------------------------------------------------
    def write_status(self) -> None:
        data = json.dumps({"daemons": {d.name: d.status() for d in self.daemons}}, indent=2) + "\n"
        atomic_write(os.path.join(self.run_dir, STATUS_FILE), data, mode=0o644)

    # children ----------------------------------------------------------------------------------
    def start(self, d: Daemon) -> None:
        d.restart_at = None
        d.kill_at = None
        d.restart_after_stop = False
        env = daemon_env(d.spec, self.environ)
        try:
            # Own process group: stopping a daemon also stops whatever helpers it spawned.
            d.proc = subprocess.Popen(
                d.spec["argv"],
                env=env,
                cwd=d.spec["cwd"],
                preexec_fn=_child_setup(d.spec["reload_signal"]),
                process_group=0,
                close_fds=True,
            )
        except OSError as e:
            # Cannot exec (missing binary...): treat like an immediate crash so it backs off.
            log(f"cannot start {d.name}: {e}")
            d.proc = None
            d.started_at = time.time()
            d.started_mono = time.monotonic()
            self.after_exit(d, 127)
            return
        d.state = "running"
        d.started_at = time.time()
        d.started_mono = time.monotonic()
        self.by_pid[d.proc.pid] = d
        log(f"started {d.name} (pid {d.proc.pid})")

    def after_exit(self, d: Daemon, code: int) -> None:
        """Bookkeeping after d's child ended: restart now, back off, or stay stopped."""
        d.last_exit = code
        d.kill_at = None
        ran = time.monotonic() - d.started_mono
        if self.shutting_down:
            d.state = "stopped"
            log(f"{d.name} {describe_exit(code)}")
            return
        if d.restart_after_stop:
            log(f"{d.name} {describe_exit(code)}; restarting as requested")
            d.restarts += 1
            d.failures = 0
            self.start(d)
            return
        if ran >= HEALTHY_AFTER:
            d.failures = 0
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * (2**d.failures))
        d.failures += 1
        d.state = "backoff"
        d.restart_at = time.monotonic() + delay
        log(f"{d.name} {describe_exit(code)}; restarting in {delay:g}s")

    def signal_group(self, d: Daemon, sig: int) -> None:
        if d.proc is None:
            return
        try:
            os.killpg(d.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            # The daemon moved to another process group: signal the process itself.
            try:
                os.kill(d.proc.pid, sig)
            except ProcessLookupError:
                pass

    def request_stop(self, d: Daemon, restart: bool) -> None:
        if d.proc is None:
            if restart and not self.shutting_down:
                log(f"restarting {d.name} as requested")
                d.restarts += 1
                d.failures = 0
                self.start(d)
            elif not restart:
                d.state = "stopped"
                d.restart_at = None
            return
        d.restart_after_stop = restart
        if d.kill_at is None:
            d.kill_at = time.monotonic() + self.grace
            self.signal_group(d, signal.SIGTERM)

    def reap(self) -> bool:
        """Collect every exited child, ours or an orphan handed to PID 1. True when a daemon ended."""
        changed = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return changed
            if pid == 0:
                return changed
            d = self.by_pid.pop(pid, None)
            if d is None:
                continue  # an orphan: reaping it is all PID 1 owes it
            code = os.waitstatus_to_exitcode(status)
            if d.kill_at is not None:
                # Stopped on purpose: helpers left in its process group go with it.
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if d.proc is not None:
                d.proc.returncode = code  # we reaped it: keep Popen from waiting again
            d.proc = None
            self.after_exit(d, code)
            changed = True

    # signals -----------------------------------------------------------------------------------
    def on_sighup(self) -> None:
        for d in self.daemons:
            sig = d.spec["reload_signal"]
            if sig is not None and d.proc is not None:
                log(f"SIGHUP: sending {signal.Signals(sig).name} to {d.name} (pid {d.pid})")
                try:
                    os.kill(d.proc.pid, sig)
                except ProcessLookupError:
                    pass

    def on_sigusr1(self) -> None:
        path = os.path.join(self.run_dir, RESTART_FILE)
        taking = f"{path}.taking"
        try:
            # Rename first: a client appending at the same moment starts a fresh file.
            os.replace(path, taking)
        except FileNotFoundError:
            log(f"SIGUSR1 without a restart request in {path}")
            return
        with open(taking, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        os.unlink(taking)
        seen = set()
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            found = [self.by_name[name]] if name in self.by_name else self.groups.get(name, [])
            if not found:
                log(f"restart request for unknown daemon {name!r}: ignored")
                continue
            for d in found:
                log(f"restart of {d.name} requested")
                self.request_stop(d, restart=True)

    def begin_shutdown(self, signame: str) -> None:
        if self.shutting_down:
            log(f"{signame} again: killing what is left")
            for d in self.daemons:
                self.signal_group(d, signal.SIGKILL)
            return
        log(f"{signame}: stopping all daemons (grace {self.grace:g}s)")
        self.shutting_down = True
        for d in self.daemons:
            self.request_stop(d, restart=False)

    # main loop ---------------------------------------------------------------------------------
    def next_timeout(self) -> float:
        deadlines = [d.restart_at for d in self.daemons if d.restart_at is not None]
        deadlines += [d.kill_at for d in self.daemons if d.kill_at is not None]
        if not deadlines:
            return 60.0
        return max(0.0, min(deadlines) - time.monotonic())

    def run_timers(self) -> bool:
        now = time.monotonic()
        changed = False
        for d in self.daemons:
            if d.kill_at is not None and now >= d.kill_at and d.proc is not None:
                log(f"{d.name} (pid {d.pid}) did not stop within {self.grace:g}s: SIGKILL")
                self.signal_group(d, signal.SIGKILL)
                d.kill_at = None
            if d.restart_at is not None and now >= d.restart_at and not self.shutting_down:
                d.restarts += 1
                self.start(d)
                changed = True
        return changed

    def run(self) -> int:
        os.makedirs(self.run_dir, exist_ok=True)
        try:
            os.unlink(os.path.join(self.run_dir, RESTART_FILE))  # requests of an earlier run
        except FileNotFoundError:
            pass
        for d in self.daemons:
            self.start(d)
        self.write_status()
        while True:
            if self.shutting_down and not any(d.proc is not None for d in self.daemons):
                self.write_status()
                log("all daemons stopped; exiting")
                return 0
            info = signal.sigtimedwait(HANDLED, self.next_timeout())
            changed = False
            if info is not None:
                sig = info.si_signo
                if sig in (signal.SIGTERM, signal.SIGINT):
                    self.begin_shutdown(signal.Signals(sig).name)
                    changed = True
                elif sig == signal.SIGHUP:
                    self.on_sighup()
                elif sig == signal.SIGUSR1:
                    self.on_sigusr1()
                    changed = True
            # SIGCHLDs coalesce, and a child may end while we handle another signal: always reap.
            changed |= self.reap()
            changed |= self.run_timers()
            if changed:
                self.write_status()


def supervise() -> int:
    path = os.environ.get("BOTTLE_INIT_DAEMONS_FILE", DEFAULT_DAEMONS_FILE)
    try:
        specs = load_daemons(path)
    except ConfigError as e:
        log(str(e))
        return 2
    wanted = os.environ.get("BOTTLE_DAEMONS")
    # Unset: everything in the file; set but empty: no daemon (init only reaps).
    names = list(specs) if wanted is None else [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in specs]
    if unknown:
        log(f"unknown daemon {unknown[0]!r} in BOTTLE_DAEMONS: not in {path} (known: {', '.join(specs) or 'none'})")
        return 2
    names = list(dict.fromkeys(names))
    try:
        grace = float(os.environ.get("BOTTLE_INIT_GRACE", DEFAULT_GRACE))
    except ValueError:
        log(f"BOTTLE_INIT_GRACE must be a number of seconds, got {os.environ['BOTTLE_INIT_GRACE']!r}")
        return 2
    run_dir = os.environ.get("BOTTLE_INIT_RUN_DIR", DEFAULT_RUN_DIR)
    seed_mark = os.environ.get("BOTTLE_SEED_MARK")
    if seed_mark and not wait_for_seed(seed_mark):
        log("stopped before the state was seeded")
        return 0
    environ = dict(os.environ)
    secrets_dir = os.environ.get("BOTTLE_SECRETS_DIR")
    if secrets_dir:
        environ = read_secret_files({n: specs[n] for n in names}, environ, secrets_dir)
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    libc = None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        # init holds every daemon's secrets in its environment: not dumpable, so a daemon of the
        # same uid cannot read /proc/1/environ (or /proc/1/mem) to get another daemon's.
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        log("cannot make init undumpable: daemons could read its environment")
    if os.getpid() != 1 and libc is not None:
        # Not PID 1 (e.g. under docker's own init): become the subreaper so orphans still come here.
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        run = expand(specs, names, environ)
    except ConfigError as e:
        log(str(e))
        return 2
    if not names:
        log("no daemons requested (BOTTLE_DAEMONS is empty); only reaping")
    init = Init([Daemon(n, spec, group) for n, group, spec in run], run_dir, grace, environ)
    return init.run()


# client ----------------------------------------------------------------------------------------
def _read_status(run_dir: str) -> dict | None:
    try:
        with open(os.path.join(run_dir, STATUS_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def cmd_status(run_dir: str) -> int:
    path = os.path.join(run_dir, STATUS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            sys.stdout.write(f.read())
    except OSError as e:
        print(f"bottle_init: no status at {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


def cmd_restart(run_dir: str, names: list[str], wait: bool) -> int:
    path = os.environ.get("BOTTLE_INIT_DAEMONS_FILE", DEFAULT_DAEMONS_FILE)
    try:
        known = load_daemons(path)
    except ConfigError:
        known = None  # cannot check here: init logs unknown names itself
    if known is not None:
        unknown = [n for n in names if n not in known and n.rpartition(".")[0] not in known]
        if unknown:
            print(f"bottle_init: unknown daemon {unknown[0]!r}: not in {path}", file=sys.stderr)
            return 2
    target = int(os.environ.get("BOTTLE_INIT_PID", "1"))
    before = (_read_status(run_dir) or {}).get("daemons", {})
    os.makedirs(run_dir, exist_ok=True)
    for n in names:  # one line each; init takes the file aside and reads it on SIGUSR1
        append_line(os.path.join(run_dir, RESTART_FILE), n.encode(), max_bytes=RESTART_FILE_CAP, keep=0)
    try:
        os.kill(target, signal.SIGUSR1)
    except OSError as e:
        print(f"bottle_init: cannot signal init (pid {target}): {e.strerror or e}", file=sys.stderr)
        return 1
    if not wait:
        return 0
    grace = float(os.environ.get("BOTTLE_INIT_GRACE", DEFAULT_GRACE))
    deadline = time.monotonic() + grace + 5.0
    # A name of several workers (egress) waits for each of them (egress.1, egress.2, ...).
    pending = {d for n in names for d in (sorted(k for k, v in before.items() if v.get("group") == n) or [n])}
    while pending and time.monotonic() < deadline:
        now = (_read_status(run_dir) or {}).get("daemons", {})
        for n in sorted(pending):
            old, new = before.get(n, {}), now.get(n, {})
            if new.get("restarts", 0) > old.get("restarts", 0) and new.get("state") == "running":
                print(f"restarted {n} (pid {new.get('pid')})")
                pending.discard(n)
        time.sleep(0.05)
    if pending:
        print(f"bottle_init: no restart seen for {', '.join(sorted(pending))}", file=sys.stderr)
        return 1
    return 0


USAGE = """usage: bottle_init.py                  run as the supervisor (PID 1)
       bottle_init.py status           print status.json
       bottle_init.py restart [--no-wait] NAME...
                                       restart daemons in place via SIGUSR1"""


def main(argv: list[str]) -> int:
    if not argv:
        return supervise()
    run_dir = os.environ.get("BOTTLE_INIT_RUN_DIR", DEFAULT_RUN_DIR)
    cmd, args = argv[0], argv[1:]
    if cmd == "status" and not args:
        return cmd_status(run_dir)
    if cmd == "restart":
        wait = "--no-wait" not in args
        names = [a for a in args if a != "--no-wait"]
        if names and not any(n.startswith("-") for n in names):
            return cmd_restart(run_dir, names, wait)
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
