"""The review screen: what changed in a repository, fed by any ``ReviewSource`` (an agent's work
through `d`; a git-push proposal's detail, with `a` and `r` to decide it). The files stream into their table, each
file's diff is loaded when its row is highlighted and shown syntax-highlighted, and the commits
list with their messages. Every byte of it is the agent's: names, messages and diff lines are
made inert before Rich sees them, and only short lines of a bounded diff are highlighted (a lexer
on a crafted line must not hold the event loop)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

from rich.syntax import Syntax
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..errors import BottleError
from ..ops import FileChange, FileDiff, Review, ReviewSource
from .inert import inert, inert_text

BATCH = 500  # rows added to the file table between two turns of the event loop
DIFF_CACHE = 64  # file diffs kept (a diff is at most 1 MiB)
HIGHLIGHT_LINE = 400  # longer lines are shown plain: no lexer runs over them
HIGHLIGHT_TOTAL = 256 << 10  # nor over a diff with more text than this
SHOWN_LINE = 2000  # a line is cut here (with a marker) on screen
DEBOUNCE = 0.05  # seconds a highlighted row must stay before its diff is fetched
WHERE = {"committed": "", "uncommitted": "wip", "untracked": "new"}


@dataclass(frozen=True)
class DiffStyle:
    """Colours of a rendered diff, from the app's theme."""

    add: str = "green"
    delete: str = "red"
    add_bg: str = "#0f2a16"
    delete_bg: str = "#2e1113"
    hunk: str = "cyan"
    meta: str = "bold"
    note: str = "dim"
    syntax_theme: str = "ansi_dark"


def _lexer(name: str) -> str | None:
    """The language of a file by its name (Pygments' lookup, through Rich), or None."""
    try:
        lexer = Syntax.guess_lexer(name.rsplit("/", 1)[-1])
    except Exception:  # a lookup on an odd name must never take the screen down
        return None
    return None if lexer in ("default", "text") else lexer


def _shown_line(text: str) -> str:
    clean = inert_text(text).expandtabs(4)
    return clean if len(clean) <= SHOWN_LINE else clean[:SHOWN_LINE] + " …"


def render_diff(change: FileChange, diff: FileDiff, style: DiffStyle) -> Text:
    """One file's diff as Rich text: headers, hunks, added and deleted lines in their colours, the
    code of short lines highlighted for the file's language. Inert throughout."""
    out = Text(end="")
    title = f"{change.old_name} → {change.name}" if change.old_path is not None else change.name
    out.append_text(inert(f"{change.status} {title}"))
    out.stylize("bold")
    out.append(f"  ({change.where})\n")
    if diff.note:
        out.append(f"\n{diff.note}\n", style=style.note)
    if diff.binary:
        out.append("\nbinary to git (NUL bytes, over 4 MiB, or the repository's attributes say so): no text diff\n")
    code_lines = [_shown_line(line.text) for line in diff.lines]
    highlighted: list[Text] | None = None
    lexer = _lexer(change.name)
    total = sum(len(line) for line in code_lines)
    if lexer and total <= HIGHLIGHT_TOTAL:
        code = "\n".join(
            line if entry.kind in ("add", "del", "ctx") and len(line) <= HIGHLIGHT_LINE else ""
            for entry, line in zip(diff.lines, code_lines, strict=True)
        )
        try:
            highlighted = list(
                Syntax(code, lexer, theme=style.syntax_theme).highlight(code).split("\n", allow_blank=True)
            )
        except Exception:  # a lexer that fails on the agent's text leaves the lines plain
            highlighted = None
        if highlighted is not None and len(highlighted) < len(code_lines):
            highlighted = None
    for i, (entry, line) in enumerate(zip(diff.lines, code_lines, strict=True)):
        out.append("\n")
        if entry.kind in ("add", "del", "ctx"):
            prefix, colour, background = {
                "add": ("+", style.add, style.add_bg),
                "del": ("-", style.delete, style.delete_bg),
                "ctx": (" ", "", ""),
            }[entry.kind]
            body = Text(line, style=colour, end="")
            if highlighted is not None and line and len(line) <= HIGHLIGHT_LINE and highlighted[i].plain == line:
                body = highlighted[i].copy()
                body.end = ""
            if background:
                body.stylize(f"on {background}")
            out.append(prefix, style=f"bold {colour} on {background}" if colour else "")
            out.append_text(body)
        elif entry.kind == "hunk":
            out.append(line, style=style.hunk)
        elif entry.kind == "note":
            out.append(line, style=style.note)
        else:
            out.append(line, style=style.meta)
    if diff.truncated:
        out.append("\n\n… the diff is cut here (1 MiB or 20,000 lines); `bottle-tui diff` prints it whole up to 64 MiB")
    return out


