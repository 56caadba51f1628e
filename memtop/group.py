"""Several processes watched as one: a gunicorn master and its workers, a multiprocessing
pool. Each process has its own agent and socket (they are independent programs); a refresh
asks all of them at once and merges their tables by row key, keeping what each process
contributed. Workers that exit drop out with a note; with `children`, new children of the
watched parent (a recycled worker) are attached as they appear.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psutil

from memtop.errors import ConnectionLost, MemtopError
from memtop.model import Query, Row, Sample, TableInfo
from memtop.source import LiveSource, TargetInfo, TracebackEntry

MAX_ADOPTED_PER_REFRESH = 2  # attaching takes a while: new children join a few at a time


@dataclass(frozen=True)
class ProcessTotals:
    """One process's part of a group refresh."""

    pid: int
    rss: int | None
    uss: int | None
    traced: int
    untraced: int | None
    tracer: int
    rows: int

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def merge(samples: dict[int, Sample], query: Query, now: float) -> Sample:
    """One Sample for the group: totals summed, rows summed by key (each row keeps what
    every process contributed, largest first), the oldest table's timing."""
    ordered = sorted(samples.items())
    rows: dict[str, list[tuple[int, Row]]] = {}
    for pid, sample in ordered:
        for row in sample.rows:
            rows.setdefault(row.key, []).append((pid, row))
    merged = []
    for parts in rows.values():
        merged.append(
            dataclasses.replace(
                parts[0][1],
                size=sum(r.size for _, r in parts),
                count=sum(r.count for _, r in parts),
                size_diff=sum(r.size_diff for _, r in parts),
                count_diff=sum(r.count_diff for _, r in parts),
                procs=tuple(
                    sorted(((pid, r.size, r.count) for pid, r in parts), key=lambda p: -p[1])
                ),
            )
        )
    order = _ORDER.get(query.sort, _ORDER["size"])
    merged.sort(key=lambda r: (-order(r), r.key))
    merged = merged[: query.limit]

    def total(values: Iterable[int | None]) -> int | None:
        known = list(values)
        return None if any(v is None for v in known) else sum(v for v in known if v is not None)

    tables = [s.table for _, s in ordered]
    oldest = max(tables, key=lambda t: t.age)
    return dataclasses.replace(
        ordered[0][1],
        pid=ordered[0][0],
        time=now,
        query=query,
        rss=total(s.rss for _, s in ordered),
        uss=total(s.uss for _, s in ordered),
        traced_current=sum(s.traced_current for _, s in ordered),
        traced_peak=sum(s.traced_peak for _, s in ordered),
        tracemalloc_memory=sum(s.tracemalloc_memory for _, s in ordered),
        traced_blocks=total(s.traced_blocks for _, s in ordered),
        nframe=min(s.nframe for _, s in ordered),
        pause_ms=max(s.pause_ms for _, s in ordered),
        table=TableInfo(
            sample_id=sum(t.sample_id for t in tables),
            time=oldest.time,
            age=oldest.age,
            fresh=all(t.fresh for t in tables),
            pause_ms=max(t.pause_ms for t in tables),
            next_in=max(t.next_in for t in tables),
            budget=oldest.budget,
        ),
        rows=tuple(merged),
        total_rows=len(rows),
        memtop_traced=sum(s.memtop_traced for _, s in ordered),
        memtop_residue=sum(s.memtop_residue for _, s in ordered),
        read_peak=max(s.read_peak for _, s in ordered),
        extension_modules=max(s.extension_modules for _, s in ordered),
        processes=tuple(
            ProcessTotals(
                pid=pid,
                rss=s.rss,
                uss=s.uss,
                traced=s.traced_current,
                untraced=s.untraced,
                tracer=s.tracemalloc_memory,
                rows=s.total_rows,
            )
            for pid, s in ordered
        ),
    )


_ORDER: dict[str, Callable[[Row], int]] = {
    "size": lambda r: r.size,
    "count": lambda r: r.count,
    "size_diff": lambda r: abs(r.size_diff),
    "count_diff": lambda r: abs(r.count_diff),
    "growth": lambda r: r.size_diff,
}


