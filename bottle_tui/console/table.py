"""A pane's table: rows keyed by id, updated cell by cell (only what changed is touched)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

Cell = str | tuple[str, str]  # a plain cell, or (text, Rich style) for a highlighted one
Rows = dict[str, dict[str, Cell]]
GROWING = ("slug", "spend")  # columns whose cells grow in place (the column widens with them)


def cell_text(cell: Cell) -> Text:
    text, style = (cell, "") if isinstance(cell, str) else cell
    return Text(text, style=style, no_wrap=True, end="")


class PaneTable(DataTable[Text]):
    """A pane's table. It keeps its own cursor and the cells it shows."""

    def __init__(self, *, id: str, title: str, columns: Sequence[tuple[str, str]]) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.border_title = title
        self.columns_shown = columns
        self._shown: Rows = {}
        for key, label in columns:
            self.add_column(label, key=key)

    def keys(self) -> list[str]:
        """The row keys, top to bottom."""
        return [str(key.value) for key in self.rows]

    def selected_key(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            value = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:
            return None
        return str(value) if value is not None else None

    def sync(self, wanted: Mapping[str, dict[str, Cell]], only: Iterable[str] | None = None) -> list[str]:
        """Show ``wanted`` (row key -> cells) by touching only what changed; with ``only``, just
        those keys are looked at (the rest of ``wanted`` may be left out). Returns the keys of
        rows added."""
        shown = self._shown
        if only is None:
            gone, keys = set(shown) - set(wanted), list(wanted)
        else:
            only = list(only)
            gone, keys = {k for k in only if k in shown and k not in wanted}, [k for k in only if k in wanted]
        for key in gone:
            self.remove_row(key)
            del shown[key]
        added = []
        for key in keys:
            cells = wanted[key]
            before = shown.get(key)
            if before == cells:
                continue
            if before is None:
                self.add_row(*(cell_text(cells[c]) for c, _ in self.columns_shown), key=key)
                added.append(key)
            else:
                for col, value in cells.items():
                    if before.get(col) != value:
                        # the slug cell grows by the right pane's "* " marker, the spend as it is
                        # spent: the column widens only when a cell outgrows it (a relayout)
                        text = cell_text(value)
                        column = self.columns.get(ColumnKey(col)) if col in GROWING else None
                        grow = column is not None and text.cell_len > column.content_width
                        self.update_cell(key, col, text, update_width=grow)
            shown[key] = cells
        return added
