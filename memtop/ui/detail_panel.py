"""A full-screen panel over the table: a title, a summary, and a scrolling body that one
request to the source fills in (made in a worker thread; Esc or q closes)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class DetailPanel(ModalScreen[None]):
    """Subclasses say what to ask in `fetch()` (run in a thread; it posts a message) and
    show the answer with `set_summary()` and `set_body()`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def __init__(self, title: str, summary: Text, loading: str) -> None:
        """`title` may hold text from the target: it is shown as plain text, never markup."""
        super().__init__()
        self.title_text = title
        self.first_summary = summary
        self.loading_text = loading

    def compose(self) -> ComposeResult:
        with Vertical(classes="detail-panel") as panel:
            panel.border_title = Text(self.title_text)
            panel.border_subtitle = "Esc closes"
            yield Static(self.first_summary, classes="detail-summary")
            with VerticalScroll(classes="detail-scroll"):
                yield Static(Text(self.loading_text, style="dim"), classes="detail-body")

    def on_mount(self) -> None:
        self.query_one(".detail-scroll").focus()
        self.run_worker(self.fetch, thread=True, exit_on_error=False, group="detail")

    def fetch(self) -> None:
        """Worker thread: ask the source, post the answer as a message."""
        raise NotImplementedError

    def set_summary(self, text: Text) -> None:
        self.query_one(".detail-summary", Static).update(text)

    def set_body(self, text: Text) -> None:
        self.query_one(".detail-body", Static).update(text)

    @property
    def body_text(self) -> str:
        """What the body shows, as plain text (for tests and screenshots)."""
        return str(self.query_one(".detail-body", Static).render())
