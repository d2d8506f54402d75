"""gate.py as a real process on loopback, in front of a local (file://) upstream: clone and fetch
through it, its one-line errors, and the pushes its hook decides without gitleaks' verdict (refusals,
deletes, and failing closed when gitleaks cannot run). Scans with the real gitleaks run in the
integration tests, inside the sidecars image that carries it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.sidecars import daemon_env
from tests.support.waiting import wait_for

GATE = Path(__file__).resolve().parents[2] / "sidecars" / "gitgate" / "gate.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }


class Gate:
    def __init__(
        self, tmp: Path, protected: list[str], gitleaks: str, upstream_url: str | None = None, refresh: int = 10
    ):
        self.tmp = tmp
        self.env = git_env(tmp)
        self.upstream = tmp / "upstream.git"
        self.state = tmp / "state"
        self.state.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/upstream.git"
        self.git("init", "-q", "--bare", "-b", "main", str(self.upstream))
        seed = tmp / "seed"
        self.git("init", "-q", "-b", "main", str(seed))
        self.commit(seed, "README", "first")
        self.git("-C", str(seed), "push", "-q", str(self.upstream), "main", "main:refs/heads/old-topic")
        self.seed = seed
        (self.state / "gate.json").write_text(
            json.dumps(
                {
                    "version": 1,
                    "upstream": upstream_url or f"file://{self.upstream}",
                    "review": False,
                    "slug": "coder-1",
                    "start": None,
                    "repo": "upstream",
                    "branch": "main",
                    "protected": protected,
                    "credentials_env": None,
                    "port": self.port,
                    "listen_alias": "git-gate",
                    "refresh_timeout_seconds": refresh,
                    "first_mirror_timeout_seconds": 60,
                }
            )
        )
        self.gitleaks = gitleaks
        self.start("gate.log")

    def start(self, log: str) -> None:
        (self.state / "ready").unlink(missing_ok=True)
        env = daemon_env("git-gate", {**self.env, "GIT_GATE_LISTEN": "127.0.0.1", "GIT_GATE_GITLEAKS": self.gitleaks})
        self.proc = subprocess.Popen(
            [sys.executable, str(GATE), str(self.state)],
            env=env,
            stderr=open(self.tmp / log, "w"),
            stdin=subprocess.DEVNULL,
        )
        wait_for(
            lambda: (self.state / "ready").exists() or self.proc.poll() is not None,
            timeout=10,
            what="the gate's ready file",
        )
        assert self.proc.poll() is None, (self.tmp / log).read_text()

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["git", *args], env=self.env, capture_output=True, text=True, timeout=60)
        if check and out.returncode:
            raise AssertionError(f"git {' '.join(args)}: {out.stderr}")
        return out

    def commit(self, repo: Path, name: str, text: str) -> str:
        (repo / name).write_text(text)
        self.git("-C", str(repo), "add", name)
        self.git("-C", str(repo), "commit", "-qm", f"{name}: {text}")
        return self.git("-C", str(repo), "rev-parse", "HEAD").stdout.strip()

    def upstream_rev(self, ref: str) -> str | None:
        return (
            self.git(
                "--git-dir", str(self.upstream), "rev-parse", "--verify", "--quiet", ref, check=False
            ).stdout.strip()
            or None
        )

    def decisions(self) -> list[dict]:
        return [json.loads(line) for line in (self.state / "pushes.jsonl").read_text().splitlines()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def gate(tmp_path: Path):
    g = Gate(tmp_path, ["main", "release/*"], gitleaks=str(tmp_path / "no-gitleaks-here"))
    yield g
    g.stop()


def clone(gate: Gate) -> Path:
    work = gate.tmp / "work"
    gate.git("clone", "-q", gate.url, str(work))
    return work


def test_clone_and_fetch_through_the_gate_follow_upstream(gate: Gate) -> None:
    work = clone(gate)
    assert gate.git("-C", str(work), "log", "-1", "--format=%s").stdout.strip() == "README: first"
    assert gate.git("-C", str(work), "remote", "get-url", "origin").stdout.strip() == gate.url
    newer = gate.commit(gate.seed, "README", "second")
    gate.git("-C", str(gate.seed), "push", "-q", str(gate.upstream), "main")
    gate.git("-C", str(work), "fetch", "-q")
    assert gate.git("-C", str(work), "rev-parse", "origin/main").stdout.strip() == newer


def test_protected_branches_are_refused_before_anything_is_scanned(gate: Gate) -> None:
    work = clone(gate)
    gate.commit(work, "x", "x")
    before = gate.upstream_rev("refs/heads/main")
    for refspec in ("HEAD:main", "HEAD:release/9", ":main"):
        out = gate.git("-C", str(work), "push", "origin", refspec, check=False)
        assert out.returncode != 0 and "remote: git-gate: push rejected: refs/heads/" in out.stderr, out.stderr
        assert "is protected (git.protected:" in out.stderr
    assert gate.upstream_rev("refs/heads/main") == before and gate.upstream_rev("refs/heads/release/9") is None
    assert [d["reason"] for d in gate.decisions()] == ["refused"] * 3


def test_a_push_is_refused_when_gitleaks_cannot_run(gate: Gate) -> None:
    """Fail closed: no verdict from the scanner means nothing goes upstream."""
    work = clone(gate)
    gate.commit(work, "x", "x")
    out = gate.git("-C", str(work), "push", "origin", "HEAD:refs/heads/topic", check=False)
    assert out.returncode != 0 and "git-gate: push rejected: cannot run gitleaks" in out.stderr, out.stderr
    assert gate.upstream_rev("refs/heads/topic") is None
    assert gate.decisions()[-1]["decision"] == "rejected"


def test_deleting_an_unprotected_branch_is_forwarded_upstream(gate: Gate) -> None:
    work = clone(gate)
    out = gate.git("-C", str(work), "push", "origin", ":old-topic", check=False)
    assert out.returncode == 0 and "scanned clean and pushed upstream: refs/heads/old-topic" in out.stderr, out.stderr
    assert gate.upstream_rev("refs/heads/old-topic") is None
    assert gate.decisions()[-1]["decision"] == "accepted"


def test_a_stale_push_is_refused_and_upstream_keeps_its_commits(gate: Gate) -> None:
    """The gate refreshes before a push, so the agent learns upstream moved ('fetch first')."""
    work = clone(gate)
    upstream_head = gate.commit(gate.seed, "README", "upstream moved")
    gate.git("-C", str(gate.seed), "push", "-q", str(gate.upstream), "main:old-topic")
    gate.git("-C", str(work), "checkout", "-q", "-b", "old-topic", "--track", "origin/old-topic")
    gate.commit(work, "y", "y")
    out = gate.git("-C", str(work), "push", "origin", "old-topic", check=False)
    assert out.returncode != 0 and "fetch first" in out.stderr, out.stderr
    assert gate.upstream_rev("refs/heads/old-topic") == upstream_head


def test_only_the_smart_http_urls_of_the_one_repository_are_served(gate: Gate) -> None:
    import urllib.error
    import urllib.request

    for path in ("/upstream.git/HEAD", "/other.git/info/refs?service=git-upload-pack", "/upstream.git/info/refs"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{gate.port}{path}", timeout=5)
        assert err.value.code == 404
        assert err.value.read().decode().startswith("git-gate: only the smart HTTP protocol of http://git-gate:")


def first_clone_error(tmp_path: Path, upstream_url: str, refresh: int = 10) -> str:
    """What a clone through a fresh gate in front of ``upstream_url`` prints when it fails."""
    g = Gate(tmp_path, [], gitleaks="gitleaks", upstream_url=upstream_url, refresh=refresh)
    try:
        out = g.git("clone", "-q", g.url, str(tmp_path / "w"), check=False)
        assert out.returncode != 0
        return out.stderr.strip()
    finally:
        g.stop()


def test_an_unreachable_upstream_is_a_one_line_remote_error(tmp_path: Path) -> None:
    said = first_clone_error(tmp_path, f"file://{tmp_path}/nowhere.git")
    assert (
        said
        == f"fatal: remote error: git-gate: upstream not reachable: cannot fetch file://{tmp_path}/nowhere.git: fatal: '{tmp_path}/nowhere.git' does not appear to be a git repository"
    )


def test_a_restarted_gate_serves_its_last_mirror_while_upstream_is_away(gate: Gate) -> None:
    clone(gate)  # the mirror now holds upstream's refs
    gate.stop()
    gate.upstream.rename(gate.tmp / "away.git")
    gate.start("gate2.log")
    again = gate.git("clone", "-q", gate.url, str(gate.tmp / "again"), check=False)
    assert again.returncode == 0, again.stderr
    assert "cannot fetch" in (gate.tmp / "gate2.log").read_text()


def test_a_slow_first_mirror_answers_in_bounded_time(tmp_path: Path) -> None:
    """An upstream that takes long for the first fetch (here: never answers) does not hold a clone
    beyond the refresh bound: the agent is told the mirror is still being taken."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/slow.git"
    try:
        said = first_clone_error(tmp_path, url, refresh=1)
    finally:
        silent.close()
    assert (
        said
        == f"fatal: remote error: git-gate: upstream not mirrored yet: the first fetch of {url} is still running; try again in a minute"
    )


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("Threads:")))


def test_idle_and_half_sent_connections_cost_the_gate_no_threads_and_lock_nobody_out(gate: Gate) -> None:
    # The ready file is written before serve_forever starts the worker pool and while the first
    # mirror is still being taken: one fetch first, so "before" counts the gate's own threads.
    gate.git("ls-remote", gate.url)
    before = threads_of(gate.proc.pid)
    held = []
    try:
        for i in range(700):  # more than the gate's connection cap
            s = socket.create_connection(("127.0.0.1", gate.port), timeout=10)
            if i % 2:
                s.sendall(b"POST /upstream.git/git-receive-pack HTTP/1.1\r\nHost: git-gate\r\nContent-Le")
            held.append(s)
        out = gate.git("ls-remote", gate.url)
        assert "refs/heads/main" in out.stdout
        # the gate's own threads, whatever is held (a request's feed thread may take a moment to
        # end after git has its answer: on a loaded machine, wait for it rather than race it)
        wait_for(lambda: threads_of(gate.proc.pid) <= before + 1, timeout=20, what="the gate back to its own threads")
    finally:
        for s in held:
            s.close()
