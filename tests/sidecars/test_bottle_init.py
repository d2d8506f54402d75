"""The sidecar bundle's init supervisor (sidecars/init/bottle_init.py), run for real as a subprocess
with small Python daemons that record their pids and the signals they receive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.waiting import wait_for

INIT = Path(__file__).resolve().parents[2] / "sidecars" / "init" / "bottle_init.py"

# A daemon: records its pid, logs every signal it gets; modes decide how it behaves.
DAEMON = textwrap.dedent(
    """
    import os, signal, sys, time
    name, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    def note(kind, text):
        with open(os.path.join(out, f"{name}.{kind}"), "a") as f:
            f.write(text + "\\n")
    if mode == "slow-start":
        time.sleep(1.0)  # a daemon still starting up: no handlers yet
    if mode == "crash":
        note("pids", str(os.getpid()))
        sys.exit(1)
    def on_signal(sig, _frame):
        note("signals", signal.Signals(sig).name)
        if sig == signal.SIGTERM and mode != "ignore-term":
            sys.exit(0)
    for s in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTERM):
        signal.signal(s, on_signal)
    note("pids", str(os.getpid()))  # only now: the pid file doubles as "handlers installed"
    if mode == "orphan":
        # Double fork: the grandchild is re-parented to init, lives briefly, then must be reaped.
        if os.fork() == 0:
            if os.fork() == 0:
                note("orphans", str(os.getpid()))
                time.sleep(0.5)
                os._exit(0)
            os._exit(0)
        os.wait()
    while True:
        time.sleep(0.05)
    """
)


def alive(pid: int) -> bool:
    """True for a running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Bundle:
    """One init process with its temp daemons.json, run dir and daemon output dir."""

    def __init__(self, tmp: Path, daemons: dict, names: str, grace: float = 5.0):
        self.tmp = tmp
        self.out = tmp / "out"
        self.run_dir = tmp / "run"
        self.out.mkdir()
        script = tmp / "daemon.py"
        script.write_text(DAEMON)
        spec = {}
        for name, d in daemons.items():
            argv = d.get("argv") or [sys.executable, str(script), name, str(self.out), d.get("mode", "sleep")]
            spec[name] = {"argv": argv, **{k: v for k, v in d.items() if k not in ("mode", "argv")}}
        self.daemons_file = tmp / "daemons.json"
        self.daemons_file.write_text(json.dumps(spec))
        self.env = {
            **os.environ,
            "PYTHONPATH": str(INIT.parents[1] / "common"),  # as the image sets it for init
            "BOTTLE_INIT_DAEMONS_FILE": str(self.daemons_file),
            "BOTTLE_INIT_RUN_DIR": str(self.run_dir),
            "BOTTLE_INIT_GRACE": str(grace),
            "BOTTLE_DAEMONS": names,
        }
        self.stderr_path = tmp / "init.stderr"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Bundle:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(INIT)], env=self.env, stdin=subprocess.DEVNULL, stderr=err
            )
        return self

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def status(self) -> dict:
        try:
            return json.loads((self.run_dir / "status.json").read_text())["daemons"]
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def daemon(self, name: str) -> dict:
        return self.status().get(name, {})

    def pids(self, name: str) -> list[int]:
        path = self.out / f"{name}.pids"
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    def signals(self, name: str) -> list[str]:
        path = self.out / f"{name}.signals"
        return path.read_text().split() if path.exists() else []

    def running(self, name: str) -> dict | None:
        """The daemon's status once init reports it running and it has set up its signal handlers."""
        d = self.daemon(name)
        ok = d.get("state") == "running" and d.get("pid") in self.pids(name) and alive(d["pid"])
        return d if ok else None

    def client(self, *args: str) -> subprocess.CompletedProcess:
        env = {**self.env, "BOTTLE_INIT_PID": str(self.proc.pid)}
        return subprocess.run([sys.executable, str(INIT), *args], env=env, capture_output=True, text=True, timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Whatever a failed test left behind.
        for path in self.out.glob("*.pids"):
            for pid in map(int, path.read_text().split()):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def bundle(tmp_path):
    made: list[Bundle] = []

    def make(daemons: dict, names: str, grace: float = 5.0) -> Bundle:
        b = Bundle(tmp_path, daemons, names, grace)
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.stop()


def test_starts_only_the_named_daemons_in_order(bundle) -> None:
    b = bundle({"a": {}, "b": {}, "c": {}}, "b,a")
    wait_for(lambda: b.running("a") and b.running("b"), what="a and b running")
    status = b.status()
    assert set(status) == {"a", "b"}
    for name in ("a", "b"):
        d = status[name]
        assert d["restarts"] == 0 and d["last_exit"] is None
        assert isinstance(d["started_at"], float) and abs(d["started_at"] - time.time()) < 30
        assert b.pids(name) == [d["pid"]]
    assert b.pids("c") == []
    err = b.stderr
    assert f"init: started b (pid {status['b']['pid']})" in err
    assert err.index("started b") < err.index("started a")


def test_unknown_daemon_is_refused_before_anything_starts(bundle) -> None:
    b = bundle({"a": {}}, "a,nope")
    assert b.proc.wait(timeout=5) == 2
    lines = b.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "nope" in lines[0] and str(b.daemons_file) in lines[0]
    assert b.pids("a") == [] and not (b.run_dir / "status.json").exists()


def test_a_crashing_daemon_is_restarted_with_backoff_and_the_other_keeps_its_pid(bundle) -> None:
    b = bundle({"steady": {}, "crash": {"mode": "crash"}}, "steady,crash")
    steady = wait_for(lambda: b.running("steady"), what="steady running")
    wait_for(lambda: len(b.pids("crash")) >= 3, timeout=6, what="two restarts of crash")
    crash = b.daemon("crash")
    assert crash["last_exit"] == 1 and crash["state"] in ("backoff", "running")
    assert crash["restarts"] >= 2
    assert b.running("steady")["pid"] == steady["pid"] and b.pids("steady") == [steady["pid"]]
    err = b.stderr
    assert "init: crash exited with status 1; restarting in 1s" in err
    assert "init: crash exited with status 1; restarting in 2s" in err
    assert b.proc.poll() is None


def test_a_daemon_that_cannot_be_executed_backs_off_without_killing_init(bundle) -> None:
    b = bundle({"missing": {"argv": ["/nonexistent/daemon"]}, "a": {}}, "missing,a")
    wait_for(lambda: b.daemon("missing").get("state") == "backoff", what="missing in backoff")
    assert b.daemon("missing")["last_exit"] == 127 and b.daemon("missing")["pid"] is None
    wait_for(lambda: b.running("a"), what="a running")
    assert "cannot start missing" in b.stderr and b.proc.poll() is None


def test_sighup_is_forwarded_as_each_daemons_reload_signal(bundle) -> None:
    b = bundle({"hup": {"reload_signal": "HUP"}, "usr2": {"reload_signal": "USR2"}, "plain": {}}, "hup,usr2,plain")
    before = wait_for(lambda: all(b.running(n) for n in ("hup", "usr2", "plain")) and b.status(), what="all running")
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: b.signals("hup") == ["SIGHUP"] and b.signals("usr2") == ["SIGUSR2"], what="reload signals")
    time.sleep(0.2)  # give a wrongly forwarded signal the chance to show up
    assert b.signals("plain") == []
    assert {n: d["pid"] for n, d in b.status().items()} == {n: d["pid"] for n, d in before.items()}
    assert "SIGHUP: sending SIGHUP to hup" in b.stderr


