"""The `/` prompt: file patterns to keep (Enter applies, empty clears, Esc cancels)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class FilterPrompt(ModalScreen[str | None]):
    """Asks for fnmatch patterns on the allocating frame's filename."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss", "Cancel")]

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="filter-panel") as panel:
            panel.border_title = "Show only files matching"
            yield Static(
                "patterns separated by spaces, e.g.  *cache*  app/*.py  "
                "(a word without * matches anywhere; empty shows all)",
                id="filter-help",
                markup=False,
            )
            yield Input(value=self.current, placeholder="pattern …", id="filter-input")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)
