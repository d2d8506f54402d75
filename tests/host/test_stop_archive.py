"""`stop` and `cleanup` never leave a bottle half-stopped and lose nothing: the docker CLI is
replaced at the process boundary by a fake that records calls and fails on demand (the real
engine runs the same flows in tests/integration/test_lifecycle.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bottle_tui.backends.docker import engine, lifecycle
from bottle_tui.config import load_config
from bottle_tui.errors import BottleError
from bottle_tui.runner import CommandError
from bottle_tui.state import archive_root, state_dir

SLUG = "tester-abc123"


class FakeDockerCli:
    """Stands in for `docker compose logs/down` and `docker cp`; each can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: dict[str, BaseException] = {}

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    async def logs(self, project: str) -> str:
        self._maybe_fail("logs")
        return "sidecars | egress ready\n"

    async def copy_out(self, container: str, src: str, dest: Path, *, missing_ok: bool = False) -> bool:
        self._maybe_fail("copy_out")
        (dest / "p").mkdir(parents=True)
        (dest / "p" / "s.jsonl").write_text("{}\n")
        return True

    async def down(self, project: str) -> str:
        self._maybe_fail("down")
        return "Container down\n"

    async def engine_status(self) -> engine.EngineStatus:
        return engine.EngineStatus(True, "20.10", "2.40")


@pytest.fixture
def docker(monkeypatch: pytest.MonkeyPatch) -> FakeDockerCli:
    fake = FakeDockerCli()
    for name in ("logs", "copy_out", "down", "engine_status"):
        monkeypatch.setattr(engine, name, getattr(fake, name))
    return fake


def make_state(home: Path):
    state = state_dir(home, SLUG)
    state.create()
    state.write_metadata({"slug": SLUG, "agent": "tester"})
    (state.egress / "requests.jsonl").write_text('{"decision": "block", "host": "evil.example"}\n')
    (state.egress / "mitmproxy-ca.pem").write_text("CA KEY")
    return state


async def test_a_failing_compose_logs_still_takes_the_bottle_down_and_archives(
    tmp_path: Path, docker: FakeDockerCli
) -> None:
    state = make_state(tmp_path)
    docker.fail["logs"] = CommandError(["docker", "compose", "logs"], None, "", "timed out after 60 s")
    said: list[str] = []
    report = await lifecycle.stop(tmp_path, SLUG, said.append)
    assert "down" in docker.calls
    assert (
        len(report.problems) == 1
        and "saving compose logs failed" in report.problems[0]
        and "timed out" in report.problems[0]
    )
    assert any(line.startswith("warning: saving compose logs failed") for line in said)
    archive = archive_root(tmp_path) / SLUG
    assert report.archive == archive
    assert json.loads((archive / "metadata.json").read_text())["agent"] == "tester"
    assert "evil.example" in (archive / "egress" / "requests.jsonl").read_text()
    assert (archive / "transcript" / "p" / "s.jsonl").exists()
    assert "saving compose logs failed" in (archive / "teardown.log").read_text()
    assert not (archive / "egress" / "mitmproxy-ca.pem").exists(), "the CA key is runtime material, never archived"
    assert not state.path.exists()


async def test_a_failed_transcript_copy_is_reported(tmp_path: Path, docker: FakeDockerCli) -> None:
    make_state(tmp_path)
    docker.fail["copy_out"] = CommandError(["docker", "cp"], 1, "Error response from daemon: permission denied")
    report = await lifecycle.stop(tmp_path, SLUG, lambda _: None)
    assert "down" in docker.calls
    assert len(report.problems) == 1
    assert "saving the transcript failed" in report.problems[0] and "permission denied" in report.problems[0]
    assert (archive_root(tmp_path) / SLUG / "compose.log").read_text().startswith("sidecars")


async def test_a_failed_log_write_does_not_stop_the_teardown(
    tmp_path: Path, docker: FakeDockerCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_state(tmp_path)

    def disk_full(*_args: object, **_kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lifecycle, "atomic_write", disk_full)
    report = await lifecycle.stop(tmp_path, SLUG, lambda _: None)
    assert "down" in docker.calls
    assert any("No space left on device" in p for p in report.problems)


async def test_a_failed_down_keeps_the_state_and_says_so(tmp_path: Path, docker: FakeDockerCli) -> None:
    state = make_state(tmp_path)
    docker.fail["down"] = CommandError(["docker", "compose", "down"], 1, "network in use")
    with pytest.raises(BottleError, match="compose down.*failed.*network in use"):
        await lifecycle.stop(tmp_path, SLUG, lambda _: None)
    assert state.path.is_dir() and (state.egress / "mitmproxy-ca.pem").exists()
    assert (archive_root(tmp_path) / SLUG / "compose.log").exists()


async def test_keep_leaves_the_state_folder_and_archives_too(tmp_path: Path, docker: FakeDockerCli) -> None:
    state = make_state(tmp_path)
    report = await lifecycle.stop(tmp_path, SLUG, lambda _: None, keep=True)
    assert report.problems == []
    assert state.preserved and (state.path / "compose.log").exists()
    assert (archive_root(tmp_path) / SLUG / "compose.log").exists()


async def test_retention_from_the_config_prunes_older_archives(tmp_path: Path, docker: FakeDockerCli) -> None:
    (tmp_path / "config.yaml").write_text("archive: {max_age_days: 0, max_total_mb: 100}\n")
    old = archive_root(tmp_path) / "old-000000"
    old.mkdir(parents=True)
    (old / "compose.log").write_text("x")
    make_state(tmp_path)
    await lifecycle.stop(tmp_path, SLUG, lambda _: None)
    assert not old.exists()
    assert (archive_root(tmp_path) / SLUG).is_dir(), "the archive just written is never pruned"


@pytest.mark.parametrize(
    "text, key",
    [
        ("archive: {max_age_days: -1}\n", "archive.max_age_days"),
        ("archive: {max_total: 5}\n", "archive.max_total"),
        ("archiv: {}\n", "archiv"),
        ("archive: [1]\n", "archive"),
        ("archive: {max_total_mb: yes}\n", "archive.max_total_mb"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(BottleError) as info:
        load_config(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'config.yaml'}: {key}") and "\n" not in message


async def test_a_bad_config_does_not_stop_the_stop(tmp_path: Path, docker: FakeDockerCli) -> None:
    (tmp_path / "config.yaml").write_text("archive: {max_age_days: nope}\n")
    make_state(tmp_path)
    report = await lifecycle.stop(tmp_path, SLUG, lambda _: None)
    assert "down" in docker.calls and any("archive.max_age_days" in p for p in report.problems)
