"""Two lines of vital facts: who is watched and how, then what the table shows."""

from __future__ import annotations

from rich.text import Text

from memtop.formatting import clean_text, display_command, format_size
from memtop.model import Refresh, empty_note, only_new_note
from memtop.source import TargetInfo
from memtop.ui.suspects import MARK
from memtop.ui.text_lines import TextLines
from memtop.ui.texts import (
    SORT_NAMES,
    clock_time,
    fit_parts,
    format_interval,
    format_uptime,
    grouping_text,
    table_age,
    taken_time,
)
from memtop.ui.view_state import ViewState


class HeaderBar(TextLines):
    """pid, Python, command, attach method, uptime, interval; grouping, sort, costs."""

    DEFAULT_CSS = "HeaderBar { height: 2; }"

    def __init__(
        self, info: TargetInfo, state: ViewState, *, file: str = "", id: str | None = None
    ) -> None:
        """`file`: the saved snapshot shown ('a.memtop', or 'b.memtop vs a.memtop')."""
        super().__init__(id=id)
        self.info = info
        self.state = state
        self.file = file
        self.sample: Refresh | None = None
        self.on_screen: Refresh | None = None
        self.frozen_age = 0.0
        self.uptime = ""
        self.suspects = 0
        self.now = 0.0

    def show(
        self,
        state: ViewState,
        sample: Refresh | None,
        now: float,
        suspects: int = 0,
        on_screen: tuple[Refresh, float] | None = None,
    ) -> None:
        """Redraw if something shown changed (it is asked every second).

        `sample` is the newest refresh; `on_screen` the one whose rows the table shows and
        when it arrived (they differ while paused): the table's facts are the latter's."""
        started = self.info.started if self.info.started is not None else now
        self.state, self.sample, self.uptime = state, sample, format_uptime(now - started)
        self.on_screen, self.frozen_age = sample, 0.0
        if on_screen is not None:
            shown, arrived = on_screen
            self.on_screen = shown
            self.frozen_age = shown.table.age + max(0.0, now - arrived)
        self.suspects = suspects
        self.now = now
        self.update_lines()

    def lines(self, width: int) -> list[Text]:
        return [self.target_line(width), self.table_line(width)]

    def target_line(self, width: int) -> Text:
        info, sample = self.info, self.sample
        nframe = sample.nframe if sample is not None else info.nframe
        if self.file:
            taken = f"taken {taken_time(info.started)}" if info.started else "time unknown"
            parts = [
                (Text("memtop", style="bold"), 9),
                (Text(f"file {clean_text(self.file)}", style="bold"), 10),
                (Text(taken), 8),
                (Text(f"pid {info.pid or 'unknown'}"), 6),
                (Text(f"python {clean_text(info.python)}"), 5),
                (Text(f"nframe {nframe}"), 4),
            ]
        else:
            who = f"pid {info.pid}"
            if info.how == "group":
                count = len(sample.processes) if sample is not None else 0
                who = (
                    f"pid {self.state.process} of {count} processes · p: all"
                    if self.state.process is not None
                    else f"{count} processes merged · p: one"
                )
            parts = [
                (Text("memtop", style="bold"), 9),
                (self.mode_text(), 9),
                (Text(who), 10),
                (Text(f"python {clean_text(info.python)}"), 6),
                (Text(clean_text(info.how)), 7),
                (Text(f"up {self.uptime}"), 5),
                (Text(f"every {format_interval(self.state.interval)}"), 8),
                (Text(f"nframe {nframe}"), 4),
                (self.cost_text(), 9),
            ]
        line = Text(" · ", style="dim").join(text for text, _ in parts)
        command = display_command(info.cmdline)
        room = width - line.cell_len - 3
        if command and room >= 12:
            line.append(" · ", style="dim")
            line.append(command if len(command) <= room else command[: room - 1] + "…", "dim")
            return line
        return fit_parts(parts, width)

    def mode_text(self) -> Text:
        """exact, or sampled with its rate: the table's sizes are estimates then."""
        sample = self.sample
        mode = sample.mode if sample is not None else self.info.mode
        rate = sample.sample_rate if sample is not None else self.info.sample_rate
        if mode != "sampled":
            return Text("exact", style="bold")
        every = format_size(rate).replace(".0 ", " ") if rate else "?"
        return Text(f"sampled 1/{every} ±", style="bold")

    def cost_text(self) -> Text:
        """What watching costs, as measured: the agent's pause per refresh and the
        tracer's memory."""
        sample = self.sample
        if sample is None:
            return Text("cost …")
        return Text(
            f"cost {sample.work_ms:.1f} ms/refresh, {format_size(sample.tracemalloc_memory)}"
        )

    def table_line(self, width: int) -> Text:
        state, sample = self.state, self.on_screen
        parts = [
            (Text(f"group {grouping_text(state.query)}"), 9),
            (Text(f"sort {SORT_NAMES[state.sort]}"), 8),
        ]
        # A file's first line says it all: Δ columns are against the base file, if any.
        if not self.file:
            if state.baseline_time is not None:
                since = Text(f"Δ since {clock_time(state.baseline_time)}", style="bold")
                if sample is not None and sample.baseline_restarted:
                    since.append(" (before a tracing restart: b sets a new one)", "bold red")
                parts.append((since, 7))
            else:
                parts.append((Text("Δ per refresh"), 2))
        if sample is not None and self.file and sample.baseline_restarted:
            parts.append((Text("two tracing sessions: Δ is not growth", "bold red"), 8))
        if self.suspects:
            plural = "s" if self.suspects != 1 else ""
            parts.append((Text(f"{MARK} {self.suspects} suspect{plural}", style="bold"), 8))
        note = empty = None
        if sample is not None:
            # A file: how long it had traced when it was taken.
            now = sample.time if self.file else self.now
            note = only_new_note(sample.tracing, now)
            empty = empty_note(sample.tracing, now)
        if sample is not None:
            if empty is not None and not sample.total_rows:
                # An idle program just attached to: nothing it allocated since is held.
                # On an empty table this matters more than the grouping or the sort.
                parts.append((Text(empty, "bold"), 10))
            else:
                parts.append((Text(f"{len(sample.rows)} of {sample.total_rows} rows"), 3))
            if not self.file:
                newest = self.sample if self.sample is not None else sample
                parts.append((Text(f"pause {newest.work_ms:.1f} ms"), 4))
                # How old the rows on screen are is never dropped: a stale table read as a
                # fresh one misleads. Paused, the table on screen ages by the clock.
                if state.paused:
                    old = f"paused, table {self.frozen_age:.0f} s old"
                    parts.append((Text(old, style="bold"), 99))
                else:
                    old, when = table_age(sample.table, state.interval)
                    if old:
                        parts.append((Text(old, style="bold"), 99))
                        parts.append((Text(when), 5))
        if note is None:
            return fit_parts(parts, width)
        # Older memory missing from the table is said in full when it fits, else briefly.
        full = fit_parts([*parts, (Text(note, "bold"), 6)], width)
        if note in full.plain:
            return full
        short = note.split(":")[0].replace("tracing since", "traced since")
        return fit_parts([*parts, (Text(short, "bold"), 6)], width)
