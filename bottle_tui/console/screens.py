"""The console's dialogs: each a ModalScreen that dismisses with its answer (or None on Esc).

They hold no I/O: the app reads files and runs commands in workers and hands them text; what an
agent or a label supplied arrives here already inert, or is made inert here before it is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Log, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from ..errors import BottleError
from .inert import inert

T = TypeVar("T")


def _title(text: str) -> Static:
    return Static(Text(text, style="bold"), classes="dialog-title")


def _keys(text: str) -> Static:
    return Static(Text(text), classes="dialog-keys")


class ProposalDetail(ModalScreen[str | None]):
    """One proposal in full: reason, the policy before/after, its history. a/m/r decide from here."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="detail.close"),
        Binding("a", "decide('approve')", "Approve", id="detail.approve"),
        Binding("m", "decide('modify')", "Modify", id="detail.modify"),
        Binding("r", "decide('reject')", "Reject", id="detail.reject"),
    ]

    def __init__(self, sections: Sequence[tuple[str, str]], *, pending: bool) -> None:
        super().__init__()
        self._sections = sections
        self._pending = pending

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide", id="detail"):
            yield _title("Proposal")
            for label, body in self._sections:
                yield Static(Text(label, style="bold"), classes="section-label")
                yield Static(inert_block(body), classes="section")
            yield _keys("a approve · m modify · r reject · Esc close" if self._pending else "decided · Esc close")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self._pending if action == "decide" else True

    def action_decide(self, what: str) -> None:
        self.dismiss(what)


def inert_block(text: str) -> Text:
    """Multi-line untrusted text: each line inert, line breaks kept."""
    out = Text(end="")
    for i, line in enumerate(text.splitlines() or [""]):
        if i:
            out.append("\n")
        out.append_text(inert(line))
    return out


class ScopeScreen(ModalScreen[str | None]):
    """Approve: this once, or always (the route stays in routes.yaml)."""

    BINDINGS = [
        Binding("o", "dismiss('once')", "Once", id="scope.once"),
        Binding("a", "dismiss('always')", "Always", id="scope.always"),
        Binding("escape", "dismiss(None)", "Cancel", id="scope.cancel"),
    ]

    def __init__(self, what: str) -> None:
        super().__init__()
        self._what = what

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield _title("Approve")
            yield Static(inert(self._what))
            yield _keys("o once · a always · Esc cancel")


class NoteScreen(ModalScreen[str | None]):
    """Reject: the note the agent receives (may be empty)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="note.cancel")]

    def __init__(self, what: str) -> None:
        super().__init__()
        self._what = what

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield _title("Reject")
            yield Static(inert(self._what))
            yield Input(placeholder="a note for the agent (Enter sends, Esc cancels)", id="note", max_length=4000)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)


class EditorScreen(ModalScreen[T | None], Generic[T]):
    """A YAML editor that validates on save (ctrl+s): ``validate`` turns the text into the result
    or raises BottleError, whose one line is shown until the text is fixed."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="editor.save", priority=True),
        Binding("ctrl+e", "external", "$EDITOR", id="editor.external", priority=True),
        Binding("escape", "dismiss(None)", "Cancel", id="editor.cancel"),
    ]

    def __init__(self, title: str, text: str, validate: Callable[[str], T]) -> None:
        super().__init__()
        self._title_text = title
        self._text = text
        self._validate = validate

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide tall"):
            yield _title(self._title_text)
            yield TextArea(self._text, language=None, id="editor", soft_wrap=False, tab_behavior="indent")
            yield Static("", id="editor-error")
            yield _keys("ctrl+s save · ctrl+e edit in $EDITOR · Esc cancel")

    def _problem(self, text: str) -> None:
        error = self.query_one("#editor-error", Static)
        error.update(inert(text))
        error.add_class("-shown")

    def action_save(self) -> None:
        text = self.query_one(TextArea).text
        try:
            result = self._validate(text)
        except BottleError as exc:
            self._problem(str(exc))
            return
        self.dismiss(result)

    async def action_external(self) -> None:
        """Hand the text to $VISUAL/$EDITOR (the console suspends), then validate what was saved."""
        import os

        from textual.app import SuspendNotSupported

        from ..runner import edit_text

        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if not editor:
            self._problem("no editor: set $EDITOR (or $VISUAL) to edit outside the console")
            return
        try:
            with self.app.suspend():
                saved = await edit_text(editor, self.query_one(TextArea).text, ".yaml")
        except SuspendNotSupported:
            self._problem("this terminal cannot hand over to an editor: edit here")
            return
        except BottleError as exc:
            self._problem(str(exc))
            return
        self.query_one(TextArea).text = saved
        self.action_save()


