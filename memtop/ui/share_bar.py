"""RSS split into traced and untraced memory, as one bar: the fragmentation gap at a glance."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text

from memtop.ui.text_lines import TextLines


class ShareBar(TextLines):
    """`█` for traced memory, `░` for the rest of RSS (readable without colour too)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"share-bar--traced", "share-bar--untraced"}
    DEFAULT_CSS = "ShareBar { height: 1; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.traced_share: float | None = None

    def show(self, traced_share: float | None) -> None:
        self.traced_share = traced_share
        self.update_lines()

    def lines(self, width: int) -> list[Text]:
        if self.traced_share is None or width < 1:
            return [Text("")]
        filled = round(width * min(1.0, max(0.0, self.traced_share)))
        bar = Text(no_wrap=True)
        bar.append("█" * filled, self.get_component_rich_style("share-bar--traced"))
        bar.append("░" * (width - filled), self.get_component_rich_style("share-bar--untraced"))
        return [bar]
