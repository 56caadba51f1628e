"""Several processes watched as one: a gunicorn master and its workers, a multiprocessing
pool. Each process has its own agent and socket (they are independent programs); a refresh
asks all of them at once and merges their tables by row key, keeping what each process
contributed. Workers that exit drop out with a note; with `children`, new children of the
watched parent (a recycled worker) are attached as they appear.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import psutil

from memtop.ending import Ending
from memtop.errors import ConnectionLost, MemtopError
from memtop.model import Query, Refresh, Row, TableInfo
from memtop.source import LiveSource, TargetInfo, TracebackEntry

MAX_ADOPTED_PER_REFRESH = 2  # attaching takes a while: new children join a few at a time
MEMBER_WAIT = 3.0  # seconds a refresh waits for a process before showing its last table


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


def merge(samples: dict[int, Refresh], query: Query, now: float) -> Refresh:
    """One Refresh for the group: totals summed, rows summed by key (each row keeps what
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
        work_ms=max(s.work_ms for _, s in ordered),
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
    """The processes of a group behind the Source interface of one process, with its
    LiveControls; heap walks and snapshots are one process's (`memtop PID`)."""

    def __init__(
        self,
        members: dict[int, LiveSource],
        attach_member: Callable[[int], LiveSource],
        note: Callable[[str], None],
        parent: int | None = None,
        refused: Iterable[int] = (),
    ) -> None:
        """`members`: the processes attached so far; `parent`: adopt its new children
        through `attach_member` (not the `refused` ones); `note` says when a process joins
        or drops out."""
        self.members = dict(members)
        self.attach_member = attach_member
        self._note = note
        self._notes: deque[str] = deque(maxlen=20)  # for a view that shows them itself
        self.parent = parent
        self.ended: dict[int, str] = {}
        self._refused: set[int] = set(refused)
        self._pending: dict[int, tuple[Query, Future[Refresh]]] = {}  # requests under way
        self._last: dict[int, Refresh] = {}
        self._slow: set[int] = set()  # processes said not to answer
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

    def note(self, text: str) -> None:
        """Say that a process joined, dropped out or stopped answering."""
        self._notes.append(text)
        self._note(text)

    def take_notes(self) -> list[str]:
        """The notes since the last call (the live view shows them; stderr is under it)."""
        taken = []
        while self._notes:
            taken.append(self._notes.popleft())
        return taken

    # --- tables ------------------------------------------------------------------------

    def resume(self, query: Query) -> None:
        """Each agent keeps its own history; a merged table starts its own."""
        return None

    def refresh(self, query: Query, max_age: float) -> Refresh:
        """Every process at once, merged; raises ConnectionLost once all have ended.

        A process that does not answer within the wait (stopped, or its agent starved of
        the GIL) does not hold up the others: its last table stands in, and its request
        is left to finish, to be read on a later refresh."""
        self._adopt_children()
        for pid in sorted(self.members):
            if pid not in self._pending:
                self._pending[pid] = (
                    query,
                    self._pool.submit(self.members[pid].refresh, query, max_age),
                )
        samples = self._collect(query, max(MEMBER_WAIT, 3 * max_age))
        while not samples and self._pending:
            # Nothing to show at all: wait for whichever process answers first.
            samples = self._collect(query, None)
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

    def _collect(self, query: Query, timeout: float | None) -> dict[int, Refresh]:
        """The tables answered within `timeout` (None: until the first answer), and the
        last tables of the processes still being asked."""
        futures = [future for _, future in self._pending.values()]
        wait(futures, timeout, return_when=ALL_COMPLETED if timeout else FIRST_COMPLETED)
        samples: dict[int, Refresh] = {}
        for pid, (asked, future) in sorted(self._pending.items()):
            if not future.done():
                if pid not in self._slow:
                    self._slow.add(pid)
                    self.note(f"pid {pid} is not answering (stopped?): showing its last table")
                last = self._last.get(pid)
                if last is not None and last.query == query:
                    samples[pid] = _aged(last, time.time())
                continue
            del self._pending[pid]
            self._slow.discard(pid)
            try:
                sample = future.result()
            except ConnectionLost:
                self._drop(pid)
                continue
            except MemtopError as exc:
                self.note(f"pid {pid}: {exc.message}")
                continue
            if asked == query:
                samples[pid] = self._last[pid] = sample
            elif pid in self._last and self._last[pid].query == query:
                samples[pid] = self._last[pid]
        return samples

    def tracebacks(self, query: Query, row: Row, limit: int = 10) -> list[TracebackEntry]:
        """The heaviest tracebacks of a row across the processes that hold it."""
        merged: dict[tuple[object, ...], TracebackEntry] = {}
        holders = [pid for pid, _, _ in row.procs] or sorted(self.members)
        # Asked side by side; a process that ended or does not answer in time (stopped)
        # leaves out only its own part.
        members = dict(self.members)  # a refresh in another thread may drop one
        asked = [
            self._pool.submit(members[pid].tracebacks, query, row, limit)
            for pid in holders
            if pid in members
        ]
        done, _ = wait(asked, timeout=MEMBER_WAIT)
        answers = []
        for future in asked:
            if future not in done:
                continue
            try:
                answers.append(future.result())
            except MemtopError:
                continue
        if asked and not answers:
            raise MemtopError("no process holding this row answered")
        for answer in answers:
            for entry in answer:
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
        self._each(lambda member: member.set_baseline())

    def clear_baseline(self) -> None:
        self._each(lambda member: member.clear_baseline())

    def reset_peak(self) -> None:
        self._each(lambda member: member.reset_peak())

    def _each(self, call: Callable[[LiveSource], None]) -> None:
        """`call` on every process side by side; one that ended or does not answer in time
        (stopped) is left out, and it is an error only when none answered."""
        asked = [self._pool.submit(call, member) for member in list(self.members.values())]
        done, _ = wait(asked, timeout=MEMBER_WAIT)
        failed = [f.exception() for f in done if f.exception() is not None]
        if asked and len(failed) == len(asked):
            error = failed[0]
            raise error if isinstance(error, MemtopError) else MemtopError(str(error))
        if asked and not done:
            raise MemtopError("no process of the group answered in time")

    def set_mode(self, mode: str, rate: int | None = None) -> str:
        """Every process switches; the words of the last one say what it means."""
        said = ""
        for member in list(self.members.values()):
            said = member.set_mode(mode, rate)
        self.info = dataclasses.replace(self.info, mode=mode)
        return said

    # --- membership --------------------------------------------------------------------

    def _drop(self, pid: int) -> None:
        member = self.members.pop(pid)
        self._last.pop(pid, None)
        status = str(member.exit_status() or "closed its agent connection")
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

    def exit_status(self) -> Ending | None:
        """None while any process of the group runs; no one exit code speaks for a group."""
        if any(member.exit_status() is None for member in self.members.values()):
            return None
        return Ending(words="ended (every watched process)")

    def reconnect(self) -> None:
        raise ConnectionLost("a group reconnects process by process on its next refresh")

    def close(self, keep_agent: bool = False) -> Ending | None:
        for pid, member in self.members.items():
            if pid in self._pending and not self._pending[pid][1].done():
                # Its request is still under way (a stopped process): shutting the socket
                # down ends the wait; its agent detaches by itself once idle.
                member.client.abort()
            member.close(keep_agent=keep_agent)
        self._pool.shutdown(wait=False)
        return None


def _aged(sample: Refresh, now: float) -> Refresh:
    """A process's last table standing in for a new one: as old as it really is now."""
    age = sample.table.age + max(0.0, now - sample.time)
    return dataclasses.replace(
        sample, table=dataclasses.replace(sample.table, age=age, fresh=False)
    )


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
