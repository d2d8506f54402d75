"""What changed in a git checkout since a starting commit: the files (committed, staged, unstaged
and untracked alike), each file's diff on demand, and the commits on every branch.

The repository may be anywhere a command can run: in a bottle's agent (``ops`` hands in the
backend's exec) or in a folder on this machine (``local_exec``, for a mirror or a test). Every git
call goes through one shell wrapper, ``wrap``, that runs where the repository is and

- receives its arguments octal-escaped, so a file name of any bytes (newlines, invalid UTF-8)
  travels through ``docker exec`` and comes back exact;
- neutralises the repository's own means of making git show something else (external diff and
  textconv drivers, replace refs, colour, prefixes, fsmonitor, system and global config);
- cuts git's output at a byte bound where it is produced (``head -c``: a 1 GB file is never
  pulled whole) and appends git's exit status after it, then base64 so the bytes come back exact.

Everything git prints is parsed from its machine forms (``-z`` with ``--raw`` and ``--numstat``,
NUL-separated ``log`` fields). Nothing here trusts what it parses: names, messages and diff lines
are the agent's bytes and reach a screen only through the console's inert rendering.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from .errors import BottleError
from .review_model import (
    _SHA,
    LOG_FORMAT,
    MAX_DIFF_LINES,
    BranchLog,
    Commit,
    DiffLine,
    FileChange,
    FileDiff,
    Review,
    ReviewSource,
    parse_log,
    parse_numstat,
    parse_patch,
    parse_raw,
    shown,
)

__all__ = [
    "MAX_DIFF_LINES",
    "BranchLog",
    "Commit",
    "DiffLine",
    "FileChange",
    "FileDiff",
    "GitReview",
    "PushReview",
    "Review",
    "ReviewSource",
    "parse_log",
    "parse_numstat",
    "parse_patch",
    "parse_raw",
    "shown",
]

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's id of the empty tree
LIST_LIMIT = 16 << 20  # the file list (--raw) and its counts (--numstat)
LOG_LIMIT = 4 << 20  # the commits of one branch
DIFF_LIMIT = 1 << 20  # one file's diff
PATCH_LIMIT = 64 << 20  # every file's diff at once (`bottle-tui diff` on a terminal)
MAX_COMMITS = 200  # per branch; more are counted as cut
MAX_BRANCHES = 50  # branches whose commits are listed (the checked-out one always)
# A file bigger than this is "binary" to git's diff (core.bigFileThreshold): never diffed whole.
BIG_FILE = "4m"
TIMEOUT = 60.0
TRAILER = re.compile(rb"\nbottle-tui-exit (\d{1,3})\n\Z")
TRAILER_ROOM = 32  # bytes beyond a limit kept for the trailer

# Runs where the repository is. $1 byte limit, $2 work folder, $3 1 = untracked files count
# (a throw-away copy of the index with them added as intent-to-add: nothing is written into the
# repository), then the command, every argument octal-escaped (printf %b; the x keeps trailing
# newlines). Output: the command's stdout, then "\nbottle-tui-exit N\n", cut at the limit, base64.
WRAPPER = r"""
l=$1 w=$2 ita=$3; shift 3
for a do shift; a=$(printf '%bx' "$a"); set -- "$@" "${a%x}"; done
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_ATTR_NOSYSTEM=1 GIT_NO_REPLACE_OBJECTS=1 \
  GIT_OPTIONAL_LOCKS=0 GIT_TERMINAL_PROMPT=0 GIT_PAGER=cat LC_ALL=C
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_EXTERNAL_DIFF
t=$(mktemp -d) || exit 1
trap 'rm -rf "$t"' EXIT
{
  (
    cd "$w" || exit 128
    if [ "$ita" = 1 ] && git rev-parse --git-dir >/dev/null 2>&1; then
      cp "$(git rev-parse --git-path index)" "$t/index" 2>/dev/null
      GIT_INDEX_FILE=$t/index; export GIT_INDEX_FILE
      git add --intent-to-add --ignore-errors -- . >/dev/null 2>&1
    fi
    "$@"
  )
  printf '\nbottle-tui-exit %d\n' "$?"
} 2>/dev/null | head -c "$l" | base64 -w 0
"""

# git's own options on every call: the repository's config may not change what is shown.
SETTINGS = {
    "core.fsmonitor": "false",
    "core.bigFileThreshold": BIG_FILE,
    "core.quotePath": "false",
    "core.untrackedCache": "false",
    "color.ui": "false",
    "diff.noprefix": "false",
    "diff.mnemonicPrefix": "false",
    "diff.relative": "false",
    "log.showSignature": "false",
}
GIT = ["git", "--no-replace-objects", *(arg for k, v in SETTINGS.items() for arg in ("-c", f"{k}={v}"))]
DIFF_FLAGS = ["--no-ext-diff", "--no-textconv", "--no-color", "--no-relative", "-M"]

Exec = Callable[[list[str], float], Awaitable[tuple[int, str]]]  # (argv, timeout) -> (status, stdout)


# (the data model and git's machine output: review_model)


# -- running git where the repository is ------------------------------------------------------------


def _octal(arg: str | bytes) -> str:
    raw = arg if isinstance(arg, bytes) else arg.encode("utf-8", "surrogateescape")
    return "".join(f"\\0{b:03o}" for b in raw)


def wrap(argv: Sequence[str | bytes], *, workdir: str, limit: int, untracked: bool = False) -> list[str]:
    """The command that runs ``argv`` in ``workdir`` where the repository is, bounded (see WRAPPER)."""
    return [
        "/bin/sh",
        "-c",
        WRAPPER,
        "bottle-tui-git",
        str(limit + TRAILER_ROOM),
        workdir,
        "1" if untracked else "0",
        *(_octal(a) for a in argv),
    ]


@dataclass(frozen=True)
class Output:
    status: int | None  # the command's exit status; None when its output was cut at the bound
    data: bytes

    @property
    def truncated(self) -> bool:
        return self.status is None


def unwrap(stdout: str, limit: int) -> Output:
    """What ``wrap``'s command printed: the bytes, and the status when the output was whole."""
    try:
        raw = base64.b64decode(stdout.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BottleError("the command that reads git did not answer in the form expected (base64)") from None
    found = TRAILER.search(raw)
    if found is None or len(raw) >= limit + TRAILER_ROOM:
        return Output(None, raw[:limit])
    return Output(int(found.group(1)), raw[: found.start()])


async def run_git(
    exec_: Exec, argv: Sequence[str | bytes], *, workdir: str, limit: int, untracked: bool = False
) -> Output:
    status, stdout = await exec_(wrap(argv, workdir=workdir, limit=limit, untracked=untracked), TIMEOUT)
    if not stdout.strip():
        raise BottleError(f"could not run git in {workdir} (exit {status})")
    return unwrap(stdout, limit)


def local_exec() -> Exec:
    """Run the wrapped command on this machine (a repository in a local folder)."""
    from .runner import run

    async def exec_(argv: list[str], timeout: float) -> tuple[int, str]:
        result = await run(argv, timeout=timeout, check=False)
        return result.returncode, result.stdout

    return exec_


# -- the review of a checkout ------------------------------------------------------------------------


PROBE = r"""
top=$(git rev-parse --show-toplevel 2>/dev/null) || { echo none; exit 0; }
echo "top $top"
echo "head $(git rev-parse --verify -q HEAD)"
echo "on $(git symbolic-ref -q HEAD)"
if [ "$1" != "" ] && git cat-file -e "$1^{commit}" 2>/dev/null; then echo "base-present"; fi
git for-each-ref --format='ref %(objectname) %(refname)' refs/heads
"""


@dataclass(frozen=True)
class Probe:
    repo: bool
    head: str = ""
    on: str = ""  # refs/heads/<branch>, or "" when detached
    base_present: bool = False
    branches: tuple[tuple[str, str], ...] = ()  # (refname, sha)


def parse_probe(data: bytes) -> Probe:
    text = shown(data)
    lines = text.splitlines()
    if not lines or lines[0] == "none":
        return Probe(False)
    head = on = ""
    base_present = False
    branches: list[tuple[str, str]] = []
    for line in lines:
        key, _, value = line.partition(" ")
        if key == "head":
            head = value.strip()
        elif key == "on":
            on = value.strip()
        elif key == "base-present":
            base_present = True
        elif key == "ref":
            sha, _, ref = value.partition(" ")
            if _SHA.match(sha) and ref.startswith("refs/heads/"):
                branches.append((ref, sha))
    return Probe(True, head, on, base_present, tuple(branches))


@dataclass
class GitReview:
    """The review of the checkout in ``workdir`` (reached through ``exec_``) against ``base``
    (a commit id; None: the checkout started empty, everything in it is new)."""

    exec_: Exec
    workdir: str
    base: str | None
    title: str = "Review"
    base_note: str = ""
    unavailable: str = field(default="", init=False)
    worktree = True  # untracked files count (a checkout; a push has no working tree)

    async def _git(self, argv: Sequence[str | bytes], limit: int, *, untracked: bool = False) -> Output:
        return await run_git(self.exec_, argv, workdir=self.workdir, limit=limit, untracked=untracked)

    def _sides(self, base: str) -> list[str]:
        """What a diff compares: ``base`` with the working tree (a checkout)."""
        return [base]

    async def probe(self) -> Probe:
        out = await self._git(["sh", "-c", PROBE, "probe", self.base or ""], 1 << 20)
        return parse_probe(out.data)

    async def review(self) -> Review:
        """The file list and the commits, or a one-line BottleError when there is no checkout."""
        probe = await self.probe()
        if not probe.repo:
            raise BottleError(f"there is no git checkout in {self.workdir}")
        base = self.base or EMPTY_TREE
        notes: list[str] = []
        if self.base is not None and not probe.base_present:
            raise BottleError(
                f"the starting commit {self.base[:12]} is no longer in the checkout in {self.workdir} "
                "(its history was rewritten and pruned): what was pushed is in the git gate's mirror"
            )
        refs = list(probe.branches)
        if not probe.on and probe.head:  # detached: what HEAD has is work too
            refs.insert(0, ("HEAD", probe.head))
        if len(refs) > MAX_BRANCHES:
            notes.append(f"{len(refs)} branches: the commits of the first {MAX_BRANCHES} are listed")
            current = [r for r in refs if r[0] == probe.on]
            refs = current + [r for r in refs if r[0] != probe.on][: MAX_BRANCHES - len(current)]
        listing_task = self._git(
            [*GIT, "diff", "--raw", "-z", "--no-abbrev", *DIFF_FLAGS, base, "--"], LIST_LIMIT, untracked=True
        )
        untracked_task = self._git([*GIT, "ls-files", "-z", "--others", "--exclude-standard"], LIST_LIMIT)
        listing, untracked, changed, logs = await asyncio.gather(
            listing_task,
            untracked_task,
            self._uncommitted(probe),
            asyncio.gather(*(self._log(base, ref, sha) for ref, sha in refs)),
        )
        if listing.status not in (0, None):
            raise BottleError(f"git diff against {base[:12]} failed in {self.workdir} (exit {listing.status})")
        files = parse_raw(listing.data, truncated=listing.truncated)
        if listing.truncated:
            notes.append(f"the file list is cut at {LIST_LIMIT >> 20} MiB: {len(files)} files are listed")
        new = set(untracked.data.split(b"\0")) if untracked.status == 0 else set()
        files = [
            replace(
                f,
                untracked=f.path in new,
                uncommitted=f.path in new
                or changed is None
                or f.path in changed
                or (f.old_path is not None and f.old_path in changed),
            )
            for f in files
        ]
        on = probe.on or "HEAD"
        branches = [replace(log, current=log.ref == on) for log in logs if log.commits or log.ref == on]
        branches.sort(key=lambda b: (not b.current, b.name))
        return Review(
            title=self.title,
            base=base,
            base_note=self.base_note or (f"since {base[:12]}" if self.base else "since an empty checkout"),
            files=tuple(files),
            branches=tuple(branches),
            head=probe.on.removeprefix("refs/heads/"),
            notes=tuple(notes),
        )

    async def _uncommitted(self, probe: Probe) -> set[bytes] | None:
        """Paths whose working-tree state differs from HEAD (None: no commit yet, all of it is)."""
        if not probe.head:
            return None
        out = await self._git(
            [*GIT, "diff", "--name-only", "-z", "--no-ext-diff", "--no-textconv", "HEAD", "--"],
            LIST_LIMIT,
            untracked=True,
        )
        return {p for p in out.data.split(b"\0") if p} if out.status == 0 else None

    async def _log(self, base: str, ref: str, sha: str) -> BranchLog:
        name = ref.removeprefix("refs/heads/") if ref != "HEAD" else "HEAD (detached)"
        revs = [sha] if base == EMPTY_TREE else [f"{base}..{sha}"]
        out = await self._git(
            [
                *GIT,
                "log",
                "-z",
                "--no-color",
                "--no-show-signature",
                "--encoding=UTF-8",
                LOG_FORMAT,
                f"--max-count={MAX_COMMITS + 1}",
                *revs,
                "--",
            ],
            LOG_LIMIT,
        )
        commits = parse_log(out.data, truncated=out.truncated)
        return BranchLog(name, sha, tuple(commits[:MAX_COMMITS]), len(commits) > MAX_COMMITS or out.truncated, ref=ref)

    async def counted(self, review: Review) -> Review:
        out = await self._git(
            [*GIT, "diff", "--numstat", "-z", *DIFF_FLAGS, *self._sides(review.base), "--"],
            LIST_LIMIT,
            untracked=self.worktree,
        )
        counts = parse_numstat(out.data)
        files = []
        for f in review.files:
            got = counts.get(f.path)
            if got is None:
                files.append(f)
                continue
            added, deleted = got
            files.append(replace(f, added=added, deleted=deleted, binary=added is None and deleted is None))
        return replace(review, files=tuple(files), counted=True)

    async def file_diff(self, change: FileChange) -> FileDiff:
        base = self.base or EMPTY_TREE
        paths = [p for p in (change.old_path, change.path) if p is not None]
        out = await self._git(
            [
                *GIT,
                "diff",
                "-p",
                *DIFF_FLAGS,
                "--src-prefix=a/",
                "--dst-prefix=b/",
                "--unified=3",
                *self._sides(base),
                "--",
                *(b":(literal)" + p for p in paths),
            ],
            DIFF_LIMIT,
            untracked=change.untracked,
        )
        if out.status not in (0, None):
            return FileDiff(note=f"git could not show this file's diff (exit {out.status})")
        return parse_patch(out.data, truncated=out.truncated)

    async def patch(self, review: Review) -> Output:
        """Every file's diff in one (``git diff -p``), cut at PATCH_LIMIT: for a terminal."""
        return await self._git(
            [*GIT, "diff", "-p", *DIFF_FLAGS, "--src-prefix=a/", "--dst-prefix=b/", *self._sides(review.base), "--"],
            PATCH_LIMIT,
            untracked=self.worktree,
        )


@dataclass
class PushReview(GitReview):
    """The review of one pushed branch: ``base``..``new`` in a repository without a working tree
    (the gate's mirror, for a git-push proposal), with the commits of ``branch`` between them.
    ``base`` None: everything ``new`` holds is new."""

    new: str = ""
    branch: str = ""
    worktree = False

    def _sides(self, base: str) -> list[str]:
        return [base, self.new]

    async def review(self) -> Review:
        base = self.base or EMPTY_TREE
        listing, log = await asyncio.gather(
            self._git([*GIT, "diff", "--raw", "-z", "--no-abbrev", *DIFF_FLAGS, base, self.new, "--"], LIST_LIMIT),
            self._log(base, f"refs/heads/{self.branch}", self.new),
        )
        if listing.status not in (0, None):
            raise BottleError(
                f"the gate's mirror {self.workdir} cannot show {base[:12]}..{self.new[:12]} (git exit {listing.status})"
            )
        files = parse_raw(listing.data, truncated=listing.truncated)
        notes = [f"the file list is cut at {LIST_LIMIT >> 20} MiB: {len(files)} files are listed"] * listing.truncated
        return Review(
            title=self.title,
            base=base,
            base_note=self.base_note or (f"{base[:12]}..{self.new[:12]}" if self.base else f"all of {self.new[:12]}"),
            files=tuple(files),
            branches=(replace(log, current=True),),
            head=self.branch,
            notes=tuple(notes),
        )


def review_stat(review: Review) -> list[str]:
    """``--stat``: one line a file (counts, where, name), then the totals."""
    lines: list[str] = []
    added = deleted = 0
    for f in review.files:
        counts = "binary" if f.binary else f"+{f.added or 0} -{f.deleted or 0}"
        added += f.added or 0
        deleted += f.deleted or 0
        name = f"{f.old_name} => {f.name}" if f.old_path is not None else f.name
        lines.append(f"{f.status} {counts:>14}  {f.where:<11}  {name}")
    lines.append(f"{len(review.files)} files changed, {added} insertions(+), {deleted} deletions(-)")
    return lines


def commit_lines(review: Review) -> Iterable[str]:
    for b in review.branches:
        mark = " (checked out)" if b.current else ""
        yield f"branch {b.name}{mark}: {len(b.commits)}{'+' if b.more else ''} commits since the start"
        for c in b.commits:
            yield f"  {c.sha[:12]} {c.date} {c.author}: {c.subject}"