class GroupSource:
    """The processes of a group behind the Source interface of one process."""

    keep_agent = False

    def __init__(
        self,
        members: dict[int, LiveSource],
        attach_member: Callable[[int], LiveSource],
        note: Callable[[str], None],
        parent: int | None = None,
    ) -> None:
        """`members`: the processes attached so far; `parent`: adopt its new children
        through `attach_member`; `note` says when a process joins or drops out."""
        self.members = dict(members)
        self.attach_member = attach_member
        self.note = note
        self.parent = parent
        self.ended: dict[int, str] = {}
        self._refused: set[int] = set()
        self.focus: int | None = None  # one process shown on its own, or None: all merged
        first = next(iter(self.members.values()))
        pids = sorted(self.members)
        self.info = TargetInfo(
            pid=parent if parent is not None else pids[0],
            python=first.info.python,
            cmdline=f"{len(pids)} processes: " + " ".join(str(p) for p in pids),
            how="group",
            tracing_owner=first.info.tracing_owner,
            nframe=first.info.nframe,
            started=first.info.started,
        )
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="memtop-group")

    # --- tables ------------------------------------------------------------------------

    def resume(self, query: Query) -> None:
        """Each agent keeps its own history; a merged table starts its own."""
        return None

    def refresh(self, query: Query, max_age: float) -> Sample:
        """Every process at once, merged; raises ConnectionLost once all have ended."""
        self._adopt_children()
        pids = sorted(self.members)
        futures = {
            pid: self._pool.submit(self.members[pid].refresh, query, max_age) for pid in pids
        }
        samples: dict[int, Sample] = {}
        for pid, future in futures.items():
            try:
                samples[pid] = future.result()
            except ConnectionLost:
                self._drop(pid)
            except MemtopError as exc:
                self.note(f"pid {pid}: {exc.message}")
        if not samples:
            raise ConnectionLost("every watched process has ended")
        merged = merge(samples, query, time.time())
        focus = self.focus
        if focus is None:
            return merged
        if focus not in samples:
            self.focus = None  # it dropped out: back to the whole group
            return merged
        return dataclasses.replace(samples[focus], processes=merged.processes)

    def tracebacks(self, query: Query, row: Row, limit: int = 10) -> list[TracebackEntry]:
        """The heaviest tracebacks of a row across the processes that hold it."""
        merged: dict[tuple[object, ...], TracebackEntry] = {}
        holders = [pid for pid, _, _ in row.procs] or sorted(self.members)
        for pid in holders:
            member = self.members.get(pid)
            if member is None:
                continue
            for entry in member.tracebacks(query, row, limit):
                old = merged.get(entry.frames)
                merged[entry.frames] = (
                    entry
                    if old is None
                    else dataclasses.replace(
                        old, size=old.size + entry.size, count=old.count + entry.count
                    )
                )
        return sorted(merged.values(), key=lambda e: -e.size)[:limit]

    def set_baseline(self) -> None:
        for member in list(self.members.values()):
            member.set_baseline()

    def clear_baseline(self) -> None:
        for member in list(self.members.values()):
            member.clear_baseline()

    def reset_peak(self) -> None:
        for member in list(self.members.values()):
            member.reset_peak()

    def types(self, mark: bool = False, limit: int = 100) -> object:
        raise MemtopError(self._one_process("the types view"))

    def origins(self, type_name: str, sample: int = 200, limit: int = 10) -> object:
        raise MemtopError(self._one_process("origins"))

    def referrers(self, *args: object, **kwargs: object) -> object:
        raise MemtopError(self._one_process("referrer chains"))

    def snapshot(self) -> object:
        raise MemtopError(self._one_process("snapshots"))

    def _one_process(self, what: str) -> str:
        pids = " ".join(str(p) for p in sorted(self.members))
        return f"{what} walk one process's heap: run `memtop PID` for one of {pids}"

    # --- membership --------------------------------------------------------------------

    def _drop(self, pid: int) -> None:
        member = self.members.pop(pid)
        status = member.exit_status() or "closed its agent connection"
        self.ended[pid] = status
        self.note(f"pid {pid} {status}: dropped from the group")
        member.close()

    def _adopt_children(self) -> None:
        if self.parent is None:
            return
        adopted = 0
        known = set(self.members) | set(self.ended) | self._refused
        for pid in children_of(self.parent, known):
            if adopted >= MAX_ADOPTED_PER_REFRESH:
                break
            adopted += 1
            try:
                self.members[pid] = self.attach_member(pid)
            except MemtopError as exc:
                self._refused.add(pid)
                self.note(f"new child {pid} not attached: {exc.message}")
                continue
            self.note(f"new child {pid} attached")

    def exit_status(self) -> str | None:
        """None while any process of the group runs."""
        if any(member.exit_status() is None for member in self.members.values()):
            return None
        return "ended (every watched process)"

    def reconnect(self) -> None:
        raise ConnectionLost("a group reconnects process by process on its next refresh")

    def close(self, keep_agent: bool | None = None) -> str | None:
        keep = self.keep_agent if keep_agent is None else keep_agent
        for member in self.members.values():
            member.close(keep_agent=keep)
        self._pool.shutdown(wait=False)
        return None


def children_of(parent: int, known: Iterable[int] = ()) -> list[int]:
    """The living descendants of `parent` that run CPython, oldest first; `known` ones are
    left out without a look (telling CPython reads the process's memory map)."""
    from memtop.attach.pyversion import detect_python

    try:
        found = psutil.Process(parent).children(recursive=True)
    except psutil.Error:
        return []
    skip = set(known)
    pids = []
    for child in sorted(found, key=lambda p: p.pid):
        if child.pid in skip:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE or detect_python(child.pid) is None:
                continue
        except (psutil.Error, OSError, ValueError):
            continue
        pids.append(child.pid)
    return pids
