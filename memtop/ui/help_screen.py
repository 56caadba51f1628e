"""The `?` screen: every key, and how to read the screen."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from memtop.ui.keys import KEYS, NAVIGATION, SECTIONS
from memtop.ui.suspects import MARK, RULE

READING = (
    ("RSS / USS", "resident and unique memory of the process, read from outside"),
    ("traced / peak", "what tracemalloc traces now, and its peak (r resets it)"),
    ("untraced", "RSS - traced - tracer: native memory, fragmentation, the interpreter"),
    ("/m", "each line's growth per minute, bold while the verdict counts it"),
    ("memtop", "memtop's own memory in the program, and what a table read needs"),
    ("bar", "RSS split: █ traced, ░ untraced"),
    ("ΔSIZE ΔCOUNT", "change since the previous table, or since the baseline (b)"),
    ("TREND", "the row's size over its recent tables"),
    (
        f"{MARK} by the rank",
        f"a leak suspect: {RULE}. Sort s to suspects to see them first (by growth rate × "
        "confidence); the status line gives the selected one's rate",
    ),
    (
        "verdict",
        "read from RSS = traced + tracer + untraced, each part's rate judged against its own "
        "noise (Python objects growing, native memory or fragmentation, steady…)",
    ),
)


def help_table() -> Table:
    """Keys by section, then how to read the screen; long lines wrap under their text."""
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True, style="bold")
    table.add_column()
    for section in SECTIONS:
        table.add_row(Text(section, style="bold underline"), "")
        for key in KEYS:
            if key.section == section:
                table.add_row(Text(f"  {key.shown}"), Text(key.help))
        table.add_row("", "")
    table.add_row(Text("Moving around", style="bold underline"), "")
    for keys, what in NAVIGATION:
        table.add_row(Text(f"  {keys}"), Text(what))
    table.add_row("", "")
    table.add_row(Text("Reading the screen", style="bold underline"), "")
    for name, what in READING:
        table.add_row(Text(f"  {name}"), Text(what))
    return table


class HelpScreen(ModalScreen[None]):
    """Keys and legend; Esc, ? or q closes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-panel") as panel:
            panel.border_title = "memtop keys"
            panel.border_subtitle = "Esc closes"
            with VerticalScroll(id="help-scroll"):
                yield Static(help_table(), id="help-body")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()
