"""Headless views: `--batch` text refreshes like `top -b` (or `--json` lines,
memtop.json_lines), fed by the batch loop."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TextIO

from memtop import __version__
from memtop.compiled import compiled_hint
from memtop.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_TARGET_GONE, ConnectionLost
from memtop.formatting import SUSPECT_MARK, clean_text, fit, format_count, format_size, location
from memtop.history import History, Suspect, Verdict, format_rate
from memtop.model import (
    RESTARTED_BASELINE,
    Query,
    Refresh,
    empty_note,
    gaps_note,
    mode_text,
    only_new_note,
)
from memtop.sink import Sink, feed
from memtop.source import LiveControls, Source, wait_for_exit

_COLUMNS = "    #       SIZE      dSIZE    COUNT   dCOUNT      AVG  "
# Sampled mode: sizes and counts are estimates, each with its 95 % half-width.
_SAMPLED_COLUMNS = "    #       SIZE      ±SIZE      dSIZE    COUNT   ±COUNT   dCOUNT      AVG  "


def render_text(
    sample: Refresh,
    verdict: Verdict,
    source_info: str,
    width: int,
    cwd: str | None = None,
    suspects: dict[str, Suspect] | None = None,
    taken: str | None = None,
) -> str:
    """One `--batch` refresh: a header of vital numbers, then the table. Leak suspects
    are marked with ▲ (as on screen) after their rank and listed under the header.
    `taken`: for a saved snapshot, when it was taken and what the file does not record."""
    suspects = suspects or {}
    stamp = "" if taken else datetime.fromtimestamp(sample.time).strftime(" - %H:%M:%S")
    table = sample.table
    untraced = sample.untraced
    share = f" ({untraced / sample.rss:.0%} of RSS)" if untraced is not None and sample.rss else ""
    if verdict.kind != "collecting":
        share += f", {format_rate(verdict.untraced.per_minute)}"
    memtop = f"  memtop {format_size(sample.memtop_memory)}" + (
        f" (+{format_size(sample.read_peak)} while reading)" if sample.read_peak else ""
    )
    uss = f"  USS {format_size(sample.uss)}" if sample.uss is not None else ""
    table_note = f"table sampled {table.age:.1f} s ago, agent pause {table.pause_ms:.1f} ms" + (
        f", next table in {table.next_in:.1f} s ({table.budget:.0%} budget)"
        if table.next_in > 0
        else ""
    )
    if taken:
        table_note = taken
    grouping = f"{sample.query.group_by}{' cumulative' if sample.query.cumulative else ''}"
    about = "≈" if sample.sampled else ""
    columns = _SAMPLED_COLUMNS if sample.error_bars else _COLUMNS
    lines = [
        f"memtop {__version__}{stamp} - {source_info} - {mode_text(sample)} - group {grouping}, "
        f"nframe {sample.nframe}",
        f"RSS {format_size(sample.rss)}{uss}  traced {about}{format_size(sample.traced_current)}"
        f"  peak {about}{format_size(sample.traced_peak)}"
        f"  tracer {format_size(sample.tracemalloc_memory)}"
        f"  untraced {about}{format_size(untraced)}{share}{memtop}",
        f"{table_note}; {sample.total_rows} rows; verdict: {verdict.text}",
        "",
        columns + "LOCATION / SOURCE",
    ]
    notes = []
    note = only_new_note(sample.tracing, sample.time)
    if note is not None:
        notes.append(f"warning: {note}")
        if not sample.total_rows:
            notes.append(f"warning: {empty_note(sample.tracing, sample.time)}")
    if sample.baseline_restarted:
        notes.append(f"warning: {RESTARTED_BASELINE}")
    hint = compiled_hint(sample, sample.extension_modules)
    if hint is not None:
        where = location(hint.row.filename, hint.row.lineno, 60, cwd)
        notes.append(f"note: {hint.text(where)}")
    if sample.processes:
        each = ", ".join(
            f"{p.pid} RSS {format_size(p.rss)} traced {format_size(p.traced)}"
            for p in sample.processes
        )
        notes.insert(0, f"{len(sample.processes)} processes (summed above): {each}")
    lines[3:3] = notes
    if suspects:
        ranked = sorted(
            suspects.items(), key=lambda kv: kv[1].rate * kv[1].confidence, reverse=True
        )[:3]
        named = ", ".join(
            f"{fit(key, 60)} ({format_rate(s.rate)}, confidence {s.confidence:.0%})"
            for key, s in ranked
        )
        lines.insert(3 + len(notes), f"leak suspects: {named}")
    if sample.sampler_gaps:
        notes.append(f"warning: {gaps_note(sample.sampler_gaps)}")
    room = max(24, width - len(columns))
    for rank, row in enumerate(sample.rows, 1):
        # The location keeps its line number; the source line gives way first.
        where = location(row.filename, row.lineno, min(room, 48), cwd)
        left = room - len(where) - 2
        rest = f"{where}  {fit(row.source, left)}" if row.source and left >= 8 else where
        if row.procs:  # a group: what each process holds, largest first
            rest += (
                "  [" + ", ".join(f"{pid} {format_size(size)}" for pid, size, _ in row.procs) + "]"
            )
        mark = SUSPECT_MARK if row.key in suspects else " "
        if sample.error_bars:
            numbers = (
                f"{format_size(row.size):>10} {'±' + format_size(row.size_error):>10}"
                f" {format_size(row.size_diff, True):>10} {format_count(row.count):>8}"
                f" {'±' + format_count(row.count_error):>8}"
            )
        else:
            numbers = (
                f"{format_size(row.size):>10} {format_size(row.size_diff, True):>10}"
                f" {format_count(row.count):>8}"
            )
        lines.append(
            f"{rank:4d}{mark} {numbers} {format_count(row.count_diff, True):>8}"
            f" {format_size(row.average):>8}  {rest}"
        )
    return "\n".join(lines) + "\n"


class TextView:
    """The `--batch` view: plain text refreshes on `out`, like `top -b`."""

    def __init__(self, out: TextIO, source: Source, width: int = 120) -> None:
        self.out = out
        self.width = width
        self.cwd = os.getcwd()
        info = source.info
        self.label = clean_text(f"pid {info.pid} - python {info.python} - {info.how}")
        self.taken: str | None = None
        describe = getattr(source, "describe", None)  # a saved snapshot says what it knows
        if describe is not None:
            self.label, self.taken = (clean_text(text) for text in describe())

    def write(self, refresh: Refresh, history: History, verdict: Verdict) -> None:
        text = render_text(
            refresh, verdict, self.label, self.width, self.cwd, history.suspects(), self.taken
        )
        self.out.write(text + "\n")
        self.out.flush()


def run_batch(
    source: Source,
    query: Query,
    *,
    interval: float,
    iterations: int | None,
    sinks: Sequence[Sink],
    err: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Feed refreshes to `sinks` (the text view or JSON lines, --record) until `iterations`,
    the target's exit or Ctrl-C; returns the exit code (after the target's exit: its own
    status, see memtop.ending)."""
    history = History()
    shown = 0
    info = source.info
    live = source if isinstance(source, LiveControls) else None
    try:
        while iterations is None or shown < iterations:
            started = time.monotonic()
            try:
                if not shown and live is not None:
                    # Go on from the history the agent kept (a viewer left it serving).
                    history.seed(live.resume(query))
                sample = source.refresh(query, max_age=interval * 0.9)
            except ConnectionLost:
                status = wait_for_exit(live, 2.0) if live is not None else None
                if status is None:
                    raise
                err.write(f"memtop: target {info.pid} {status}\n")
                return status.exit_status if shown else EXIT_TARGET_GONE
            history.add(sample)
            feed(sinks, sample, history)
            shown += 1
            if iterations is not None and shown >= iterations:
                break
            sleep(max(0.0, started + interval - time.monotonic()))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK
