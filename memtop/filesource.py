"""A saved snapshot (or the difference of two) as a data source: the same views, offline.

Grouping and ranking are the agent's own pure functions (memtop.agent.collector), so a
file shows exactly what the live view showed, and a diff follows Snapshot.compare_to().
"""

from __future__ import annotations

import os
import time
from typing import Any

from memtop.agent import collector, rowkeys
from memtop.ending import Ending
from memtop.model import (
    Frame,
    Query,
    Refresh,
    Row,
    TableInfo,
    row_from_reply,
    row_ident,
    tracing_from_reply,
)
from memtop.snapfile import SavedSnapshot, Traceback
from memtop.source import TargetInfo, TracebackEntry


def _session(meta: dict[str, Any]) -> str | None:
    tracing = meta.get("tracing")
    session = tracing.get("session") if isinstance(tracing, dict) else None
    return session if isinstance(session, str) else None


class FileSource:
    """A table and tracebacks like a live source's, and its snapshot; nothing changes
    between refreshes, and nothing here needs the live process (no LiveControls, no
    HeapInspection)."""

    def __init__(
        self,
        current: SavedSnapshot,
        path: str,
        base: SavedSnapshot | None = None,
        base_path: str | None = None,
    ) -> None:
        self.current = current
        self.base = base
        self._by_tb = current.by_traceback()
        self._traced_total = sum(size for size, _ in self._by_tb.values())
        self._base_by_tb = base.by_traceback() if base is not None else None
        self._sources = {**(base.sources if base else {}), **current.sources}
        meta = current.meta
        label = os.path.basename(path)
        if base_path is not None:
            label = f"{label} vs {os.path.basename(base_path)}"
        self.info = TargetInfo(
            pid=int(meta.get("pid") or 0),  # 0: the file does not say
            python=str(meta.get("python") or "unknown"),
            cmdline=str(meta.get("cmdline") or label),
            how="file",
            tracing_owner=str(meta.get("tracing_owner") or "?"),
            nframe=int(meta.get("nframe") or 0),
            log_path=None,
            started=meta.get("time"),
            label=label,
        )
        self._tables: dict[Query, Refresh] = {}
        # What a view should say it cannot show: tracemalloc's own format records traces
        # and the traceback limit only.
        self.unknown_fields = tuple(
            field
            for field in ("pid", "python", "time", "rss", "traced_peak", "tracemalloc_memory")
            if meta.get(field) is None
        )
        self.unknown = tuple(
            name
            for name, field in (
                ("pid", "pid"),
                ("Python version", "python"),
                ("time taken", "time"),
                ("RSS", "rss"),
                ("traced peak", "traced_peak"),
                ("tracer memory", "tracemalloc_memory"),
            )
            if meta.get(field) is None
        )

    def describe(self) -> tuple[str, str]:
        """(who, when) for the text view: what the file says, and what it does not."""
        info = self.info
        who = f"file {info.label} - pid {info.pid or 'unknown'} - python {info.python}"
        taken = self.current.meta.get("time")
        when = (
            "taken " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(taken))
            if taken
            else "taken at an unknown time"
        )
        if self.unknown:
            source = self.current.meta.get("imported_from")
            when += f"; not recorded in the file: {', '.join(self.unknown)}" + (
                f" (imported from {source})" if source else ""
            )
        return who, when

    def refresh(self, query: Query, max_age: float) -> Refresh:
        """The table of the file (diffs against the base file, if any); a file does not
        change, so each query's table is computed once."""
        table = self._tables.get(query)
        if table is None:
            table = self._tables[query] = self._table(query)
        return table

    def _table(self, query: Query) -> Refresh:
        config = (query.group_by, query.cumulative, query.include, query.exclude)
        keep = collector.filename_filter(query.include, query.exclude)
        current = collector.group(self._by_tb, config[0], config[1], keep)
        against = None
        if self._base_by_tb is not None:
            against = collector.group(self._base_by_tb, config[0], config[1], keep)
        sort = query.sort if query.sort in rowkeys.SORT_KEYS else "size"
        rows, total = collector.rank(current, against, query.group_by, sort, query.limit)
        meta = self.current.meta
        taken = float(meta.get("time") or 0.0)
        return Refresh(
            pid=self.info.pid,
            time=taken,
            query=query,
            rss=meta.get("rss"),
            uss=meta.get("uss"),
            traced_current=int(
                meta.get("traced_current") or meta.get("traced_size") or self._traced_total
            ),
            traced_peak=int(meta.get("traced_peak") or 0),
            tracemalloc_memory=int(meta.get("tracemalloc_memory") or 0),
            traced_blocks=sum(count for _, _, count in self.current.entries),
            nframe=self.info.nframe,
            work_ms=0.0,
            table=TableInfo(
                sample_id=1,
                time=taken,
                age=max(0.0, time.time() - taken),
                fresh=True,
                pause_ms=float(meta.get("cost_ms") or 0.0),
                next_in=0.0,
                budget=0.0,
            ),
            rows=tuple(self._row(query.group_by, raw) for raw in rows),
            total_rows=total,
            tracing=tracing_from_reply(meta.get("tracing")),
            baseline_restarted=self.sessions_differ(),
            # A snapshot of sampled mode holds estimates (their error bars are not kept).
            mode="sampled" if meta.get("mode") == "sampled" else "exact",
            sample_rate=_rate(meta.get("sample_rate")),
        )

    def sessions_differ(self) -> bool:
        """True when the base file comes from another tracing session (tracing restarted
        between the two, or another process): memory the later one never traced looks
        freed. Files that do not say (older ones, tracemalloc pickles) are not judged."""
        if self.base is None:
            return False
        sessions = [_session(self.current.meta), _session(self.base.meta)]
        return None not in sessions and sessions[0] != sessions[1]

    def _row(self, group_by: str, raw: tuple[Any, ...]) -> Row:
        # Through the agent's own row builder: a file's rows are the live view's.
        key, size, size_diff, count, count_diff, tb = raw
        wire = rowkeys.wire_row(
            group_by, key, size, size_diff, count, count_diff, tb, self._sources
        )
        return row_from_reply(group_by, wire)

    def _frames(self, tb: Traceback) -> tuple[Frame, ...]:
        return tuple(Frame(f, n, self._sources.get((f, n), "")) for f, n in reversed(tb))

    def tracebacks(self, query: Query, row: Row, limit: int = 10) -> list[TracebackEntry]:
        """The heaviest tracebacks counted in `row`, as the agent finds them."""
        key = row_ident(query.group_by, row.filename, row.lineno, row.traceback)
        keep = collector.filename_filter(query.include, query.exclude)
        found = collector.tracebacks_of(
            self._by_tb, query.group_by, query.cumulative, key, keep, limit
        )
        return [TracebackEntry(size, count, self._frames(tb)) for tb, size, count in found]

    def snapshot(self) -> SavedSnapshot:
        """The file's snapshot (saved again by the viewer's `S`)."""
        return self.current

    def close(self, keep_agent: bool = False) -> Ending | None:
        """Nothing to leave."""
        return None


def _rate(value: object) -> int | None:
    """A saved sample rate, when it is one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 2**40:
        return int(value)
    return None
