"""The runner (real subprocesses) and the state layout / atomic write."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bottle_tui.errors import BottleError
from bottle_tui.runner import CommandError, CommandNotFound, lines, run
from bottle_tui.state import StateDir, atomic_write, new_slug, project_name, slug_of_project, state_dir


async def test_run_captures_output_and_closes_stdin() -> None:
    result = await run(["sh", "-c", "cat; echo out; echo err >&2"])
    assert result.stdout == "out\n" and result.stderr == "err\n" and result.returncode == 0


async def test_run_error_carries_argv_status_and_stderr() -> None:
    with pytest.raises(CommandError) as info:
        await run(["sh", "-c", "echo first >&2; echo 'the real reason' >&2; exit 3"])
    err = info.value
    assert err.returncode == 3 and err.argv[0] == "sh" and "the real reason" in err.stderr
    assert "\n" not in str(err) and "status 3" in str(err) and "the real reason" in str(err)


async def test_run_timeout_kills_the_process() -> None:
    with pytest.raises(CommandError, match="timed out after 0.2 s"):
        await run(["sleep", "30"], timeout=0.2)


async def test_missing_program_is_a_clear_error() -> None:
    with pytest.raises(CommandNotFound, match="not installed"):
        await run(["no-such-program-bottle"])


async def test_run_unchecked_returns_status_and_input_reaches_stdin() -> None:
    result = await run(["sh", "-c", "read x; echo got-$x; exit 4"], check=False, input=b"hi\n")
    assert result.returncode == 4 and result.stdout == "got-hi\n"


async def test_lines_streams_and_stops_the_command() -> None:
    seen = []
    async for line in lines(["sh", "-c", "echo a; echo b; sleep 30"]):
        seen.append(line)
        if len(seen) == 2:
            break
    assert seen == ["a", "b"]


def test_atomic_write_replaces_whole_file_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "routes.yaml"
    target.write_text("old")
    atomic_write(target, "new", mode=0o640)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["routes.yaml"]


def test_state_dir_layout_and_modes(tmp_path: Path) -> None:
    s = state_dir(tmp_path, "implementer-abc123")
    s.create()
    assert stat.S_IMODE(s.path.stat().st_mode) == 0o700
    assert s.egress.is_dir() and s.ca.is_dir()
    s.write_metadata({"slug": s.slug})
    assert s.read_metadata() == {"slug": "implementer-abc123"}
    with pytest.raises(BottleError, match="already exists"):
        StateDir(s.path).create()
    s.preserve_marker.touch()
    assert s.preserved


def test_slug_and_project_names() -> None:
    slug = new_slug("implementer")
    assert slug.startswith("implementer-") and len(slug) == len("implementer-") + 6
    assert slug_of_project(project_name(slug)) == slug
    assert slug_of_project("someone-else") is None
    with pytest.raises(BottleError):
        state_dir(Path("/tmp"), "../escape")
