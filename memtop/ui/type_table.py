"""The types view's table: live objects by type, in the agent's order (largest growth
first). Filled only when the user asks for a walk, so a DataTable's redraws cost nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from memtop.formatting import clean_text, format_count, format_size
from memtop.leaks import TypeRow, TypesTable
from memtop.ui.cells import signed_cell

COLUMNS = (("#", True), ("COUNT", True), ("ΔCOUNT", True), ("SIZE", True), ("ΔSIZE", True))
STYLE_NAMES = ("growth", "shrink", "dim")


def type_cells(rank: int, row: TypeRow, styles: Mapping[str, Style]) -> tuple[Text, ...]:
    """One type's cells: rank, count, Δcount, shallow size, Δsize, then its name."""
    return (
        Text(str(rank), style=styles["dim"], justify="right"),
        Text(format_count(row.count), justify="right"),
        signed_cell(format_count(row.count_diff, True), row.count_diff, styles),
        # `*`: the class defines __sizeof__; the agent counted the objects' own bytes.
        Text(format_size(row.size) + ("*" if row.not_shown else ""), justify="right"),
        signed_cell(format_size(row.size_diff, True), row.size_diff, styles),
        Text(clean_text(row.name)),  # from the target: plain text, never markup
    )


class TypeTable(DataTable[Text]):
    """One row per type; the cursor stays on its type when a new walk arrives."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        *DataTable.COMPONENT_CLASSES,
        *(f"type-table--{name}" for name in STYLE_NAMES),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Origins", key_display="⏎"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.names: list[str] = []

    def on_mount(self) -> None:
        for label, right in COLUMNS:
            self.add_column(Text(label, justify="right" if right else "left"), key=label)
        self.add_column(Text("TYPE"), key="TYPE")

    def show(self, table: TypesTable) -> None:
        """Replace the rows with a new walk's (on the first row the cursor watches the
        top; elsewhere it follows its type)."""
        selected = self.selected_type() if self.cursor_row > 0 else None
        styles = {
            name: self.get_component_rich_style(f"type-table--{name}", partial=True)
            for name in STYLE_NAMES
        }
        self.clear()
        self.names = [row.name for row in table.rows]
        for rank, row in enumerate(table.rows, 1):
            self.add_row(*type_cells(rank, row, styles), key=row.name)
        if selected in self.names:
            self.move_cursor(row=self.names.index(selected), animate=False)

    def selected_type(self) -> str | None:
        """The type under the cursor."""
        if 0 <= self.cursor_row < len(self.names):
            return self.names[self.cursor_row]
        return None
