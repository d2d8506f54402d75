"""The runner (real subprocesses) and the state layout / atomic write."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from bottle_contract.files import atomic_write
from bottle_tui.errors import BottleError
from bottle_tui.runner import CommandError, CommandNotFound, lines, run
from bottle_tui.state import (
    StateDir,
    archive_root,
    new_slug,
    project_name,
    prune_archive,
    remove_tree,
    slug_of_project,
    state_dir,
)


async def test_run_captures_output_and_closes_stdin() -> None:
    result = await run(["sh", "-c", "cat; echo out; echo err >&2"])
    assert result.stdout == "out\n" and result.stderr == "err\n" and result.returncode == 0


async def test_run_error_carries_argv_status_and_stderr() -> None:
    with pytest.raises(CommandError) as info:
        await run(["sh", "-c", "echo first >&2; echo 'the real reason' >&2; exit 3"])
    err = info.value
    assert err.returncode == 3 and err.argv[0] == "sh" and "the real reason" in err.stderr
    assert "\n" not in str(err) and "status 3" in str(err) and "the real reason" in str(err)


def _gone(pid: int) -> bool:
    """No such process, or a zombie: killed and waiting for whoever reaps orphans here."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_run_timeout_kills_the_process_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The shell and a grandchild it spawned: both must be gone once the timeout fires.
    script = f"sleep 30 & echo $$ $! > {pids}; wait"
    with pytest.raises(CommandError, match="timed out after 0.5 s"):
        await run(["sh", "-c", script], timeout=0.5)
    shell, child = map(int, pids.read_text().split())
    for _ in range(50):
        if _gone(shell) and _gone(child):
            break
        await asyncio.sleep(0.02)
    assert _gone(shell), "the timed-out command is still running"
    assert _gone(child), "a child of the timed-out command is still running"


async def test_missing_program_is_a_clear_error() -> None:
    with pytest.raises(CommandNotFound, match="not installed"):
        await run(["no-such-program-bottle"])


async def test_run_unchecked_returns_status_and_input_reaches_stdin() -> None:
    result = await run(["sh", "-c", "read x; echo got-$x; exit 4"], check=False, input=b"hi\n")
    assert result.returncode == 4 and result.stdout == "got-hi\n"


async def test_a_file_streams_into_stdin_and_stdout_into_a_file(tmp_path: Path) -> None:
    source, dest = tmp_path / "in.bin", tmp_path / "out.bin"
    data = os.urandom(3 << 20)  # larger than a pipe's buffer
    source.write_bytes(data)
    result = await run(["cat"], stdin_path=source, stdout_path=dest)
    assert dest.read_bytes() == data and result.stdout == ""
    with pytest.raises(ValueError):
        await run(["cat"], stdin_path=source, input=b"x")


async def test_lines_streams_and_stops_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    seen = []
    async with contextlib.aclosing(
        lines(["sh", "-c", f"echo $$ > {pidfile}; echo a; echo b; exec sleep 30"])
    ) as stream:
        async for line in stream:
            seen.append(line)
            if len(seen) == 2:
                break
    assert seen == ["a", "b"]
    assert _gone(int(pidfile.read_text())), "the streamed command outlived its consumer"


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


def _bottle_state(home: Path, slug: str) -> StateDir:
    state = state_dir(home, slug)
    state.create()
    state.write_metadata({"slug": slug})
    (state.path / "compose.log").write_text("logs\n")
    (state.egress / "requests.jsonl").write_text('{"decision": "block"}\n')
    (state.egress / "requests.jsonl.1").write_text('{"decision": "allow"}\n')
    (state.egress / "mitmproxy-ca.pem").write_text("KEY")
    (state.path / "compose.yaml").write_text("services: {}\n")
    (state.transcript / "p").mkdir(parents=True)
    (state.transcript / "p" / "s.jsonl").write_text("{}\n")
    return state


