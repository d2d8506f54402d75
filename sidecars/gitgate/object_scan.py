"""Every object a push brings, scanned by one gitleaks process: what the push adds (``git rev-list
--objects`` over all pushed tips, minus what the mirror's refs reach) is written to files, one or
more per object, and ``gitleaks dir`` reads them all at once with the gate's own rules.

What each object becomes (its "views"): a blob its raw bytes, and when it holds NUL bytes also its
text with the NULs removed (one NUL must not split a token out of sight); a commit or a tag its
raw object as git stores it (every header, the message bytes as they are, no re-encoding); a tree
its entry names, one a line. Each file starts with a line of the gate's own, so that no pushed
bytes sit where gitleaks' file-type sniffing looks for a binary or archive signature, and large
views are cut into overlapping pieces of under 100 kB, gitleaks' fragment size, so no secret
straddles two fragments. gitleaks prints how many bytes it read: anything but the bytes written
means it skipped something, and the push is refused.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass, field

from push_policy import Finding, GateError, report_items

SCAN_TIMEOUT = 600
# A line of the gate's own before the pushed bytes: file-type signatures sit at offsets 0 to 261
# (tar's at 257); ISO 9660's at 32769 is handled by shifting the piece one byte (see _header).
HEADER = b"#" + b" " * 262 + b"\n"
HEADER_LINES = 1
PIECE = 96 * 1024  # under gitleaks' 100,000-byte read, so each file is one fragment
OVERLAP = 8 * 1024  # a secret shorter than this is whole in at least one piece
_ISO_AT, _ISO_MAGIC = 32769, b"CD001"
# Names gitleaks (mholt/archives, by name only) takes for archives and then skips at depth 0.
_ARCHIVE_TOKENS = (
    ".7z",
    ".br",
    ".bz2",
    ".gz",
    ".lz4",
    ".lz",
    ".mz",
    ".rar",
    ".sz",
    ".s2",
    ".tar",
    ".xz",
    ".zip",
    ".zz",
    ".zst",
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SCANNED_RE = re.compile(r"scanned ~(\d+) bytes")
_PRINTABLE = re.compile(rb"[\t\n\x0b\x0c\r\x20-\x7e]{8,}")
_NOT_TEXT = re.compile(rb"[^\t\n\x0b\x0c\r\x20-\x7e]")


@dataclass
class PushObject:
    oid: str
    kind: str  # blob | tree | commit | tag
    size: int
    name: bytes | None = None  # a blob's or tree's entry name, where a new tree names it
    path: str | None = None  # where it sits, for the agent's message
    commit: str | None = None  # the pushed commit whose tree holds it
    symlink: bool = False


@dataclass
class Segment:
    """Part of one view of one object, at a line of a file gitleaks reads."""

    index: int  # the object's
    view: str  # "raw" | "text" (printable runs, NULs removed) | "names" (a tree's)
    file_line: int  # the file's line this segment starts on
    first_line: int  # the view's line it starts with (1-based)
    line_map: list[tuple[int, int]] | None = None  # (view line, object line) run starts; None: the same


@dataclass
class ScanResult:
    objects: list[PushObject]
    files: int
    bytes_written: int
    bytes_scanned: int
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0


def new_objects(git_dir: str, tips: list[str]) -> list[str]:
    """Every object reachable from ``tips`` that no ref of the mirror reaches, whatever its type
    (commits, trees, blobs, tags and tags of tags), as git lists them."""
    if not tips:
        return []
    proc = subprocess.run(
        ["git", "--git-dir", git_dir, "rev-list", "--objects", "--no-object-names", "--stdin", "--not", "--all"],
        input="".join(t + "\n" for t in tips),
        capture_output=True,
        text=True,
        timeout=SCAN_TIMEOUT,
    )
    if proc.returncode != 0:
        raise GateError(f"cannot list the pushed objects: {proc.stderr.strip()[:300]}")
    return list(dict.fromkeys(proc.stdout.split()))


def _cat_file(git_dir: str, oids: list[str], batch: str):
    """``git cat-file --batch[-check]`` over ``oids``: yields (oid, type, size, data or None)."""
    with tempfile.TemporaryFile() as ask:  # a file, not a pipe: git's answers never wait on our writes
        ask.write("".join(o + "\n" for o in oids).encode())
        ask.seek(0)
        proc = subprocess.Popen(
            ["git", "--git-dir", git_dir, "cat-file", batch],
            stdin=ask,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    try:
        for _ in oids:
            header = proc.stdout.readline().decode(errors="replace").split()
            if len(header) != 3:
                raise GateError(
                    f"cannot read pushed object {' '.join(header)[:80] or '(no answer)'}; nothing was sent upstream"
                )
            oid, kind, size = header[0], header[1], int(header[2])
            data = None
            if batch == "--batch":
                data = proc.stdout.read(size)
                proc.stdout.read(1)
                if len(data) != size:
                    raise GateError(f"pushed object {oid} was cut short; nothing was sent upstream")
            yield oid, kind, size, data
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()


def tree_entries(data: bytes) -> list[tuple[str, bytes, str]]:
    """(mode, name, oid) of each entry of a raw tree object."""
    entries, i = [], 0
    while i < len(data):
        sp = data.index(b" ", i)
        nul = data.index(b"\0", sp)
        entries.append((data[i:sp].decode(), data[sp + 1 : nul], data[nul + 1 : nul + 21].hex()))
        i = nul + 21
    return entries


def text_view(data: bytes) -> tuple[bytes, list[tuple[int, int]]] | None:
    """The printable runs of ``data`` with its NUL bytes removed, one run a line, and where each
    run starts (its line in the view, its line in the object); None when ``data`` is plain text.

    A NUL inside a token hides it from the raw scan, and so does a byte that is not text right after
    it (most rules want a quote, a space or the end after the secret): here each run ends a line."""
    if not _NOT_TEXT.search(data):
        return None
    stripped = data.replace(b"\0", b"")
    lines_before = 0
    pos = 0
    out, line_map, view_line = [], [], 1
    for m in _PRINTABLE.finditer(stripped):
        lines_before += stripped.count(b"\n", pos, m.start())
        pos = m.start()
        out.append(m.group())
        line_map.append((view_line, lines_before + 1))
        view_line += m.group().count(b"\n") + 1
    return b"\n".join(out), line_map


def safe_name(name: bytes | None, kind: str) -> str:
    """A file name gitleaks reads as a plain file: the entry's name where it has one (gitleaks'
    path-conditioned rules look at it), never one it would take for an archive."""
    text = _UNSAFE.sub("_", name.decode("ascii", "replace"))[-100:] if name else kind
    while True:
        lower = text.lower()
        hits = [lower.find(t) for t in _ARCHIVE_TOKENS if t in lower]
        if not hits:
            return text or kind
        i = min(hits)
        text = text[:i] + "_" + text[i + 1 :]


def _framed(body: bytes) -> bytes:
    """``body`` behind the gate's first line, one byte longer when ISO 9660's signature would land
    where gitleaks' sniffing looks for it (the only signature beyond the first line's reach)."""
    framed = HEADER + body
    if framed[_ISO_AT : _ISO_AT + len(_ISO_MAGIC)] == _ISO_MAGIC:
        framed = HEADER[:-1] + b" \n" + body
    return framed


class _Writer:
    """Writes the views into files for gitleaks and remembers what each file's lines are: small
    views share a file (one file per object would cost a file open a piece, twice), a view gitleaks'
    path-conditioned rules could care about gets files named after it, a large one is cut."""

    def __init__(self, folder: str):
        self.folder = folder
        self.files: list[tuple[str, list[Segment]]] = []  # (name, segments), numbered by position
        self.bytes = 0
        self._body: list[bytes] = []
        self._size = 0
        self._segments: list[Segment] = []
        self._line = HEADER_LINES + 1

    def _write(self, name: str, body: bytes, segments: list[Segment]) -> None:
        number = len(self.files)
        framed = _framed(body)
        with open(os.path.join(self.folder, f"{number}_{name}"), "wb") as f:
            f.write(framed)
        self.files.append((name, segments))
        self.bytes += len(framed)

    def flush(self) -> None:
        if self._segments:
            self._write("objects", b"".join(self._body), self._segments)
        self._body, self._size, self._segments, self._line = [], 0, [], HEADER_LINES + 1

    def view(
        self, index: int, view: str, data: bytes, name: str | None = None, line_map: list[tuple[int, int]] | None = None
    ) -> None:
        """Add one view; ``name`` (a safe file name) when it must sit in a file of its own name."""
        if not data:
            return
        if name is None and len(data) < PIECE:
            if self._size + len(data) + 1 > PIECE:
                self.flush()
            self._segments.append(Segment(index, view, self._line, 1, line_map))
            text = data if data.endswith(b"\n") else data + b"\n"
            self._body.append(text)
            self._size += len(text)
            self._line += text.count(b"\n")
            return
        start, line = 0, 1
        while True:
            self._write(
                name or "object", data[start : start + PIECE], [Segment(index, view, HEADER_LINES + 1, line, line_map)]
            )
            if start + PIECE >= len(data):
                return
            step = PIECE - OVERLAP
            line += data.count(b"\n", start, start + step)
            start += step

    def locate(self, path: str, file_line: int) -> tuple[Segment, int]:
        """The segment holding line ``file_line`` of the file gitleaks names ``path``, and that
        line as a line of the segment's view."""
        number = os.path.basename(path).split("_", 1)[0]
        if not number.isdigit() or int(number) >= len(self.files):
            raise GateError(
                f"gitleaks reported a finding in {os.path.basename(path)[:80]!r}, which the gate did not write; nothing was sent upstream"
            )
        segments = self.files[int(number)][1]
        seg = next((s for s in reversed(segments) if s.file_line <= file_line), segments[0])
        return seg, seg.first_line + max(file_line - seg.file_line, 0)