# A picked snapshot's option id: the agent, this, the snapshot's name (agent names hold no spaces).
SNAPSHOT_CHOICE = " --from "


class PickerScreen(ModalScreen[str | None]):
    """Which agent to start, or which snapshot to fork (after the agents): type to filter; Esc
    clears the filter, then closes. Dismisses with the agent's name, or ``agent --from name``."""

    BINDINGS = [Binding("escape", "back", "Clear / close", id="picker.back")]

    def __init__(self, agents: Sequence[tuple[str, str, int]], snapshots: Sequence[tuple[str, str, str]] = ()) -> None:
        super().__init__()
        self._agents = list(agents)  # (name, description, running)
        self._snapshots = list(snapshots)  # (name, agent, what it is of and when), newest first

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="picker"):
            yield _title("Start an agent, or fork a snapshot")
            yield Input(placeholder="type to filter", id="filter")
            yield OptionList(id="agents")
            yield _keys("Enter start · ↑↓ choose · Esc clear / close")

    def on_mount(self) -> None:
        self._fill("")

    def _fill(self, needle: str) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        needle = needle.strip().lower()
        shown = 0
        for name, description, running in self._agents:
            if needle and needle not in name.lower() and needle not in description.lower():
                continue
            shown += 1
            label = inert(name)
            if running:
                label.append(f" ({running} running)")
            if description:
                label.append_text(Text("  "))
                label.append_text(inert(description))
            options.add_option(Option(label, id=name))
        forks = [s for s in self._snapshots if not needle or any(needle in part.lower() for part in s)]
        if forks:
            options.add_option(Option(Text("snapshots (a fork: a new bottle from one)", style="dim"), disabled=True))
        for name, agent, note in forks:
            label = Text("fork ")
            label.append_text(inert(name))
            label.append_text(Text(f"  {agent}, "))
            label.append_text(inert(note))
            options.add_option(Option(label, id=f"{agent}{SNAPSHOT_CHOICE}{name}"))
        if options.option_count:
            options.highlighted = 0 if shown or not forks else 1  # past the snapshots' heading

    def on_input_changed(self, event: Input.Changed) -> None:
        self._fill(event.value)

    def on_key(self, event: events.Key) -> None:  # arrows move the list while typing goes to the filter
        options = self.query_one(OptionList)
        if event.key in ("down", "up"):
            options.action_cursor_down() if event.key == "down" else options.action_cursor_up()
            event.stop()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._choose()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def _choose(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None and options.option_count:
            option = options.get_option_at_index(options.highlighted)
            if not option.disabled:
                self.dismiss(option.id)

    def action_back(self) -> None:
        field = self.query_one("#filter", Input)
        if field.value:
            field.value = ""
        else:
            self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; anything but y is no."""

    BINDINGS = [
        Binding("y", "dismiss(True)", "Yes", id="confirm.yes"),
        Binding("n", "dismiss(False)", "No", id="confirm.no"),
        Binding("escape", "dismiss(False)", "No", id="confirm.cancel"),
    ]

    def __init__(self, title: str, body: str, *, wide: bool = False) -> None:
        super().__init__()
        self._title_text = title
        self._body = body
        self._wide = wide

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide" if self._wide else "dialog"):
            yield _title(self._title_text)
            yield Static(inert_block(self._body), classes="section")
            yield _keys("y yes · N no")


class LogScreen(ModalScreen[None]):
    """A log that grows while a bottle comes up (or its compose logs); Esc closes, work goes on."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="log.close")]

    def __init__(self, title: str) -> None:
        super().__init__()
        self._title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide tall"):
            yield Label(Text(self._title_text, style="bold"), id="log-title")
            yield Log(id="log", max_lines=5000)
            yield _keys("Esc close (a start goes on in the background)")

    def write(self, line: str) -> None:
        # Log renders plain text (no markup); control characters become U+FFFD like every cell.
        self.query_one(Log).write_line(inert(line).plain)

    def set_title(self, text: str) -> None:
        self.query_one("#log-title", Label).update(Text(text, style="bold"))
