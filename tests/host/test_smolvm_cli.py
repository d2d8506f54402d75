"""`bottle-tui start` of a smolvm agent, as a real subprocess: the dry run shows the plan without
probing; with a cached failed probe, start refuses in one line and starts nothing; an old smolvm
is refused naming the version found and the one needed. Also: both backends fill the protocol."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bottle_tui import backends
from bottle_tui.backends import Backend
from bottle_tui.backends.smolvm import probe
from bottle_tui.backends.smolvm.install import BINARY_ENV
from bottle_tui.backends.smolvm.smolvm_cli import STATE_DIR_ENV
from bottle_tui.errors import BottleError

AGENT = "---\nbottle: vm\n---\nprompt\n"
BOTTLE = "---\nbackend: smolvm\negress:\n  routes:\n    - host: api.example.com\n---\n"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    for rel, text in {"agents/vmagent.md": AGENT, "bottles/vm.md": BOTTLE}.items():
        (tmp_path / "home" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "home" / rel).write_text(text)
    return tmp_path / "home"


def _cli(home: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bottle_tui", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
    )


def _isolated(tmp_path: Path) -> dict[str, str]:
    return {probe.CACHE_ENV: str(tmp_path / "probe.json"), STATE_DIR_ENV: str(tmp_path / "smolvm-state")}


def test_dry_run_shows_the_smolvm_plan_without_probing(home: Path, tmp_path: Path) -> None:
    out = _cli(home, "start", "vmagent", "--dry-run", env=_isolated(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "backend    smolvm" in out.stdout
    assert "microVM    claude-bottle-vmagent-" in out.stdout and "only way out is the sidecar bundle" in out.stdout
    assert not (tmp_path / "probe.json").exists() and not (tmp_path / "smolvm-state").exists()
    assert not (home / "state").exists()


def test_cached_failed_probe_refuses_start_in_one_line(home: Path, tmp_path: Path) -> None:
    env = _isolated(tmp_path)
    (tmp_path / "probe.json").write_text(
        json.dumps(
            {
                "ok": False,
                "reason": "Received KVM_EXIT_INTERNAL_ERROR signal",
                "host": probe.host_key(),
                "smolvm": "1.32.2",
                "checked_at": "2026-11-27T08:00:00+00:00",
            }
        )
    )
    out = _cli(home, "start", "vmagent", "--yes", env=env)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("bottle-tui: error: ") and "bottles/vm.md" in lines[0]
    assert "microVMs cannot boot on this host: Received KVM_EXIT_INTERNAL_ERROR signal" in lines[0]
    assert "use backend: docker" in lines[0]
    # Started nothing: no state folder, and smolvm never ran a machine command (its state folder
    # would exist).
    assert not (home / "state").exists() and not (tmp_path / "smolvm-state").exists()


def test_old_smolvm_is_refused_with_found_and_needed_versions(home: Path, tmp_path: Path) -> None:
    # A fake: no smolvm older than 1.8 can be installed here. It only answers --version.
    fake = tmp_path / "fake-old-smolvm"
    fake.write_text("#!/bin/sh\necho 'smolvm 1.7.3'\n")
    fake.chmod(0o755)
    out = _cli(home, "start", "vmagent", "--yes", env={**_isolated(tmp_path), BINARY_ENV: str(fake)})
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert "smolvm 1.7.3 is too old" in line and ">= 1.8.0" in line


def test_both_backends_fill_the_protocol() -> None:
    wanted = {name for name, member in vars(Backend).items() if inspect.isfunction(member) and not name.startswith("_")}
    assert "preflight" in wanted and "discover" in wanted
    for backend in backends.all_backends():
        for name in wanted:
            ours, theirs = inspect.signature(getattr(backend, name)), inspect.signature(getattr(Backend, name))
            assert list(ours.parameters) == [p for p in theirs.parameters if p != "self"], f"{backend.name}.{name}"


def test_unknown_backend_is_one_line() -> None:
    with pytest.raises(BottleError, match="use docker, smolvm or swarm"):
        backends.get("firecracker")