def _object_line(seg: Segment, view_line: int) -> int:
    if seg.line_map is None:
        return view_line
    view_start, object_start = next(((v, o) for v, o in reversed(seg.line_map) if v <= view_line), (1, 1))
    return object_start + view_line - view_start


def _where(obj: PushObject, view: str, line: int, header_lines: int) -> tuple[str, int, str, str]:
    """(what, line, id kind, id) of a finding, as the agent reads it (a view's finding reads as
    the object's: the same secret seen raw and with NULs removed is one finding)."""
    suffix = ""
    if obj.kind in ("commit", "tag"):
        if line <= header_lines:
            return f"{obj.kind} header{suffix}", line, obj.kind, obj.oid
        return f"{obj.kind} message{suffix}", line - header_lines - 1, obj.kind, obj.oid
    if obj.kind == "tree":
        return "tree entry names", line, "tree", obj.oid
    what = obj.path or "a blob no tree names"
    if obj.symlink:
        what += " (symlink target)"
    if obj.commit:
        return what + suffix, line, "commit", obj.commit
    return what + suffix, line, "blob", obj.oid


def _display(name: bytes) -> str:
    return "".join(c if c.isprintable() else "?" for c in name.decode("utf-8", "replace"))[:200]


def path_rules(config: str) -> list[re.Pattern[str]] | None:
    """The ``path`` conditions of the config's rules, where Python reads them as gitleaks does;
    None when one cannot be read (then every named blob gets files of its own name)."""
    try:
        with open(config, "rb") as f:
            rules = tomllib.load(f).get("rules", [])
        return [re.compile(r["path"]) for r in rules if r.get("path")]
    except (OSError, ValueError, re.error):
        return None


