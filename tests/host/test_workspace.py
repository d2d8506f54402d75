"""What stop saves of the agent's checkout (bottle_tui/backends/docker/workspace.py), with the real
git and shell on this machine standing where the agent's are: the scripts run here exactly as they
run in the agent container (`place` is a plain `sh` instead of `docker exec ... sh`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from bottle_tui.backends.docker import workspace
from bottle_tui.errors import BottleError

HERE = ["sh"]
ENV = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@a", "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@a"}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env={**os.environ, **ENV}
    )
    return done.stdout


def archive(work: Path, dest: Path, mirror: Path | None, *, git_bottle: bool = True) -> workspace.Saved:
    return asyncio.run(workspace.archive(HERE, dest, mirror=mirror, git=git_bottle, workdir=str(work)))


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    """A bare upstream with one commit, standing in for the gate's mirror (``mirror/<repo>.git``)."""
    bare = tmp_path / "mirror" / "repo.git"
    bare.parent.mkdir()
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    (seed / "README.md").write_text("upstream\n")
    git(seed, "add", "README.md")
    git(seed, "commit", "-qm", "first")
    git(seed, "push", "-q", str(bare), "main")
    return bare


@pytest.fixture
def work(tmp_path: Path, upstream: Path) -> Path:
    checkout = tmp_path / "agent" / "work"
    git(tmp_path, "clone", "-q", str(upstream), str(checkout))
    return checkout


def test_a_clean_checkout_whose_commits_the_mirror_holds_saves_nothing(work: Path, tmp_path: Path) -> None:
    dest = tmp_path / "archive" / "work"
    saved = archive(work, dest, work.parent.parent / "mirror")
    assert saved.line == "checkout: nothing unsaved (no changes, no stashes, every commit is in the gate's mirror)"
    assert saved.safe_to_remove and not dest.exists()


def test_changes_stashes_and_local_commits_come_back_on_a_fresh_clone(
    work: Path, tmp_path: Path, upstream: Path
) -> None:
    for n in (1, 2):
        (work / "README.md").write_text(f"stash {n}\n")
        git(work, "stash", "-q")
    git(work, "checkout", "-q", "-b", "feature")
    (work / "feature.py").write_text("x = 1\n")
    git(work, "add", "feature.py")
    git(work, "commit", "-qm", "local only")
    (work / "README.md").write_text("changed\n")
    (work / "staged.txt").write_text("staged\n")
    git(work, "add", "staged.txt")
    (work / "sub").mkdir()
    (work / "sub" / "blob.bin").write_bytes(bytes(range(256)) * 40)
    (work / ".gitignore").write_text("build/\n")
    (work / "build").mkdir()
    (work / "build" / "out.o").write_bytes(b"ignored")
    index_before, objects_before = (work / ".git" / "index").read_bytes(), git(work, "count-objects", "-v")
    status_before = git(work, "status", "--porcelain")

    dest = tmp_path / "archive" / "work"
    saved = archive(work, dest, upstream.parent)
    # README.md, staged.txt, sub/blob.bin and .gitignore; build/ is ignored.
    assert saved.line == (
        f"checkout: saved 4 changed or untracked files, 2 stashes and 1 commit the gate does not hold in {dest}/ "
        "(uncommitted.patch, refs.bundle)"
    )
    assert sorted(p.name for p in dest.iterdir()) == ["refs.bundle", "uncommitted.patch"]
    # The agent's repository is as it was: same index, no new objects, same status.
    assert (work / ".git" / "index").read_bytes() == index_before
    assert git(work, "count-objects", "-v") == objects_before
    assert git(work, "status", "--porcelain") == status_before

    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(upstream), str(fresh))
    git(
        fresh,
        "fetch",
        "-q",
        str(dest / "refs.bundle"),
        "refs/heads/feature:refs/heads/feature",
        "refs/stashes/*:refs/stashes/*",
    )
    git(fresh, "checkout", "-q", "feature")
    git(fresh, "apply", str(dest / "uncommitted.patch"))
    for name in ("README.md", "staged.txt", "sub/blob.bin", ".gitignore", "feature.py"):
        assert (fresh / name).read_bytes() == (work / name).read_bytes(), name
    assert not (fresh / "build").exists()
    for n in (1, 0):  # stash@{1} first, so stash@{0} ends on top as it was
        git(fresh, "stash", "store", "-m", "restored", f"refs/stashes/{n}")
    assert git(fresh, "stash", "show", "-p", "stash@{0}") == git(work, "stash", "show", "-p", "stash@{0}")
    assert git(fresh, "stash", "show", "-p", "stash@{1}") == git(work, "stash", "show", "-p", "stash@{1}")


