"""Fixed data for the console's Pilot and snapshot tests: a fake engine (the docker CLI's process
boundary) and a home whose state folders hold real proposal files written by the real library."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bottle_contract.files import atomic_write
from bottle_contract.usage import Budget, Ledger, default_prices
from bottle_contract.usage import write_usage as write_usage_doc
from bottle_tui import proposals
from bottle_tui.backends.docker.compose import to_yaml
from bottle_tui.backends.docker.engine import BottleInfo, EngineStatus
from bottle_tui.console.app import BottleConsole
from bottle_tui.errors import BottleError
from bottle_tui.state import state_dir

NOW = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
DLP = {"body": True, "disabled_rules": [], "max_body_bytes": 8388608}
ROUTES = {
    "version": 1,
    "bottle": "dev",
    "dlp": DLP,
    "routes": [
        {
            "host": "api.anthropic.com",
            "ports": [443],
            "methods": [],
            "paths": [],
            "schemes": ["https"],
            "auth": None,
            "dlp": {**DLP, "body": False},
            "model_tools": [],
            "once": None,
        },
    ],
}


def info(slug: str, up: int = 2, agent: str = "implementer", started: str = "2026-11-27T07:00:00+00:00") -> BottleInfo:
    services = {"agent": "running", "sidecars": "running" if up == 2 else "created"}
    return BottleInfo(
        slug=slug,
        project=f"claude-bottle-{slug}",
        agent=agent,
        bottle="dev",
        backend="docker",
        started_at=started,
        home="",
        status="running(2)",
        services=services,
    )


class FakeEngine:
    """Stands in for the docker CLI at the process boundary; tests change what it reports."""

    def __init__(self) -> None:
        self.bottles: list[BottleInfo] = []
        self.status = EngineStatus(True, "20.10.24", "2.40.3")
        self.calls = 0

    async def discover(self) -> list[BottleInfo]:
        self.calls += 1
        if not self.status.ok:
            raise BottleError(self.status.problem)
        return list(self.bottles)

    async def engine_status(self) -> EngineStatus:
        return self.status


def two_bottles() -> FakeEngine:
    """The Pilot tests' engine: implementer-aaaaaa up, reviewer-bbbbbb with its bundle only created."""
    f = FakeEngine()
    f.bottles = [info("implementer-aaaaaa"), info("reviewer-bbbbbb", up=1, agent="reviewer")]
    return f


class RecordingConsole(BottleConsole):
    """The console with its terminal bell counted (the bell is a write to the terminal)."""

    bells = 0

    def bell(self) -> None:
        self.bells += 1


def make_state(home: Path, slug: str) -> proposals.StateDir:
    s = state_dir(home, slug)
    if not s.path.exists():
        s.create()
        atomic_write(proposals.routes_path(s), to_yaml(ROUTES))
    return s


def write_proposal(
    home: Path,
    slug: str,
    *,
    host: str = "pypi.example.org",
    reason: str = "need packages",
    draft: bool = False,
    created_at: str = "2026-11-27T07:58:00.000+00:00",
    pid: str | None = None,
    kind: str = "egress-route",
    change: dict | None = None,
) -> proposals.Proposal:
    s = make_state(home, slug)
    p = proposals.create(
        s,
        kind,
        change or {"host": host, "ports": [443], "methods": ["GET"], "paths": ["/simple/*"]},
        reason,
        draft=draft,
    )
    data = dict(p.data, created_at=created_at)
    if pid:
        data["id"] = pid
        os.unlink(p.path)
        path = p.path.with_name(f"{pid}.json")
    else:
        path = p.path
    atomic_write(path, json.dumps(data, indent=2) + "\n", mode=0o644)
    return proposals.Proposal(data, path)


def write_status(
    home: Path, slug: str, state: str, since: str = "2026-11-27T07:59:30+00:00", event: str = "Notification"
) -> None:
    s = make_state(home, slug)
    s.status.mkdir(exist_ok=True)
    atomic_write(
        s.status / "status.json", json.dumps({"version": 1, "state": state, "since": since, "event": event}), mode=0o644
    )


def make_app(home: Path, fake: FakeEngine, **kw) -> RecordingConsole:
    kw.setdefault("watch_files", False)
    return RecordingConsole(
        home, discover=fake.discover, status=fake.engine_status, watch_events=False, clock=lambda: NOW, tick=False, **kw
    )


def rows(app: BottleConsole, table_id: str) -> list[list[str]]:
    table = app.query_one(f"#{table_id}")
    return [[str(c) for c in table.get_row(key)] for key in table.rows]


def text_of(app: BottleConsole, selector: str) -> str:
    """The plain text a Static (or Label) shows."""
    return str(app.screen.query_one(selector).render())


async def until(pilot, predicate, what: str, timeout: float = 5.0) -> None:
    """Let the app run until ``predicate()`` holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.02)
        if predicate():
            return
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def cli_process(home: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`bottle-tui --home HOME ARGS` as its own process with no docker on its PATH (its console
    shows the engine banner and runs on: no engine is touched), outside any tmux; stdout piped.
    Ended by SIGTERM to its process group (then SIGKILL), whatever the test did."""
    empty = Path(tempfile.mkdtemp(prefix="bottle-tui-nobin-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")} | {"PATH": str(empty)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bottle_tui", "--home", str(home), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        empty.rmdir()


def write_usage(
    home: Path,
    slug: str,
    *,
    output_tokens: int,
    model: str = "claude-sonnet-4-5-20250929",
    budget: Budget | None = None,
    cache_read: int = 150_000,
) -> None:
    """usage.json as egress writes it (through the contract's Ledger), for a bottle of ``home``."""
    ledger = Ledger()
    c = ledger.counts(model)
    c.update(input_tokens=1_200, output_tokens=output_tokens, cache_read_input_tokens=cache_read, requests=12)
    state = make_state(home, slug)
    state.egress.mkdir(parents=True, exist_ok=True)
    write_usage_doc(state.usage, ledger.to_doc(slug, default_prices(), budget, 1_796_000_000.0))
