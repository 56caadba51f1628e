"""Process memory next to traced memory, their history, and what the history says."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Sparkline

from memtop.formatting import format_size
from memtop.history import History, Verdict
from memtop.model import Refresh
from memtop.ui.share_bar import ShareBar
from memtop.ui.text_lines import TextLines
from memtop.ui.verdict_line import VerdictLine
from memtop.verdict import Rate

VERDICT_MARKS = {
    "collecting": "…",
    "steady": "●",
    "growing": "▲",
    "untraced-growing": "▲",
    "fragmentation": "◆",
    "untraced": "◆",
}


def labelled(label: str, value: str, rate: Text | None = None) -> Text:
    """'RSS       70.0 MiB  +1.2 MiB/m' with the label dim."""
    text = Text.assemble((f"{label:<9}", "dim"), value.rjust(10))
    if rate is not None:
        text.append(" ")
        text.append_text(rate)
    return text


RATE_CELLS = 11


def rate_text(rate: Rate | None, growing: bool) -> Text:
    """A part's rate per minute in RATE_CELLS cells: bold while it counts as growth."""
    if rate is None:
        return Text(" " * RATE_CELLS)
    value = rate.per_minute
    unit, scale = ("MiB", 1024 * 1024) if abs(value) >= 1024 * 1024 else ("KiB", 1024)
    digits = 1 if unit == "MiB" and abs(value) < 100 * scale else 0
    shown = f"{value / scale:+.{digits}f} {unit}/m"
    if len(shown) > RATE_CELLS:  # 10 GiB a minute and more: beyond it, just "a lot"
        shown = ">9999 MiB/m" if value > 0 else "<-9999MiB/m"
    return Text(shown.rjust(RATE_CELLS), "bold" if growing else "dim")


class MemoryPanel(Widget):
    """RSS, USS, traced current/peak, tracer, untraced; charts of RSS and traced; verdict."""

    def compose(self) -> ComposeResult:
        # Kept by reference: a refresh that lands while the app closes finds its widgets
        # even after they left the DOM (a query would fail).
        self.labels = TextLines(id="memory-labels")
        self.rss_chart = Sparkline([], id="rss-chart")
        self.traced_chart = Sparkline([], id="traced-chart")
        self.share = ShareBar(id="share")
        self.extras = TextLines(id="memory-extras")
        self.verdict = VerdictLine(id="verdict")
        with Horizontal(id="memory-grid"):
            yield self.labels
            with Vertical(id="memory-charts"):
                yield self.rss_chart
                yield self.traced_chart
                yield self.share
            yield self.extras
        yield self.verdict

    def on_mount(self) -> None:
        self.labels.set_lines(_labels(None))

    def show(self, sample: Refresh, history: History, verdict: Verdict) -> None:
        """Put one refresh and the history up to it on screen."""
        self.labels.set_lines(_labels(sample, verdict))
        extras = [
            _extra("USS", sample.uss),
            _extra("peak", sample.traced_peak),
            _extra("tracer", sample.tracemalloc_memory),
        ]
        self.extras.set_lines(extras)
        self.share.show(min(1.0, sample.traced_current / sample.rss) if sample.rss else None)
        points = history.points
        rss = [float(p.rss) for p in points if p.rss is not None]
        traced = [float(p.traced) for p in points]
        self.rss_chart.data = rss if len(rss) > 1 else []
        self.traced_chart.data = traced if len(traced) > 1 else []
        parts = [(Text(f"{VERDICT_MARKS.get(verdict.kind, '●')} {verdict.text}"), 9)]
        if sample.memtop_memory or sample.read_peak:
            cost = f"memtop {format_size(sample.memtop_memory)}"
            if sample.read_peak:
                cost += f", +{format_size(sample.read_peak)} while reading"
            parts.append((Text(cost, "dim"), 2))
        untraced = sample.untraced
        if untraced is not None and sample.rss:
            parts.append((Text(f"untraced {untraced / sample.rss:.0%} of RSS", "dim"), 1))
        verdict_widget = self.verdict
        for kind in VERDICT_MARKS:
            verdict_widget.set_class(kind == verdict.kind, f"-{kind}")
        verdict_widget.show(parts)


def _labels(sample: Refresh | None, verdict: Verdict | None = None) -> list[Text]:
    """The three big numbers, labelled, each with its own rate once there is history."""
    if sample is None:
        values = ["…", "…", "…"]
    else:
        values = [
            format_size(sample.rss),
            format_size(sample.traced_current),
            format_size(sample.untraced),
        ]
    reading = verdict is not None and verdict.kind != "collecting"
    rates: list[Rate | None] = [None, None, None]
    if reading and verdict is not None:
        rates = [verdict.rss, verdict.traced, verdict.untraced]
    growing = (
        False,
        verdict is not None and verdict.grows("growing"),
        verdict is not None and verdict.grows("untraced-growing"),
    )
    names = ("RSS", "traced", "untraced")
    return [
        labelled(name, value, rate_text(rate, grows))
        for name, value, rate, grows in zip(names, values, rates, growing, strict=True)
    ]


def _extra(label: str, value: int | None) -> Text:
    if value is None:
        return Text("")
    return Text.assemble((f"{label} ", "dim"), format_size(value))