def test_archive_keeps_what_an_operator_wants_and_not_runtime_material(tmp_path: Path) -> None:
    state = _bottle_state(tmp_path, "a-000001")
    dest = archive_root(tmp_path) / state.slug
    assert state.archive_to(dest) == []
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == [
        "compose.log",
        "egress/requests.jsonl",
        "egress/requests.jsonl.1",
        "metadata.json",
        "transcript/p/s.jsonl",
    ]
    assert not (dest / "egress" / "mitmproxy-ca.pem").exists() and not (dest / "compose.yaml").exists()


def test_remove_tree_reports_what_it_could_not_remove(tmp_path: Path) -> None:
    stuck = tmp_path / "state" / "b-000002"
    (stuck / "inner").mkdir(parents=True)
    (stuck / "inner" / "f").write_text("x")
    # Something that cannot be removed: an immutable file (chattr +i, as root), else a folder
    # without write permission (enough for any other uid).
    victim = stuck / "inner" / "f"
    immutable = (
        subprocess.run(["chattr", "+i", str(victim)], capture_output=True).returncode == 0
        if shutil.which("chattr")
        else False
    )
    if not immutable:
        os.chmod(stuck / "inner", 0o500)  # effective for a non-root uid
    try:
        problems = remove_tree(stuck)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(victim)], capture_output=True)
        if (stuck / "inner").exists():
            os.chmod(stuck / "inner", 0o700)
    if immutable or os.geteuid() != 0:
        assert problems and all(p.startswith("cannot remove ") for p in problems), problems
        assert str(victim) in " ".join(problems)
    else:
        assert problems == [] and not stuck.exists()
    assert remove_tree(tmp_path / "missing") == []


def test_prune_archive_drops_old_then_oldest_over_the_size_limit(tmp_path: Path) -> None:
    root = archive_root(tmp_path)
    now = time.time()
    for name, age_days, size in (("old", 40, 10), ("mid", 5, 600_000), ("new", 1, 600_000), ("newest", 0, 10)):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "compose.log").write_bytes(b"x" * size)
        os.utime(folder, (now - age_days * 86400, now - age_days * 86400))
    removed, problems = prune_archive(tmp_path, max_age_days=30, max_total_mb=1.0, now=now, keep=root / "newest")
    assert problems == []
    assert sorted(p.name for p in removed) == ["mid", "old"]
    assert sorted(p.name for p in root.iterdir()) == ["new", "newest"]


def test_changed_file_names_proposals_and_status_and_nothing_else(tmp_path: Path) -> None:
    from bottle_tui.state import changed_file

    s = state_dir(tmp_path, "coder-abc123")
    assert changed_file(tmp_path, s.queue / "p-1.json") == ("proposal", s)
    assert changed_file(tmp_path, str(s.status_file)) == ("status", s)
    for other in (
        s.queue / ".p-1.json.tmp",
        s.queue / ".lock",
        s.queue / "p-1.txt",
        s.supervise / "p-1.json",
        s.status / "other.json",
        s.egress_log,
        s.routes,
        tmp_path / "state" / "status.json",
        tmp_path / "elsewhere" / "coder-abc123" / "status" / "status.json",
    ):
        assert changed_file(tmp_path, other) is None, other


def test_a_line_session_answers_each_request_and_starts_again_after_it_ended(tmp_path: Path) -> None:
    import sys

    from bottle_tui.runner import CommandError, LineSession

    script = tmp_path / "upper.py"
    script.write_text(
        "import os, sys\n"
        "for line in sys.stdin:\n"
        "    if line.strip() == 'quit':\n"
        "        sys.exit(0)\n"
        "    if line.strip() == 'hang':\n"
        "        import time; time.sleep(60)\n"
        "    print(line.strip().upper(), os.getpid(), flush=True)\n"
    )
    session = LineSession([sys.executable, str(script)], timeout=2)
    try:
        first = session.ask("hello")
        assert first is not None and first.split()[0] == "HELLO"
        again = session.ask("again")
        assert again is not None and again.split()[1] == first.split()[1], "one process for many requests"
        assert session.ask("quit") is None  # it ended without answering
        restarted = session.ask("back")
        assert restarted is not None and restarted.split()[1] != first.split()[1]
        with pytest.raises(CommandError, match="did not answer within 2 s"):
            session.ask("hang")
        assert (session.ask("after") or "").startswith("AFTER")
    finally:
        session.close()