def test_a_reload_signal_before_the_daemon_is_ready_does_not_kill_it(bundle) -> None:
    b = bundle({"slow": {"mode": "slow-start", "reload_signal": "HUP"}}, "slow")
    pid = wait_for(lambda: b.daemon("slow").get("pid"), what="slow started")
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "sending SIGHUP to slow" in b.stderr, what="SIGHUP forwarded")
    wait_for(lambda: b.running("slow"), what="slow running")
    assert b.daemon("slow")["pid"] == pid and b.daemon("slow")["restarts"] == 0
    b.proc.send_signal(signal.SIGHUP)  # once it handles SIGHUP itself, reloads reach it
    wait_for(lambda: b.signals("slow") == ["SIGHUP"], what="second SIGHUP handled")


def test_restart_request_restarts_only_that_daemon(bundle) -> None:
    b = bundle({"a": {}, "b": {}}, "a,b")
    a0 = wait_for(lambda: b.running("a"), what="a running")
    b0 = wait_for(lambda: b.running("b"), what="b running")
    result = b.client("restart", "a")
    assert result.returncode == 0, result.stderr
    # init answers once it started the new child; that child sets up its handlers a moment later
    a1 = wait_for(lambda: (d := b.running("a")) and d["pid"] != a0["pid"] and d, what="a running again")
    assert a1["restarts"] == 1
    assert f"restarted a (pid {a1['pid']})" in result.stdout
    assert not alive(a0["pid"]) and b.signals("a") == ["SIGTERM"]
    assert b.running("b")["pid"] == b0["pid"] and b.daemon("b")["restarts"] == 0
    assert not (b.run_dir / "restart").exists()


