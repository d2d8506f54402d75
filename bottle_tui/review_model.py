"""What a review of an agent's work holds (files, diffs, commits, branches) and how git's
machine output becomes it: ``-z --raw``, ``-z --numstat``, NUL-separated ``log`` fields and
patches. Pure: nothing here runs git, and nothing trusts what it parses (names, messages and diff
lines are the agent's bytes, shown only through the console's inert rendering)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import BottleError

MAX_DIFF_LINES = 20_000  # one file's diff is cut there (and at work_review.DIFF_LIMIT bytes)

# -- the data model ---------------------------------------------------------------------------------


def shown(raw: bytes) -> str:
    """Bytes of the agent's as text to show (invalid UTF-8 as U+FFFD; still to be made inert)."""
    return raw.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class FileChange:
    """One file that differs from the starting point. ``path``/``old_path`` are git's exact bytes."""

    status: str  # A added, M modified, D deleted, R renamed, C copied, T type changed, U unmerged
    path: bytes
    old_path: bytes | None = None  # renames and copies
    old_mode: str = ""
    new_mode: str = ""
    score: int | None = None  # similarity of a rename or copy, percent
    untracked: bool = False  # not in git's index at all (a new file the agent never added)
    uncommitted: bool = False  # differs between the branch's last commit and the working tree
    added: int | None = None  # lines, from --numstat (None: not counted yet, or binary)
    deleted: int | None = None
    binary: bool = False

    @property
    def name(self) -> str:
        return shown(self.path)

    @property
    def old_name(self) -> str | None:
        return None if self.old_path is None else shown(self.old_path)

    @property
    def where(self) -> str:
        """Where the change lives: untracked, uncommitted (staged or not), or committed."""
        return "untracked" if self.untracked else "uncommitted" if self.uncommitted else "committed"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "path": self.name}
        if self.path != self.name.encode():
            out["path_base64"] = base64.b64encode(self.path).decode()
        if self.old_path is not None:
            out["old_path"] = self.old_name
            if self.score is not None:
                out["similarity"] = self.score
        out.update(where=self.where, binary=self.binary, added=self.added, deleted=self.deleted)
        if self.old_mode != self.new_mode:
            out.update(old_mode=self.old_mode, new_mode=self.new_mode)
        return out


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    author: str
    email: str
    date: str  # ISO 8601, the author's
    message: str

    @property
    def subject(self) -> str:
        return (self.message.splitlines() or [""])[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "sha": self.sha,
            "parents": list(self.parents),
            "author": self.author,
            "email": self.email,
            "date": self.date,
            "message": self.message,
        }


@dataclass(frozen=True)
class BranchLog:
    """The commits on one branch that the starting point does not have, newest first."""

    name: str  # refs/heads/<name> without the prefix
    tip: str
    commits: tuple[Commit, ...] = ()
    more: bool = False  # more than MAX_COMMITS (or LOG_LIMIT) of them: the rest are not listed
    current: bool = False  # the branch the working tree is on
    ref: str = ""  # refs/heads/<name>, or HEAD for a detached working tree

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tip": self.tip,
            "current": self.current,
            "commits": [c.to_json() for c in self.commits],
            "more": self.more,
        }


@dataclass(frozen=True)
class DiffLine:
    kind: str  # meta (headers), hunk (@@), add, del, ctx, note ("\ No newline at end of file")
    text: str  # without the +/-/space prefix for add, del and ctx


@dataclass(frozen=True)
class FileDiff:
    lines: tuple[DiffLine, ...] = ()
    binary: bool = False
    truncated: bool = False  # cut at DIFF_LIMIT bytes or MAX_DIFF_LINES lines
    note: str = ""  # one line when there is nothing to show (and why)


@dataclass(frozen=True)
class Review:
    """Everything but the file diffs, which are loaded one at a time (``ReviewSource.file_diff``)."""

    title: str
    base: str  # the commit compared against (EMPTY_TREE when the checkout started empty)
    base_note: str  # one line: what the starting point is and where it was taken from
    files: tuple[FileChange, ...] = ()
    branches: tuple[BranchLog, ...] = ()
    head: str = ""  # the working tree's branch ("" when detached), for the header
    notes: tuple[str, ...] = ()  # one line each: what was cut, what could not be read
    counted: bool = False  # files carry --numstat's counts

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "base": self.base,
            "base_note": self.base_note,
            "head": self.head,
            "branches": [b.to_json() for b in self.branches],
            "files": [f.to_json() for f in self.files],
            "notes": list(self.notes),
        }


class ReviewSource(Protocol):
    """What a review screen is fed: the review (without diffs), the counts, one file's diff.
    Implemented for a bottle's checkout by ``GitReview`` over the backend's exec; anything else
    that holds a repository (the gate's mirror for a git-push proposal) can feed the same screen."""

    @property
    def title(self) -> str: ...

    async def review(self) -> Review: ...

    async def counted(self, review: Review) -> Review:
        """``review`` with every file's added/deleted lines (one more git call)."""

    async def file_diff(self, change: FileChange) -> FileDiff: ...


# -- git's machine output ---------------------------------------------------------------------------