def scan_push(git_dir: str, tips: list[str], gitleaks: str, config: str) -> ScanResult:
    """Scan every new object under ``tips``; the findings, and what was written and read."""
    started = time.monotonic()
    oids = new_objects(git_dir, tips)
    if not oids:
        return ScanResult([], 0, 0, 0)
    objects: list[PushObject] = []
    raw: dict[str, bytes] = {}
    for oid, kind, size, data in _cat_file(git_dir, oids, "--batch"):
        objects.append(PushObject(oid, kind, size))
        raw[oid] = data
    by_oid = {o.oid: o for o in objects}
    header_lines = {
        o.oid: raw[o.oid].split(b"\n\n", 1)[0].count(b"\n") + 1 for o in objects if o.kind in ("commit", "tag")
    }
    _name_objects(objects, by_oid, raw)
    rules = path_rules(config)
    with tempfile.TemporaryDirectory(prefix="git-gate-scan-") as work:
        folder = os.path.join(work, "objects")
        os.mkdir(folder)
        writer = _Writer(folder)
        for i, obj in enumerate(objects):
            data = raw.pop(obj.oid)
            if obj.kind == "tree":
                writer.view(i, "names", b"\n".join(name for _, name, _ in tree_entries(data)))
                continue
            name = None
            if obj.kind == "blob" and obj.name:
                safe = safe_name(obj.name, "blob")
                if rules is None or any(r.search("/" + safe) for r in rules):
                    name = safe
            writer.view(i, "raw", data, name)
            text = text_view(data)
            if text:
                writer.view(i, "text", text[0], name, text[1])
        writer.flush()
        items, scanned = run_gitleaks(gitleaks, config, folder, work)
    if scanned != writer.bytes:
        raise GateError(
            f"gitleaks read {scanned} of the {writer.bytes} bytes written for the push's {len(objects)} objects, "
            "so part of it went unscanned; nothing was sent upstream"
        )
    found = set()
    for item in items:
        seg, view_line = writer.locate(str(item.get("File", "")), int(item.get("StartLine") or 0))
        obj = objects[seg.index]
        what, line, id_kind, oid = _where(obj, seg.view, _object_line(seg, view_line), header_lines.get(obj.oid, 0))
        found.add(Finding(str(item.get("RuleID", "?")), what, line, oid, id_kind))
    return ScanResult(
        objects,
        len(writer.files),
        writer.bytes,
        scanned,
        sorted(found, key=Finding.sort_key),
        time.monotonic() - started,
    )


