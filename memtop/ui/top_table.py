"""The top table: rows kept by stable keys, a row drawn again only when it changed, and a
cursor that stays on its row across refreshes.

A Line API widget rather than a DataTable: DataTable redraws every visible cell whenever
any cell changes, which at one refresh per second costs more CPU than the 2 % budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.events import Resize
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from memtop.history import Suspect
from memtop.model import Row
from memtop.table_view import TableView, ViewRow
from memtop.ui.cells import Column, columns_for, header_cells, line_text, row_cells

STYLE_NAMES = (
    "growth",
    "shrink",
    "hot",
    "warm",
    "dim",
    "location",
    "source",
    "trend-low",
    "trend-high",
    "suspect",
)


class TopTable(ScrollView, can_focus=True):
    """One row per allocation site (line, file or traceback), in the agent's order."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "top-table--header",
        "top-table--cursor",
        *(f"top-table--{name}" for name in STYLE_NAMES),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select", "Tracebacks", key_display="⏎"),
    ]

    class Selected(Message):
        """Enter on a row."""

        def __init__(self, row: Row) -> None:
            super().__init__()
            self.row = row

    class Highlighted(Message):
        """The row under the cursor changed, or whether (and how fast) it is a suspect."""

        def __init__(self, row: Row | None, suspect: Suspect | None) -> None:
            super().__init__()
            self.row = row
            self.suspect = suspect

    def __init__(self, *, cwd: str | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cwd = cwd
        self.narrow = False
        self.cursor_row = 0
        self._columns: tuple[Column, ...] = ()
        self._where_width = 0
        self._grouping: tuple[object, ...] | None = None
        self._rows: dict[str, Row] = {}
        self._order: list[str] = []
        self._cells: dict[str, tuple[Text, ...]] = {}
        self._strips: dict[str, Strip] = {}
        self._inputs: dict[str, ViewRow] = {}  # what each row's cells came from
        self._style_cache: Mapping[str, Style] | None = None
        self._header: Strip | None = None
        self._last: TableView | None = None
        self._suspects: Mapping[str, Suspect] = {}
        self._highlighted: tuple[str, Suspect | None] | None = None

    # --- what is shown ------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        """Row keys in display order."""
        return list(self._order)

    def selected_row(self) -> Row | None:
        """The row under the cursor."""
        if 0 <= self.cursor_row < len(self._order):
            return self._rows[self._order[self.cursor_row]]
        return None

    def show(self, view: TableView) -> None:
        """Draw one refresh as memtop.table_view laid it out; only rows whose cells
        changed are drawn again."""
        self._last = view
        sample = view.sample
        query = sample.query
        self._suspects = view.suspects
        width = self._width()
        columns = fit_columns(
            columns_for(
                query, self.narrow, view.suspects_first, view.grouped_processes, sample.error_bars
            ),
            width,
        )
        where_width = _where_room(columns, width)
        grouping = (query.group_by, query.cumulative, query.include, query.exclude)
        followed = self._followed_key() if grouping == self._grouping else None
        if (columns, where_width, grouping) != (self._columns, self._where_width, self._grouping):
            self._columns, self._where_width, self._grouping = columns, where_width, grouping
            self._cells.clear()
            self._strips.clear()
            self._inputs.clear()
            self._header = None
        styles = self._styles()
        old_order, old_cursor = self._order, self.cursor_row
        redraw = self._header is None
        self._rows = {}
        order = []
        changed = set()
        for shown in view.rows:
            row = shown.row
            if self._inputs.get(row.key) == shown and row.key in self._cells:
                self._rows[row.key] = row
                order.append(row.key)
                continue  # nothing shown in this row changed
            self._inputs[row.key] = shown
            cells = row_cells(columns, shown, query.group_by, styles, self.cwd, where_width)
            if self._cells.get(row.key) != cells:
                self._cells[row.key] = cells
                self._strips.pop(row.key, None)
                changed.add(shown.rank - 1)
            self._rows[row.key] = row
            order.append(row.key)
        for gone in set(self._cells) - set(self._rows):
            del self._cells[gone]
            self._strips.pop(gone, None)
            self._inputs.pop(gone, None)
        self._order = order
        self.virtual_size = Size(width, len(order) + 1)  # + the header line
        if followed is not None and followed in self._rows:
            self.cursor_row = order.index(followed)
        self.cursor_row = max(0, min(self.cursor_row, len(order) - 1))
        scrolled = self._keep_cursor_visible()
        self._tell_highlighted()
        if redraw or scrolled or len(order) != len(old_order):
            self.refresh()
            return
        # Only the lines that changed: most rows look the same from one refresh to the next.
        changed.update(i for i, key in enumerate(order) if old_order[i] != key)
        if self.cursor_row != old_cursor:
            changed.update((old_cursor, self.cursor_row))
        for index in changed:
            self.refresh_line(index + 1)  # line 0 is the header

    def _followed_key(self) -> str | None:
        # On the first row the cursor watches "the top"; elsewhere it follows its row.
        if 0 < self.cursor_row < len(self._order):
            return self._order[self.cursor_row]
        return None

    def set_narrow(self, narrow: bool) -> None:
        """Drop (or bring back) the less important columns."""
        if narrow != self.narrow:
            self.narrow = narrow
            self.set_class(narrow, "narrow")
            if self._last is not None:
                self.show(self._last)

    def _tell_highlighted(self) -> None:
        """Post Highlighted when the cursor's row, or its suspect reading, changed."""
        row = self.selected_row()
        suspect = self._suspects.get(row.key) if row is not None else None
        now = (row.key if row is not None else "", suspect)
        if now != self._highlighted:
            self._highlighted = now
            self.post_message(self.Highlighted(row, suspect))

    def on_resize(self, event: Resize) -> None:
        if self._last is not None:
            self.show(self._last)

    # --- drawing ------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self._width()
        if y == 0:
            if self._header is None:
                text = line_text(self._columns, header_cells(self._columns), self._where_width)
                text.stylize_before(self.get_component_rich_style("top-table--header"))
                self._header = self._strip(text, width)
            return self._header
        index = self.scroll_offset.y + y - 1
        if index >= len(self._order):
            return Strip.blank(width, self.rich_style)
        key = self._order[index]
        strip = self._strips.get(key)
        if strip is None:
            text = line_text(self._columns, self._cells[key], self._where_width)
            strip = self._strips[key] = self._strip(text, width)
        if index == self.cursor_row:
            strip = strip.apply_style(self.get_component_rich_style("top-table--cursor"))
        return strip

    def _strip(self, text: Text, width: int) -> Strip:
        text.stylize_before(self.rich_style)
        strip = Strip(text.render(self.app.console), text.cell_len)
        # Every segment styled: NO_COLOR's monochrome filter needs a style on each.
        return strip.crop_extend(0, width, self.rich_style).apply_style(self.rich_style)

    def _width(self) -> int:
        return self.scrollable_content_region.width or self.app.size.width - 1

    def _styles(self) -> Mapping[str, Style]:
        if self._style_cache is None:  # looking styles up costs more than drawing a row
            self._style_cache = {
                name: self.get_component_rich_style(f"top-table--{name}", partial=True)
                for name in STYLE_NAMES
            }
        return self._style_cache

    def notify_style_update(self) -> None:
        """The theme or CSS changed: draw everything again."""
        super().notify_style_update()
        self._style_cache = None
        self._strips.clear()
        self._cells.clear()
        self._inputs.clear()
        self._header = None
        if self._last is not None:
            self.show(self._last)

    # --- the cursor ---------------------------------------------------------------------

    def _move(self, row: int) -> None:
        row = max(0, min(row, len(self._order) - 1))
        if row != self.cursor_row:
            old, self.cursor_row = self.cursor_row, row
            if not self._keep_cursor_visible():
                self.refresh_line(old + 1)
                self.refresh_line(row + 1)
            self._tell_highlighted()

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 2)

    def _keep_cursor_visible(self) -> bool:
        """Scroll so the cursor's row shows; True when that scrolled."""
        top = round(self.scroll_offset.y)
        visible = max(1, self.scrollable_content_region.height - 1)  # below the header
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False, immediate=True)
        else:
            return False
        return True

    def action_scroll_up(self) -> None:
        self._move(self.cursor_row - 1)

    def action_scroll_down(self) -> None:
        self._move(self.cursor_row + 1)

    def action_page_up(self) -> None:
        self._move(self.cursor_row - self._page())

    def action_page_down(self) -> None:
        self._move(self.cursor_row + self._page())

    def action_scroll_home(self) -> None:
        self._move(0)

    def action_scroll_end(self) -> None:
        self._move(len(self._order) - 1)

    def action_select(self) -> None:
        row = self.selected_row()
        if row is not None:
            self.post_message(self.Selected(row))


MIN_WHERE = 22  # columns a location needs: 'app/sessions.py:17' and a little source
# On a small terminal, what goes first: counts, the trend, then the growth column.
DROPPED_FIRST = ("count", "count_diff", "avg", "rate", "procs", "trend", "size_diff")


def _where_room(columns: tuple[Column, ...], width: int) -> int:
    """What the location column gets: the width the fixed columns leave."""
    used = sum((c.width or 0) + 2 for c in columns)  # one space either side of each cell
    return max(MIN_WHERE // 2, width - used)


def fit_columns(columns: tuple[Column, ...], width: int) -> tuple[Column, ...]:
    """Drop the least needed columns until the location has room for a file name and its
    line number: a location cut short reads like another, real one. The column the table
    is sorted by stays."""
    for key in DROPPED_FIRST:
        if _where_room(columns, width) >= MIN_WHERE:
            break
        columns = tuple(c for c in columns if c.key != key or c.label.endswith("▼"))
    return columns
