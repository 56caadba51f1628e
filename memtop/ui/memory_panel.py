"""Process memory next to traced memory, their history, and what the history says."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Sparkline

from memtop.formatting import format_size
from memtop.history import History, Verdict
from memtop.model import Sample
from memtop.ui.share_bar import ShareBar
from memtop.ui.text_lines import TextLines
from memtop.ui.verdict_line import VerdictLine

VERDICT_MARKS = {
    "collecting": "…",
    "steady": "●",
    "growing": "▲",
    "rss-growing": "▲",
    "fragmentation": "◆",
    "untraced": "◆",
}


def labelled(label: str, value: str) -> Text:
    """'RSS       70.0 MiB' with the label dim."""
    return Text.assemble((f"{label:<9}", "dim"), value.rjust(10))


class MemoryPanel(Widget):
    """RSS, USS, traced current/peak, tracer, untraced; charts of RSS and traced; verdict."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="memory-grid"):
            yield TextLines(id="memory-labels")
            with Vertical(id="memory-charts"):
                yield Sparkline([], id="rss-chart")
                yield Sparkline([], id="traced-chart")
                yield ShareBar(id="share")
            yield TextLines(id="memory-extras")
        yield VerdictLine(id="verdict")

    def on_mount(self) -> None:
        self.query_one("#memory-labels", TextLines).set_lines(_labels(None))

    def show(self, sample: Sample, history: History, verdict: Verdict) -> None:
        """Put one refresh and the history up to it on screen."""
        self.query_one("#memory-labels", TextLines).set_lines(_labels(sample))
        extras = [
            _extra("USS", sample.uss),
            _extra("peak", sample.traced_peak),
            _extra("tracer", sample.tracemalloc_memory),
        ]
        self.query_one("#memory-extras", TextLines).set_lines(extras)
        self.query_one("#share", ShareBar).show(
            min(1.0, sample.traced_current / sample.rss) if sample.rss else None
        )
        points = history.points
        rss = [float(p.rss) for p in points if p.rss is not None]
        traced = [float(p.traced) for p in points]
        self.query_one("#rss-chart", Sparkline).data = rss if len(rss) > 1 else []
        self.query_one("#traced-chart", Sparkline).data = traced if len(traced) > 1 else []
        parts = [(Text(f"{VERDICT_MARKS.get(verdict.kind, '●')} {verdict.text}"), 9)]
        untraced = sample.untraced
        if untraced is not None and sample.rss:
            parts.append((Text(f"untraced {untraced / sample.rss:.0%} of RSS", "dim"), 1))
        verdict_widget = self.query_one("#verdict", VerdictLine)
        for kind in VERDICT_MARKS:
            verdict_widget.set_class(kind == verdict.kind, f"-{kind}")
        verdict_widget.show(parts)


def _labels(sample: Sample | None) -> list[Text]:
    """The three big numbers, labelled."""
    if sample is None:
        values = ["…", "…", "…"]
    else:
        values = [
            format_size(sample.rss),
            format_size(sample.traced_current),
            format_size(sample.untraced),
        ]
    names = ("RSS", "traced", "untraced")
    return [labelled(name, value) for name, value in zip(names, values, strict=True)]


def _extra(label: str, value: int | None) -> Text:
    if value is None:
        return Text("")
    return Text.assemble((f"{label} ", "dim"), format_size(value))
