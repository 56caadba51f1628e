"""The verdict read from the memory history, then the untraced share of RSS while it fits."""

from __future__ import annotations

from rich.text import Text

from memtop.ui.text_lines import TextLines
from memtop.ui.texts import fit_parts


class VerdictLine(TextLines):
    """One line; CSS classes -growing, -steady, ... colour it by the verdict's kind."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.parts: list[tuple[Text, int]] = []

    def show(self, parts: list[tuple[Text, int]]) -> None:
        """(text, priority) parts: the lowest priority goes first when space runs out."""
        self.parts = parts
        self.update_lines()

    def lines(self, width: int) -> list[Text]:
        return [fit_parts(self.parts, width, separator="   ")]
