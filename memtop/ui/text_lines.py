"""A few lines of rich Text, drawn through the Line API.

Widgets that change on every refresh (header, numbers, verdict) draw their lines as
strips once per change; a Static converts and wraps its content on every redraw, which at
one refresh per second is a measurable part of the viewer's CPU budget.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.events import Resize
from textual.strip import Strip
from textual.widget import Widget


class TextLines(Widget):
    """Shows `lines()` (one Text per line, never wrapped, cut at the widget's width)."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._texts: tuple[Text, ...] = ()
        self._strips: list[Strip] | None = None

    def lines(self, width: int) -> Sequence[Text]:
        """What to show at this width; subclasses compute it, or call set_lines()."""
        return self._texts

    def set_lines(self, texts: Sequence[Text]) -> None:
        """Show these lines; redraws only when they changed."""
        texts = tuple(texts)
        if texts != self._texts:
            self._texts = texts
            self._strips = None
            self.refresh()

    def update_lines(self) -> None:
        """Recompute `lines()` for the current width and redraw if they changed."""
        self.set_lines(self.lines(self.size.width))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if self._strips is None:
            style = self.rich_style
            strips = []
            for text in self._texts:
                line = text.copy()
                line.stylize_before(style)
                strip = Strip(line.render(self.app.console), line.cell_len)
                # Every segment styled: NO_COLOR's monochrome filter needs a style on each.
                strips.append(strip.crop_extend(0, width, style).apply_style(style))
            self._strips = strips
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(width, self.rich_style)

    def on_resize(self, event: Resize) -> None:
        self._strips = None
        self.update_lines()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips = None