def render_commit(branch: str, sha: str, author: str, email: str, date: str, message: str) -> Text:
    out = Text(end="")
    out.append(f"commit {sha}\n", style="bold")
    out.append_text(inert(f"branch {branch}"))
    out.append("\n")
    out.append_text(inert(f"author {author} <{email}>"))
    out.append(f"\ndate   {date}\n\n")
    for i, line in enumerate(message.splitlines() or [""]):
        if i:
            out.append("\n")
        out.append("    ")
        out.append_text(inert(_shown_line(line)))
    return out


def file_cells(change: FileChange) -> tuple[Text, Text, Text, Text]:
    counts = "bin" if change.binary else "" if change.added is None else f"+{change.added} -{change.deleted}"
    name = f"{change.old_name} → {change.name}" if change.old_path is not None else change.name
    return (
        Text(change.status, end=""),
        Text(WHERE[change.where], end=""),
        Text(counts, end=""),
        inert(_shown_line(name)),
    )


class ReviewScreen(Screen[str | None]):
    """Files (top left), commits (below them), the highlighted one's diff or message (right).
    With ``decide`` (a pending git-push proposal) `a` and `r` close it with "approve" or "reject"."""

    DEFAULT_CSS = """
    ReviewScreen #review-title { height: 1; padding: 0 1; background: $boost; color: $text; }
    ReviewScreen #review-status { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    ReviewScreen #review-status.-error { color: $error; }
    ReviewScreen #review-left { width: 2fr; min-width: 30; }
    ReviewScreen #review-view { width: 3fr; border: round $primary 40%; padding: 0 1; }
    ReviewScreen #review-view:focus-within { border: round $primary; }
    ReviewScreen #review-files { height: 2fr; border: round $primary 40%; }
    ReviewScreen #review-commits { height: 1fr; border: round $primary 40%; }
    ReviewScreen DataTable:focus { border: round $primary; }
    """

    BINDINGS = [
        Binding("escape", "close", "Close", id="review.close"),
        Binding("tab", "app.focus_next", "Next part", id="review.next"),
        Binding("shift+tab", "app.focus_previous", "Previous part", show=False, id="review.previous"),
        Binding("f5", "reload", "Reload", id="review.reload"),
        Binding("a", "decide('approve')", "Approve", id="review.approve"),
        Binding("r", "decide('reject')", "Reject", id="review.reject"),
    ]

    def __init__(self, source: ReviewSource, *, decide: bool = False) -> None:
        super().__init__()
        self.source = source
        self.decide = decide
        self.review: Review | None = None
        self.files: list[FileChange] = []
        self._diffs: OrderedDict[int, FileDiff] = OrderedDict()
        self._commits: dict[str, tuple[str, str, str, str, str, str]] = {}
        self._shown: str | None = None  # row key of what the view shows
        self.listed = False  # every file is in the table
        self.counted = False  # and carries its counts

    def compose(self) -> ComposeResult:
        yield Static(inert(self.source.title), id="review-title")
        yield Static("reading the repository…", id="review-status")
        with Horizontal():
            with Vertical(id="review-left"):
                files: DataTable[Text] = DataTable(id="review-files", cursor_type="row", zebra_stripes=True)
                files.border_title = "Files"
                for key, label in (("status", ""), ("where", ""), ("counts", "lines"), ("path", "path")):
                    files.add_column(label, key=key)
                yield files
                commits: DataTable[Text] = DataTable(id="review-commits", cursor_type="row")
                commits.border_title = "Commits"
                for key, label in (("branch", "branch"), ("sha", "commit"), ("subject", "message")):
                    commits.add_column(label, key=key)
                yield commits
            with VerticalScroll(id="review-view"):
                yield Static("", id="review-diff")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#review-files", DataTable).focus()
        self.action_reload()

    @property
    def style(self) -> DiffStyle:
        v = self.app.theme_variables
        dark = self.app.current_theme.dark
        add, delete = v.get("success", "#4ebf71"), v.get("error", "#ba3c5b")
        background = Color.parse(v.get("background", "#000000" if dark else "#ffffff"))
        return DiffStyle(
            add=add,
            delete=delete,
            add_bg=Color.parse(add).blend(background, 0.82).hex,
            delete_bg=Color.parse(delete).blend(background, 0.82).hex,
            hunk=v.get("secondary", "cyan"),
            meta="bold",
            note=f"italic {v.get('text-muted', 'grey50')}",
            syntax_theme="ansi_dark" if dark else "ansi_light",
        )

    def _status(self, text: str, *, error: bool = False) -> None:
        status = self.query_one("#review-status", Static)
        status.update(inert(text))
        status.set_class(error, "-error")

    # -- loading ---------------------------------------------------------------------------------

    def action_reload(self) -> None:
        self.run_worker(self._load(), group="review-load", exclusive=True, exit_on_error=False)

    async def _load(self) -> None:
        self.listed = self.counted = False
        try:
            review = await self.source.review()
        except BottleError as exc:
            self._status(str(exc), error=True)
            return
        self.review, self.files = review, list(review.files)
        self._diffs.clear()
        self._show_summary(review)
        files = self.query_one("#review-files", DataTable)
        files.clear()
        self._fill_commits(review)
        for start in range(0, len(self.files), BATCH):
            with self.app.batch_update():
                for i in range(start, min(start + BATCH, len(self.files))):
                    files.add_row(*file_cells(self.files[i]), key=str(i))
            files.border_title = f"Files ({files.row_count} of {len(self.files)})"
            await asyncio.sleep(0)  # the screen answers keys between batches
        files.border_title = f"Files ({len(self.files)})"
        self.listed = True
        if not self.files:
            self.query_one("#review-diff", Static).update(Text("no file differs from the start"))
        try:
            counted = await self.source.counted(review)
        except BottleError as exc:
            self._status(f"{self._summary(review)} · line counts: {exc}")
            return
        self.files = list(counted.files)
        for start in range(0, len(self.files), BATCH):
            with self.app.batch_update():
                for i in range(start, min(start + BATCH, len(self.files))):
                    files.update_cell(str(i), "counts", file_cells(self.files[i])[2])
            await asyncio.sleep(0)
        self.counted = True

    def _summary(self, review: Review) -> str:
        commits = sum(len(b.commits) for b in review.branches)
        on = f" · on {review.head}" if review.head else ""
        files = len(review.files)
        return f"{review.base_note}{on} · {files} file{'s' if files != 1 else ''}, {commits} commit{'s' if commits != 1 else ''}"

    def _show_summary(self, review: Review) -> None:
        self._status(" · ".join([self._summary(review), *review.notes]))

    def _fill_commits(self, review: Review) -> None:
        commits = self.query_one("#review-commits", DataTable)
        commits.clear()
        self._commits.clear()
        for b in review.branches:
            for c in b.commits:
                key = f"{b.ref}:{c.sha}"
                self._commits[key] = (b.name, c.sha, c.author, c.email, c.date, c.message)
                commits.add_row(inert(b.name), Text(c.sha[:10]), inert(_shown_line(c.subject)), key=key)
            if b.more:
                key = f"{b.ref}:more"
                commits.add_row(inert(b.name), Text(""), Text("… more commits, not listed"), key=key)
        commits.border_title = f"Commits ({len(self._commits)})"

    # -- what the view shows ------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#review-files")
    def _file_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        if key is None or not key.isdigit() or int(key) >= len(self.files):
            return
        self.run_worker(self._show_file(int(key)), group="review-diff", exclusive=True, exit_on_error=False)

    async def _show_file(self, index: int) -> None:
        view = self.query_one("#review-diff", Static)
        change = self.files[index]
        self._shown = str(index)
        diff = self._diffs.get(index)
        if diff is None:
            view.update(inert(f"{change.name}: loading its diff…"))
            await asyncio.sleep(DEBOUNCE)  # a row the cursor only passes over is not fetched
            try:
                diff = await self.source.file_diff(change)
            except BottleError as exc:
                view.update(inert(f"{change.name}: {exc}"))
                return
            self._diffs[index] = diff
            while len(self._diffs) > DIFF_CACHE:
                self._diffs.popitem(last=False)
        text = await asyncio.to_thread(render_diff, self.files[index], diff, self.style)
        if self._shown == str(index):
            view.update(text)
            self.query_one("#review-view", VerticalScroll).scroll_home(animate=False)

    @on(DataTable.RowHighlighted, "#review-commits")
    def _commit_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.has_focus and event.row_key.value is not None:
            self._show_commit(event.row_key.value)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """The view follows the table that has the focus: its highlighted file or commit."""
        table = event.widget
        if not isinstance(table, DataTable) or table.row_count == 0:
            return
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:
            return
        if key is None:
            return
        if table.id == "review-commits":
            self._show_commit(key)
        elif key.isdigit() and int(key) < len(self.files) and self._shown != key:
            self.run_worker(self._show_file(int(key)), group="review-diff", exclusive=True, exit_on_error=False)

    def _show_commit(self, key: str) -> None:
        if key not in self._commits:
            return
        self._shown = key
        self.query_one("#review-diff", Static).update(render_commit(*self._commits[key]))
        self.query_one("#review-view", VerticalScroll).scroll_home(animate=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.decide if action == "decide" else True

    def action_decide(self, choice: str) -> None:
        self.dismiss(choice)

    def action_close(self) -> None:
        self.dismiss(None)
