"""The types view (`o`): live objects by type from the gc, sorted by growth since a mark.

A walk of the gc's objects holds the program's GIL for milliseconds to seconds, so it runs
only when the user asks: once on opening, then on `u` (or `b`, which also marks the
baseline). Never on a timer.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static

from memtop.formatting import clean_text
from memtop.leaks import NOT_SHOWN, TypesTable
from memtop.source import HeapInspection
from memtop.ui import keys
from memtop.ui.messages import TypesReady, attempt_or_wait
from memtop.ui.origins_panel import OriginsPanel
from memtop.ui.referrers_panel import ReferrersPanel
from memtop.ui.texts import clock_time
from memtop.ui.type_table import TypeTable

LIMIT = 100

LIMITS = (
    "The gc sees containers only (instances, dicts, lists, tuples, functions…): strings, "
    "bytes and numbers show up in the allocation rows. Sizes are shallow (an object's own "
    "bytes). No origins for instances made before tracing started, nor for plain class "
    "instances on CPython 3.11. Walks only when asked: the program pauses for about the "
    "time shown."
)


def walk_text(table: TypesTable, marked: bool = False) -> Text:
    """'gc walk: 23 ms over 812,345 objects in 147 types · Δ since the mark at 12:00:01'."""
    text = Text.assemble(
        ("gc walk: ", "bold"),
        (f"{table.cost_ms:,.0f} ms", "bold"),
        f" over {table.objects:,} objects in {table.total_types:,} types · ",
    )
    if table.since is None:
        text.append("first look: Δ columns count from here")
    elif table.baseline is not None and table.since == table.baseline:
        text.append(f"Δ since the mark at {clock_time(table.since)}", style="bold")
    else:
        text.append(f"Δ since the previous look at {clock_time(table.since)}")
    if marked and table.baseline is not None:
        text.append(f" · marked at {clock_time(table.baseline)}: u shows growth since then")
    if any(row.not_shown for row in table.rows):
        text.append("\n* SIZE: ", style="bold")
        text.append(f"{table.not_shown or NOT_SHOWN} (__sizeof__ is the program's: ", "bold")
        text.append("not called; the objects' own bytes are counted)")
    return text


class TypesScreen(ModalScreen[None]):
    """Objects by type; Enter: where the selected type's instances come from; w: what keeps
    one alive."""

    BINDINGS: ClassVar[list[BindingType]] = keys.bindings("types")

    def __init__(self, source: HeapInspection, cwd: str | None = None) -> None:
        super().__init__()
        self.source = source
        self.cwd = cwd
        self.table: TypesTable | None = None
        self.walking = False

    def compose(self) -> ComposeResult:
        with Vertical(id="types-panel") as panel:
            panel.border_title = f"Objects by type (gc) · pid {self.source.info.pid}"
            yield Static(Text("walking the gc…", style="dim"), id="types-walk")
            yield Static(Text(LIMITS, style="dim"), id="types-limits")
            yield TypeTable(id="types-table")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(TypeTable).focus()
        self.walk(mark=False)

    @property
    def rows(self) -> TypeTable:
        return self.query_one(TypeTable)

    def walk(self, mark: bool) -> None:
        """Ask for one walk in a worker (one at a time)."""
        if self.walking:
            return
        self.walking = True
        self.refresh_bindings()
        self.query_one("#types-walk", Static).update(Text("walking the gc…", style="dim"))
        call = partial(self.source.types, mark=mark, limit=LIMIT)
        self.run_worker(partial(self._walk, call, mark), thread=True, exit_on_error=False)

    def _walk(self, call: partial[TypesTable], mark: bool) -> None:
        table, error, retry_in = attempt_or_wait(call)
        self.post_message(TypesReady(table, error, mark, retry_in))

    def on_types_ready(self, message: TypesReady) -> None:
        self.walking = False
        self.refresh_bindings()
        if message.table is None and message.retry_in is not None:
            # The agent's time budget is spent: say so and walk once it allows.
            error = clean_text(message.error or "")
            self.query_one("#types-walk", Static).update(
                Text(f"{error}; walking again in {message.retry_in:.1f} s", style="dim")
            )
            self.set_timer(message.retry_in, partial(self.walk, message.mark))
            return
        if message.table is None:
            error = clean_text(message.error or "")
            self.notify(f"Object types: {error}", severity="error", markup=False)
            if self.table is not None:
                text = walk_text(self.table)  # the last walk stays on screen
            else:
                text = Text(f"could not walk the gc: {error}", style="bold")
            self.query_one("#types-walk", Static).update(text)
            return
        self.table = message.table
        self.query_one("#types-walk", Static).update(walk_text(message.table, message.mark))
        self.rows.show(message.table)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """No second walk while one runs; nothing to look into before a type is listed."""
        if action in ("update", "mark") and self.walking:
            return None
        if action in ("origins", "who_keeps_alive") and self.rows.selected_type() is None:
            return None
        return True

    def action_update(self) -> None:
        self.walk(mark=False)

    def action_mark(self) -> None:
        self.walk(mark=True)

    def action_origins(self) -> None:
        name = self.rows.selected_type()
        if name is not None:
            self.app.push_screen(OriginsPanel(self.source, name, self.cwd))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_origins()

    def action_who_keeps_alive(self) -> None:
        name = self.rows.selected_type()
        if name is not None:
            self.app.push_screen(ReferrersPanel(self.source, type_name=name, cwd=self.cwd))