def parse_raw(data: bytes, *, truncated: bool = False) -> list[FileChange]:
    """``git diff --raw -z --no-abbrev``: ``:old new oldsha newsha STATUS\\0path\\0`` (two paths
    for renames and copies). ``truncated``: the output was cut at its bound, and the record it
    cut is dropped."""
    fields = data.split(b"\0")[:-1]  # whole output ends with a NUL; cut output with a partial field
    out: list[FileChange] = []
    i = 0
    while i < len(fields):
        meta = fields[i]
        parts = meta[1:].split(b" ") if meta.startswith(b":") else []
        if len(parts) != 5 or not parts[4]:
            raise BottleError("git's file list is not in the form asked for (--raw -z)")
        old_mode, new_mode, status_field = parts[0].decode(), parts[1].decode(), parts[4].decode("ascii", "replace")
        status, score = status_field[0], int(status_field[1:]) if status_field[1:].isdigit() else None
        count = 2 if status in ("R", "C") else 1
        if i + count >= len(fields):  # its paths are missing
            if truncated:
                break
            raise BottleError("git's file list ends in the middle of a record (--raw -z)")
        paths = fields[i + 1 : i + 1 + count]
        i += 1 + count
        if count == 2:
            out.append(FileChange(status, paths[1], paths[0], old_mode, new_mode, score))
        else:
            out.append(FileChange(status, paths[0], None, old_mode, new_mode, score))
    return out


def parse_numstat(data: bytes) -> dict[bytes, tuple[int | None, int | None]]:
    """``git diff --numstat -z``: ``added\\tdeleted\\tpath\\0``, or for a rename
    ``added\\tdeleted\\t\\0old\\0new\\0``; ``-`` counts mean binary. Keyed by the (new) path."""
    fields = data.split(b"\0")
    counts: dict[bytes, tuple[int | None, int | None]] = {}
    i = 0
    while i < len(fields):
        record = fields[i]
        i += 1
        if not record:
            continue
        parts = record.split(b"\t", 2)
        if len(parts) != 3:
            raise BottleError("git's line counts are not in the form asked for (--numstat -z)")
        added, deleted, path = parts
        if path == b"":  # a rename: the old and new path follow
            if i + 1 >= len(fields):
                break
            path = fields[i + 1]
            i += 2
        counts[path] = (
            int(added) if added.isdigit() else None,
            int(deleted) if deleted.isdigit() else None,
        )
    return counts


LOG_FORMAT = "--format=%H%x00%P%x00%an%x00%ae%x00%aI%x00%B"
_SHA = re.compile(r"\A[0-9a-f]{40}([0-9a-f]{24})?\Z")


def parse_log(data: bytes, *, truncated: bool = False) -> list[Commit]:
    """``git log -z`` with LOG_FORMAT: six NUL-separated fields a commit, each commit ended by a
    NUL (git cuts a message at a NUL byte, so no field holds one). ``truncated``: the output was
    cut at its bound, and the commit it cut is dropped."""
    fields = data.split(b"\0")[:-1]  # the empty rest after the last NUL, or a field cut short
    whole = len(fields) // 6 * 6
    if whole != len(fields) and not truncated:
        raise BottleError("git's commit list is not in the form asked for (log -z)")
    commits: list[Commit] = []
    for at in range(0, whole, 6):
        sha, parents, author, email, date, message = (shown(f) for f in fields[at : at + 6])
        if not _SHA.match(sha):
            raise BottleError("git's commit list is not in the form asked for (log -z)")
        commits.append(Commit(sha, tuple(parents.split()), author, email, date, message.rstrip("\n")))
    return commits


def parse_patch(data: bytes, *, truncated: bool = False) -> FileDiff:
    """One file's ``git diff -p``: header lines, then hunks. ``truncated``: the output was cut at
    its bound (its last, partial line is dropped)."""
    if truncated:
        data = data[: data.rfind(b"\n") + 1] if b"\n" in data else b""
    lines: list[DiffLine] = []
    binary = False
    in_hunk = False
    cut = truncated
    for raw in data.split(b"\n"):
        if len(lines) >= MAX_DIFF_LINES:
            cut = True
            break
        text = shown(raw)
        if not in_hunk:
            if raw.startswith(b"@@"):
                in_hunk = True
                lines.append(DiffLine("hunk", text))
            elif raw.startswith(b"Binary files ") or raw == b"GIT binary patch":
                binary = True
                lines.append(DiffLine("meta", text))
            elif raw:
                lines.append(DiffLine("meta", text))
            continue
        if raw.startswith(b"@@"):
            lines.append(DiffLine("hunk", text))
        elif raw.startswith(b"+"):
            lines.append(DiffLine("add", text[1:]))
        elif raw.startswith(b"-"):
            lines.append(DiffLine("del", text[1:]))
        elif raw.startswith(b" "):
            lines.append(DiffLine("ctx", text[1:]))
        elif raw.startswith(b"\\"):
            lines.append(DiffLine("note", text))
        elif raw.startswith(b"diff --git "):  # a second file (a pathspec matched two): its header
            in_hunk = False
            lines.append(DiffLine("meta", text))
        elif raw:
            lines.append(DiffLine("meta", text))
    note = "" if lines else "no difference in content"
    return FileDiff(tuple(lines), binary, cut, note)