def test_a_commit_pushed_to_the_mirror_is_not_counted(work: Path, tmp_path: Path, upstream: Path) -> None:
    git(work, "checkout", "-q", "-b", "pushed")
    (work / "p.txt").write_text("p\n")
    git(work, "add", "p.txt")
    git(work, "commit", "-qm", "pushed")
    git(work, "push", "-q", "origin", "pushed")
    assert archive(work, tmp_path / "a" / "work", upstream.parent).safe_to_remove
    assert not (tmp_path / "a" / "work").exists()
    git(work, "commit", "-q", "--allow-empty", "-m", "one more")
    saved = archive(work, tmp_path / "a" / "work", upstream.parent)
    # Nothing uncommitted: no patch (git apply refuses an empty one), the bundle alone.
    assert saved.line.endswith(f"1 commit the gate does not hold in {tmp_path / 'a' / 'work'}/ (refs.bundle)")
    assert [p.name for p in (tmp_path / "a" / "work").iterdir()] == ["refs.bundle"]


def test_without_a_mirror_every_commit_counts(work: Path, tmp_path: Path) -> None:
    """The gate never reached upstream (no mirror): the clone's commit is not known to be held."""
    saved = archive(work, tmp_path / "a" / "work", tmp_path / "no-mirror")
    assert "1 commit the gate does not hold" in saved.line
    heads = git(work, "bundle", "list-heads", str(tmp_path / "a" / "work" / "refs.bundle"))
    assert "refs/heads/main" in heads and "HEAD" in heads


def test_an_unreadable_mirror_counts_every_commit_and_says_so(work: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "broken-mirror"
    (mirror / "repo.git").mkdir(parents=True)  # not a repository
    saved = archive(work, tmp_path / "a" / "work", mirror)
    assert "commits (the gate's mirror could not be read, so all of them)" in saved.line
    assert (tmp_path / "a" / "work" / "refs.bundle").is_file()


def test_a_repository_with_no_commit_is_saved_as_a_patch_alone(tmp_path: Path) -> None:
    work = tmp_path / "agent" / "work"
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    (work / "new.txt").write_text("first words\n")
    dest = tmp_path / "archive" / "work"
    saved = archive(work, dest, None)
    assert saved.line.startswith("checkout: saved 1 changed or untracked file in ")
    assert [p.name for p in dest.iterdir()] == ["uncommitted.patch"]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")
    git(fresh, "apply", str(dest / "uncommitted.patch"))
    assert (fresh / "new.txt").read_text() == "first words\n"


def test_a_bottle_without_git_saves_its_folder_as_a_tarball(tmp_path: Path) -> None:
    """A plain folder, and also a repository the agent made itself: the tarball holds it whole."""
    work = tmp_path / "agent" / "work"
    (work / "src").mkdir(parents=True)
    (work / "src" / "main.py").write_text("print(1)\n")
    git(work, "init", "-q")
    dest = tmp_path / "archive" / "work"
    (dest).mkdir(parents=True)
    (dest / "uncommitted.patch").write_text("from an earlier stop")
    saved = archive(work, dest, None, git_bottle=False)
    assert saved.line == f"checkout: saved /home/agent/work (a plain folder) as {dest / 'work.tar.gz'}"
    assert [p.name for p in dest.iterdir()] == ["work.tar.gz"], "the archive is replaced whole"
    with tarfile.open(dest / "work.tar.gz") as tar:
        assert tar.extractfile("work/src/main.py").read() == b"print(1)\n"  # type: ignore[union-attr]
        assert "work/.git/HEAD" in tar.getnames()


def test_an_empty_checkout_saves_nothing(tmp_path: Path) -> None:
    work = tmp_path / "agent" / "work"
    work.mkdir(parents=True)
    for git_bottle in (True, False):
        saved = archive(work, tmp_path / "a" / "work", None, git_bottle=git_bottle)
        assert saved == workspace.Saved("checkout: /home/agent/work is empty, nothing to save", True)
    assert not (tmp_path / "a").exists()


def test_a_failure_to_save_is_one_line_and_keeps_the_volume(work: Path, tmp_path: Path) -> None:
    (work / "x").write_text("x\n")
    blocker = tmp_path / "archive"
    blocker.write_text("a file where the archive folder should be")
    with pytest.raises(BottleError, match=r"^cannot save the checkout's unsaved work in .*archive/work: "):
        archive(work, blocker / "work", None)


@pytest.mark.parametrize("text", ["", "what?", "git 1 2", "git x 1 1"])
def test_an_answer_the_probe_does_not_give_is_an_error(text: str) -> None:
    with pytest.raises(BottleError):
        workspace.parse_probe(text)


def test_the_probe_answer_is_read_whole() -> None:
    assert workspace.parse_probe("git 3 1 unknown\n") == workspace.Probe("git", 3, 1, None)
    assert workspace.parse_probe("git 0 0 0").unsaved is False
    assert workspace.parse_probe("plain").unsaved and not workspace.parse_probe("empty").unsaved