def _name_objects(objects: list[PushObject], by_oid: dict[str, PushObject], raw: dict[str, bytes]) -> None:
    """Give new blobs and trees the path and commit of a new tree entry that holds them: from each
    pushed commit's root tree (oldest first), then from trees a tag or a ref points at directly."""
    seen: set[str] = set()

    def walk(tree: str, prefix: str, commit: str | None) -> None:
        stack = [(tree, prefix)]
        while stack:
            oid, at = stack.pop()
            if oid in seen or oid not in raw:
                continue
            seen.add(oid)
            for mode, name, child in tree_entries(raw[oid]):
                obj = by_oid.get(child)
                if obj is None or obj.path is not None:
                    continue
                obj.name, obj.path, obj.commit = name, at + _display(name), commit
                obj.symlink = mode == "120000"
                if obj.kind == "tree":
                    stack.append((child, obj.path + "/"))

    commits = [o for o in objects if o.kind == "commit"]
    for c in reversed(commits):  # rev-list lists newest first
        first = raw[c.oid].split(b"\n", 1)[0]
        if first.startswith(b"tree "):
            walk(first[5:].decode(), "", c.oid)
    for o in objects:
        if o.kind == "tree" and o.oid not in seen:
            walk(o.oid, "", None)


def run_gitleaks(gitleaks: str, config: str, folder: str, work: str) -> tuple[list[dict], int]:
    """One ``gitleaks dir`` over ``folder``: its findings (secrets redacted) and the bytes it read."""
    report = os.path.join(work, "report.json")
    ignore = os.path.join(work, "no-ignores")
    os.mkdir(ignore)
    argv = [
        gitleaks,
        "dir",
        folder,
        "--no-banner",
        "--no-color",
        "--log-level",
        "info",
        "--redact",
        "--config",
        config,
        "--report-format",
        "json",
        "--report-path",
        report,
        "--max-decode-depth",
        "5",
        # The pushed content must not switch its own scan off: no inline `gitleaks:allow`, and no
        # .gitleaksignore (looked up in an empty folder; the scan folder holds none at its top).
        "--ignore-gitleaks-allow",
        "--gitleaks-ignore-path",
        ignore,
        "--exit-code",
        "3",
    ]
    # gitleaks reads its config from --config only; the environment must not name another.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITLEAKS_")}
    try:
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, timeout=SCAN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise GateError(
            f"gitleaks did not finish scanning the push within {SCAN_TIMEOUT} s; nothing was sent upstream"
        ) from None
    except OSError as e:
        raise GateError(f"cannot run gitleaks ({e.strerror or e}); nothing was sent upstream") from None
    log = proc.stderr.decode("utf-8", "replace")
    if proc.returncode not in (0, 3):
        last = (log.strip().splitlines() or ["no output"])[-1]
        raise GateError(f"gitleaks failed on the push (exit {proc.returncode}): {last[:300]}")
    scanned = _SCANNED_RE.search(log)
    if scanned is None:
        raise GateError("gitleaks did not say how much it scanned; nothing was sent upstream")
    with open(report, encoding="utf-8") as f:
        items = report_items(f.read())
    if proc.returncode == 3 and not items:
        raise GateError("gitleaks reported leaks in the push but its report lists none")
    return items, int(scanned[1])
