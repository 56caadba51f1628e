"""The selected row's tracebacks, each frame with its source line (Enter opens, Esc closes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from memtop.errors import MemtopError
from memtop.formatting import fit, format_size, location
from memtop.model import Frame, Query, Row
from memtop.source import Source, TracebackEntry
from memtop.ui.messages import TracebacksReady

LIMIT = 10


def one_frame_hint(tracing_owner: str) -> str:
    """How to get more than one frame per traceback."""
    if tracing_owner == "target":
        return (
            "The program started tracemalloc itself with 1 frame per traceback; start it "
            "deeper (tracemalloc.start(10), or PYTHONTRACEMALLOC=10) to see the callers."
        )
    return (
        "Tracing keeps 1 frame per traceback, so only the allocating line is known. To see "
        "the callers, quit and start memtop again with --nframe 10 (e.g. memtop run --nframe 10 …)."
    )


def tracebacks_text(
    entries: list[TracebackEntry], row: Row, nframe: int, cwd: str | None = None
) -> Text:
    """Tracebacks, heaviest first; frames oldest first as Python prints them, sources indented.
    A group's row first says what each process holds of it."""
    out = Text()
    if row.procs:
        out.append("per process\n", style="bold")
        for pid, size, count in row.procs:
            share = f" · {size / row.size:.0%}" if row.size else ""
            out.append(f"    pid {pid:<8} {format_size(size):>10}  {count:,} blocks{share}\n")
        out.append("\n")
    for number, entry in enumerate(entries, 1):
        share = f" · {entry.size / row.size:.0%} of the row" if row.size else ""
        blocks = f"{entry.count:,} block{'s' if entry.count != 1 else ''}"
        error = f" ±{format_size(entry.size_error)}" if entry.size_error else ""
        out.append(f"#{number}  {format_size(entry.size)}{error}", style="bold")
        out.append(f"  {blocks}{share}\n", style="dim")
        if nframe > 1 and len(entry.frames) >= nframe:
            out.append(f"    … older frames cut at nframe {nframe}\n", style="dim")
        out.append_text(frames_text(entry.frames, cwd))
        out.append("\n")
    return out


def frames_text(frames: Sequence[Frame], cwd: str | None = None) -> Text:
    """Frames oldest first, each with its source line below it; the last one, the
    allocating frame, marked with →."""
    out = Text()
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        allocating = index == last
        marker = "→ " if allocating else "  "
        out.append(
            f"  {marker}{location(frame.filename, frame.lineno, 100, cwd)}\n",
            style="bold" if allocating else "",
        )
        if frame.source:
            out.append(f"        {fit(frame.source.strip(), 120)}\n", style="dim")
    return out


class TracebackPanel(ModalScreen[None]):
    """Where the memory of one row was allocated from."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def __init__(
        self,
        source: Source,
        query: Query,
        row: Row,
        nframe: int,
        tracing_owner: str,
        cwd: str | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.grouping = query
        self.row = row
        self.nframe = nframe
        self.tracing_owner = tracing_owner
        self.cwd = cwd
        self.entries: list[TracebackEntry] | None = None

    def compose(self) -> ComposeResult:
        row = self.row
        where = location(row.filename, row.lineno, 60, self.cwd)
        with Vertical(id="traceback-panel") as panel:
            panel.border_title = Text(f"Tracebacks of {where}")  # target text: never markup
            panel.border_subtitle = "Esc closes"
            yield Static(self._summary(), id="traceback-summary")
            with VerticalScroll(id="traceback-scroll"):
                yield Static(Text("loading tracebacks…", style="dim"), id="traceback-body")

    def _summary(self) -> Text:
        row = self.row
        error = f" ±{format_size(row.size_error)}" if row.size_error else ""
        text = Text.assemble(
            (format_size(row.size) + error, "bold"),
            f" in {row.count:,} blocks · ",
            f"group {self.grouping.group_by}{' cumulative' if self.grouping.cumulative else ''}",
            f" · nframe {self.nframe}",
        )
        if self.nframe <= 1:
            text.append("\n" + one_frame_hint(self.tracing_owner), style="bold")
        return text

    def on_mount(self) -> None:
        self.query_one("#traceback-scroll").focus()
        if self.grouping.group_by == "traceback":
            # The row is one traceback: it is all there is to show, no request needed.
            self.show_entries([TracebackEntry(self.row.size, self.row.count, self.row.traceback)])
        else:
            self.run_worker(self._fetch, thread=True, exit_on_error=False, group="tracebacks")

    def _fetch(self) -> None:
        try:
            entries = self.source.tracebacks(self.grouping, self.row, limit=LIMIT)
        except MemtopError as exc:
            self.post_message(TracebacksReady(None, exc.message))
        except Exception as exc:  # never a raw traceback on screen
            self.post_message(TracebacksReady(None, f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(TracebacksReady(entries))

    def on_tracebacks_ready(self, message: TracebacksReady) -> None:
        if message.entries is None:
            body = Text(f"could not read the tracebacks: {message.error}", style="bold")
            self.query_one("#traceback-body", Static).update(body)
        else:
            self.show_entries(message.entries)

    def show_entries(self, entries: list[TracebackEntry]) -> None:
        self.entries = entries
        if not entries:
            body = Text("no traceback holds memory at this row any more", style="dim")
        else:
            body = tracebacks_text(entries, self.row, self.nframe, self.cwd)
        self.query_one("#traceback-body", Static).update(body)
