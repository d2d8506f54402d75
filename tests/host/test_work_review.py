"""The review of a checkout (bottle_tui.work_review) against real repositories made here with
git: hostile file names, binary and huge files, renames, deletes, untracked files, a repository
config that tries to change what git shows, 5,000 files; and git's machine output cut at its bound."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bottle_tui import work_review as wr
from bottle_tui.errors import BottleError
from tests.support.repos import HOSTILE, content, git, make_repo, make_worked_repo, write


def review_of(repo: Path, base: str | None) -> wr.GitReview:
    return wr.GitReview(wr.local_exec(), str(repo), base, title="test")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.fixture
def worked(tmp_path: Path) -> tuple[Path, str]:
    return make_worked_repo(tmp_path / "repo")


def by_path(review: wr.Review) -> dict[bytes, wr.FileChange]:
    return {f.path: f for f in review.files}


def test_every_kind_of_change_is_listed_with_exact_names(worked: tuple[Path, str]) -> None:
    repo, base = worked
    review = run(review_of(repo, base).review())
    files = by_path(review)
    assert set(files) == {
        *HOSTILE,
        b"renamed.py",
        b"gone.txt",
        b"image.bin",
        b"staged.txt",
        b"README.md",
        b"untracked\nfile.txt",
        b".gitignore",
    }
    assert files[b"renamed.py"].status == "R" and files[b"renamed.py"].old_path == b"old.py"
    assert files[b"gone.txt"].status == "D"
    assert files[b"-n"].status == "A"
    assert [files[p].where for p in (b"renamed.py", b"staged.txt", b"README.md", b"untracked\nfile.txt")] == [
        "committed",
        "uncommitted",
        "uncommitted",
        "untracked",
    ]
    assert files[b"latin-\xe9\xff.txt"].name == "latin-\ufffd\ufffd.txt"  # shown; the bytes stay exact


def test_counts_and_binary(worked: tuple[Path, str]) -> None:
    repo, base = worked
    source = review_of(repo, base)
    files = by_path(run(source.counted(run(source.review()))))
    assert (files[b"image.bin"].binary, files[b"image.bin"].added) == (True, None)
    assert (files[b"staged.txt"].added, files[b"staged.txt"].deleted) == (1, 0)
    assert (files[b"gone.txt"].added, files[b"gone.txt"].deleted) == (0, 1)
    assert (files[b"renamed.py"].added, files[b"renamed.py"].deleted) == (0, 0)
    assert files[b"untracked\nfile.txt"].added == 1
    for name in HOSTILE:
        assert (files[name].added, files[name].deleted) == (1, 0), name


def test_each_file_diff_is_that_files(worked: tuple[Path, str]) -> None:
    repo, base = worked
    source = review_of(repo, base)
    files = by_path(run(source.review()))
    for name in [*HOSTILE, b"untracked\nfile.txt"]:
        diff = run(source.file_diff(files[name]))
        added = [line.text for line in diff.lines if line.kind == "add"]
        expected = (content(name) if name in HOSTILE else b"never added\n").decode("utf-8", "replace")[:-1]
        assert added == [expected], name
    readme = run(source.file_diff(files[b"README.md"]))
    assert [(line.kind, line.text) for line in readme.lines if line.kind in ("add", "ctx")] == [
        ("ctx", "# project"),
        ("add", "unstaged line"),
    ]
    gone = run(source.file_diff(files[b"gone.txt"]))
    assert [line.text for line in gone.lines if line.kind == "del"] == ["to be deleted"]
    binary = run(source.file_diff(files[b"image.bin"]))
    assert binary.binary and not any(line.kind == "add" for line in binary.lines)
    renamed = run(source.file_diff(files[b"renamed.py"]))
    assert any(line.text == "rename from old.py" for line in renamed.lines)


def test_commits_per_branch_with_their_messages(worked: tuple[Path, str]) -> None:
    repo, base = worked
    git(repo, "stash", "-q", "-u")
    git(repo, "checkout", "-q", "-b", "feature", base)
    write(repo, b"feature.txt", b"f\n")
    git(repo, "add", "feature.txt")
    git(repo, "commit", "-qm", "feature: one")
    git(repo, "commit", "-q", "--allow-empty", "-m", "feature: two")
    git(repo, "branch", "-q", "untouched", base)
    review = run(review_of(repo, base).review())
    names = [(b.name, b.current, [c.subject for c in b.commits]) for b in review.branches]
    assert names == [
        ("feature", True, ["feature: two", "feature: one"]),
        ("main", False, ["\x1b[2J[bold]agent[/bold] work"]),
    ]  # the branch with no new commit is left out
    main = review.branches[1].commits[0]
    assert main.message == "\x1b[2J[bold]agent[/bold] work\n\nbody line"
    assert main.author == "agent" and main.parents == (base,)
    # The working tree is on feature (ignored.log shows: its .gitignore went into the stash).
    assert sorted(f.path for f in review.files) == [b"feature.txt", b"ignored.log"]


def test_detached_head_commits_are_listed(worked: tuple[Path, str]) -> None:
    repo, base = worked
    git(repo, "stash", "-q", "-u")
    git(repo, "checkout", "-q", "--detach", base)
    git(repo, "commit", "-q", "--allow-empty", "-m", "detached work")
    review = run(review_of(repo, base).review())
    assert (review.branches[0].name, review.branches[0].current) == ("HEAD (detached)", True)
    assert [c.subject for c in review.branches[0].commits] == ["detached work"]


def test_the_repository_config_cannot_change_what_is_shown(worked: tuple[Path, str]) -> None:
    repo, base = worked
    # An external diff, a textconv that hides content, colour, no prefixes, a pager, replace refs.
    for key, value in (
        ("diff.external", "/bin/true"),
        ("diff.hide.textconv", "sh -c 'echo nothing to see'"),
        ("color.ui", "always"),
        ("color.diff", "always"),
        ("diff.noprefix", "true"),
        ("core.pager", "sh -c 'echo paged'"),
        ("core.quotePath", "true"),
        ("diff.relative", "true"),
    ):
        git(repo, "config", key, value)
    write(repo, b".git/info/attributes", b"* diff=hide\n")
    fake = git(repo, "hash-object", "-w", "--stdin", input=b"fake\n").decode().strip()
    git(repo, "replace", git(repo, "rev-parse", "HEAD:staged.txt").decode().strip(), fake)
    source = review_of(repo, base)
    files = by_path(run(source.review()))
    diff = run(source.file_diff(files[b"README.md"]))
    assert ("add", "unstaged line") in [(line.kind, line.text) for line in diff.lines]
    assert all("\x1b" not in line.text for line in diff.lines)
    assert any(line.text == "--- a/README.md" for line in diff.lines)
    assert b"new\nline.txt" in files  # not quoted


def test_an_empty_start_shows_everything_as_added(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path / "repo")
    review = run(review_of(repo, None).review())
    assert sorted(f.path for f in review.files) == [b"README.md", b"gone.txt", b"old.py", b"staged.txt"]
    assert {f.status for f in review.files} == {"A"}
    assert [len(b.commits) for b in review.branches] == [1]


def test_no_checkout_and_a_pruned_start_say_so(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(BottleError, match="there is no git checkout in"):
        run(review_of(tmp_path / "plain", None).review())
    repo, _ = make_repo(tmp_path / "repo")
    with pytest.raises(BottleError, match="no longer in the checkout"):
        run(review_of(repo, "0123456789abcdef0123456789abcdef01234567").review())


def test_a_huge_file_is_never_read_whole(tmp_path: Path) -> None:
    repo, base = make_repo(tmp_path / "repo")
    line = b"x" * 99 + b"\n"
    write(repo, b"big.txt", line * ((3 << 20) // 100))  # 3 MiB of text: under git's binary size
    write(repo, b"huge.txt", line * ((6 << 20) // 100))  # over it: binary to git, never diffed
    source = review_of(repo, base)
    files = by_path(run(source.counted(run(source.review()))))
    assert files[b"huge.txt"].binary and not files[b"big.txt"].binary
    big = run(source.file_diff(files[b"big.txt"]))
    assert big.truncated
    added = [entry for entry in big.lines if entry.kind == "add"]
    assert 0 < len(added) < wr.DIFF_LIMIT // 100 + 1
    assert all(entry.text == "x" * 99 for entry in added)  # the cut line is dropped, not shown half
    huge = run(source.file_diff(files[b"huge.txt"]))
    assert huge.binary and not huge.truncated


def test_five_thousand_files(tmp_path: Path) -> None:
    repo, base = make_repo(tmp_path / "repo")
    for i in range(5000):
        write(repo, f"pkg/{i // 100}/file {i}.txt".encode(), f"line {i}\n".encode())
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "many")
    source = review_of(repo, base)
    review = run(source.counted(run(source.review())))
    assert len(review.files) == 5000
    assert sum(f.added or 0 for f in review.files) == 5000
    assert wr.review_stat(review)[-1] == "5000 files changed, 5000 insertions(+), 0 deletions(-)"
    one = next(f for f in review.files if f.path == b"pkg/42/file 4242.txt")
    assert [entry.text for entry in run(source.file_diff(one)).lines if entry.kind == "add"] == ["line 4242"]


# -- git's output cut at its bound ----------------------------------------------------------------


def raw_output(repo: Path, base: str) -> bytes:
    return git(repo, "diff", "--raw", "-z", "--no-abbrev", "-M", base, "--")


def test_raw_output_cut_anywhere_drops_only_the_cut_record(worked: tuple[Path, str]) -> None:
    repo, base = worked
    whole = raw_output(repo, base)
    files = wr.parse_raw(whole)
    assert len(files) == len(HOSTILE) + 5  # committed and staged ones (no intent-to-add here)
    for cut in range(0, len(whole), 7):
        part = wr.parse_raw(whole[:cut], truncated=True)
        assert part == files[: len(part)]
        assert len(part) >= len(files) - 1 - (len(whole) - cut) // 50  # nothing before the cut is lost
    with pytest.raises(BottleError):
        wr.parse_raw(whole[:-3])  # cut, but not said to be: refused, not misread


def test_log_output_cut_drops_the_cut_commit(worked: tuple[Path, str]) -> None:
    repo, base = worked
    tree = git(repo, "rev-parse", "HEAD^{tree}").decode().strip()
    parent = git(repo, "rev-parse", "HEAD").decode().strip()
    for i in range(3):  # messages with a NUL byte: only a hand-made commit object has one
        body = f"tree {tree}\nparent {parent}\nauthor a <a@b> 1 +0000\ncommitter a <a@b> 1 +0000\n\n"
        raw = body.encode() + f"commit {i}\n\nline".encode() + b"\x00 after nul\n"
        parent = git(repo, "hash-object", "-t", "commit", "-w", "--stdin", "--literally", input=raw).decode().strip()
    git(repo, "update-ref", "refs/heads/main", parent)
    whole = git(repo, "log", "-z", wr.LOG_FORMAT, "-4")
    commits = wr.parse_log(whole)
    assert [c.subject for c in commits] == ["commit 2", "commit 1", "commit 0", "\x1b[2J[bold]agent[/bold] work"]
    assert commits[0].message == "commit 2\n\nline"  # git stops a message at its NUL
    for cut in range(0, len(whole)):
        assert wr.parse_log(whole[:cut], truncated=True) == commits[: len(wr.parse_log(whole[:cut], truncated=True))]


def test_unwrap_knows_a_cut_output_from_a_whole_one() -> None:
    import base64

    whole = base64.b64encode(b"data\nbottle-tui-exit 0\n").decode()
    assert wr.unwrap(whole, 100) == wr.Output(0, b"data")
    # Output that fills the bound is cut, whatever its last bytes say.
    filled = b"x" * (100 + wr.TRAILER_ROOM - 20) + b"\nbottle-tui-exit 0\n"
    assert len(filled) == 100 + wr.TRAILER_ROOM - 1
    assert wr.unwrap(base64.b64encode(filled + b"y").decode(), 100).truncated
    assert wr.unwrap(base64.b64encode(b"no trailer").decode(), 100) == wr.Output(None, b"no trailer")
    with pytest.raises(BottleError):
        wr.unwrap("not base64!", 100)


def test_the_wrapper_passes_any_bytes_through(tmp_path: Path) -> None:
    """Arguments travel octal-escaped, even newlines at the end and bytes that are not UTF-8."""
    args = [b"a\nb\n\n", b"\xff\xfe", b"-e", b" lead and trail ", b"%s\\n"]
    out = run(wr.run_git(wr.local_exec(), ["printf", "%s\\0", *args], workdir=str(tmp_path), limit=1000))
    assert out.status == 0
    assert out.data.split(b"\0")[:-1] == args