def test_restart_request_names_unknown_daemons_in_the_log(bundle) -> None:
    b = bundle({"a": {}}, "a")
    a0 = wait_for(lambda: b.running("a"), what="a running")
    # Written directly: the client refuses unknown names itself.
    (b.run_dir / "restart").write_text("ghost\n")
    b.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "unknown daemon 'ghost'" in b.stderr, what="log line about ghost")
    assert b.running("a")["pid"] == a0["pid"]
    refused = b.client("restart", "ghost")
    assert refused.returncode == 2 and "ghost" in refused.stderr


def test_sigterm_stops_every_daemon_and_exits_0_quickly(bundle) -> None:
    b = bundle({"a": {}, "b": {}}, "a,b", grace=5.0)
    wait_for(lambda: b.running("a") and b.running("b"), what="both running")
    pids = [b.daemon(n)["pid"] for n in ("a", "b")]
    t0 = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(timeout=5) == 0
    assert time.monotonic() - t0 < 2.0  # children exit at once: no waiting out the grace
    assert not any(alive(p) for p in pids)
    assert all(d["state"] == "stopped" and d["pid"] is None for d in b.status().values())
    assert b.signals("a") == ["SIGTERM"] and b.signals("b") == ["SIGTERM"]


def test_a_daemon_ignoring_sigterm_is_killed_after_the_grace(bundle) -> None:
    b = bundle({"stubborn": {"mode": "ignore-term"}, "a": {}}, "stubborn,a", grace=0.5)
    stubborn = wait_for(lambda: b.running("stubborn"), what="stubborn running")
    wait_for(lambda: b.running("a"), what="a running")
    t0 = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(timeout=5) == 0
    took = time.monotonic() - t0
    assert 0.4 <= took < 3.0
    assert not alive(stubborn["pid"])
    assert b.signals("stubborn") == ["SIGTERM"]
    assert b.daemon("stubborn")["last_exit"] == -signal.SIGKILL
    assert b.daemon("a")["last_exit"] == 0
    assert "did not stop within 0.5s: SIGKILL" in b.stderr


def test_orphans_handed_to_init_are_reaped(bundle) -> None:
    b = bundle({"parent": {"mode": "orphan"}}, "parent")

    def orphan_pid() -> int | None:
        # The daemon may be caught between creating the file and writing the pid into it.
        path = b.out / "parent.orphans"
        text = path.read_text().strip() if path.exists() else ""
        return int(text) if text.isdigit() else None

    orphan = wait_for(orphan_pid, what="orphan pid")

    def ppid() -> int | None:
        try:
            with open(f"/proc/{orphan}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[1])
        except FileNotFoundError:
            return None

    # Not being PID 1 here, init makes itself the subreaper: the orphan must be handed to it...
    wait_for(lambda: ppid() == b.proc.pid, timeout=2, what="orphan re-parented to init")
    # ...and once it exits it must vanish: left unreaped it would stay a zombie in /proc.
    wait_for(lambda: not os.path.exists(f"/proc/{orphan}"), timeout=3, what="orphan reaped")


def test_status_command_prints_status_json(bundle) -> None:
    b = bundle({"a": {}}, "a")
    wait_for(lambda: b.running("a"), what="a running")
    result = b.client("status")
    assert result.returncode == 0
    assert json.loads(result.stdout)["daemons"]["a"]["state"] == "running"
    usage = b.client("frobnicate")
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_shared_atomic_write_replaces_whole_files_and_is_the_bundles_only_one(tmp_path) -> None:
    from bottle_contract.files import atomic_write

    target = tmp_path / "status.json"
    target.write_text("old")
    atomic_write(str(target), "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["status.json"]
    with pytest.raises(TypeError):
        atomic_write(str(target), 42)  # type: ignore[arg-type]
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["status.json"]
    # init and the egress addon use it; no other copy of the tmp-then-replace dance is left.
    sources = [p for p in (INIT.parents[1]).rglob("*.py") if "common" not in p.parts]
    assert [p.name for p in sources if "os.replace(tmp" in p.read_text() or ".tmp" in p.read_text()] == []
