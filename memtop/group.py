"""Several processes watched as one: a gunicorn master and its workers, a multiprocessing
pool. Each process has its own agent and socket (they are independent programs); a refresh
asks all of them at once and merges their tables by row key, keeping what each process
contributed, and asks again until every row shown holds every process's share
(memtop.group_ranks). Workers that exit drop out with a note; with `children`, new children
of the watched parent (a recycled worker) are attached as they appear (memtop.children).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from memtop.children import Children
from memtop.ending import Ending
from memtop.errors import ConnectionLost, MemtopError
from memtop.group_ranks import ORDER, Ask, completions, keys_that_fit
from memtop.model import Query, Refresh, Row, TableInfo
from memtop.source import LiveSource, TargetInfo, TracebackEntry

MEMBER_WAIT = 3.0  # seconds a refresh waits for a process before showing its last table
SETTLE_AGE = 3600.0  # asking a process again: the table it has just read will do
ROUNDS = 3  # requests per process and refresh at most, the first one included


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


def merge(samples: dict[int, Refresh], query: Query, now: float, table_id: int = 0) -> Refresh:
    """One Refresh for the group: totals summed, rows summed by key (each row keeps what
    every process contributed, largest first), the oldest table's timing; `table_id`
    names the combination of tables."""
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
    order = ORDER.get(query.sort, ORDER["size"])
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
            sample_id=table_id,
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


def _ask(member: LiveSource, query: Query, max_age: float, ask: Ask) -> Refresh:
    """One process's top `ask.depth` rows, then those of `ask.rows`."""
    keys = keys_that_fit(ask.rows, query.group_by)
    return member.refresh(dataclasses.replace(query, limit=ask.depth), max_age, keys)


class GroupSource:
    """The processes of a group behind the Source interface of one process, with its
    LiveControls; heap walks and snapshots are one process's (`memtop PID`)."""

    def __init__(
        self,
        members: dict[int, LiveSource],
        attach_member: Callable[[int], LiveSource],
        note: Callable[[str], None],
        parent: int | None = None,
        refused: Iterable[tuple[int, int]] = (),
    ) -> None:
        """`members`: the processes attached so far; `parent`: adopt its new children
        through `attach_member` (not the `refused` ones, as (pid, start time)); `note`
        says when a process joins or drops out."""
        self.members = dict(members)
        self._note = note
        self._notes: deque[str] = deque(maxlen=20)  # for a view that shows them itself
        parents = [] if parent is None else [parent]
        self._children = Children(parents, attach_member, self.note, refused)
        for pid in self.members:
            self._children.watching(pid)
        self.ended: dict[int, str] = {}
        self._pending: dict[int, tuple[Query, Future[Refresh]]] = {}  # requests under way
        self._last: dict[int, tuple[Query, Refresh]] = {}  # each process's last table
        # The merged table's rows: asked of every process next time, whatever they rank
        # there, so a steady table needs one request per process.
        self._shown: tuple[Query, tuple[Row, ...]] = (Query(), ())
        self._tables: object = None  # the tables the last refresh showed
        self._table_id = 0  # a new table shown: a new id, larger than any before
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
        shown = self._shown[1] if self._shown[0] == query else ()
        for pid in sorted(self.members):
            if pid not in self._pending:
                first = Ask(query.limit, shown)
                asked = self._pool.submit(_ask, self.members[pid], query, max_age, first)
                self._pending[pid] = (query, asked)
        samples = self._collect(query, max(MEMBER_WAIT, 3 * max_age))
        while not samples and self._pending:
            # Nothing to show at all: wait for whichever process answers first.
            samples = self._collect(query, None)
        if not samples:
            raise ConnectionLost("every watched process has ended")
        self._complete(samples, query)
        focus = self.focus
        if focus is not None and focus not in samples:
            self.focus = focus = None  # it dropped out: back to the whole group
        tables = (focus, query, sorted((pid, s.table.sample_id) for pid, s in samples.items()))
        if tables != self._tables:
            self._tables = tables
            self._table_id += 1
        merged = merge(samples, query, time.time(), self._table_id)
        self._shown = (query, merged.rows)
        if focus is None:
            return merged
        own = samples[focus]
        return dataclasses.replace(
            own,
            query=query,
            rows=own.rows[: min(query.limit, own.total_rows)],
            processes=merged.processes,
            table=dataclasses.replace(own.table, sample_id=self._table_id),
        )

    def _complete(self, samples: dict[int, Refresh], query: Query) -> None:
        """Ask the processes that just answered again, for the rows some other process
        ranked higher (and deeper ranks when a row none of them sent could still make the
        table), until every row the merged table shows has every process's share."""
        for _ in range(ROUNDS - 1):
            asks = {
                pid: ask
                for pid, ask in completions(samples, query).items()
                if pid in self.members and pid not in self._pending
            }
            if not asks:
                return
            asked = {
                pid: self._pool.submit(_ask, self.members[pid], query, SETTLE_AGE, ask)
                for pid, ask in asks.items()
            }
            done, _ = wait(asked.values(), timeout=MEMBER_WAIT)
            for pid, future in asked.items():
                if future not in done:
                    self._pending[pid] = (query, future)  # read by a later refresh
                    continue
                try:
                    samples[pid] = future.result()
                except ConnectionLost:
                    self._drop(pid)  # this refresh still shows what it sent before
                    continue
                except MemtopError:
                    continue  # busy: its first answer stands
                self._last[pid] = (query, samples[pid])

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
                if last is not None and last[0] == query:
                    samples[pid] = _aged(last[1], time.time())
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
                samples[pid] = sample
                self._last[pid] = (query, sample)
            elif pid in self._last and self._last[pid][0] == query:
                samples[pid] = self._last[pid][1]
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
        self._children.left(pid)
        status = str(member.exit_status() or "closed its agent connection")
        self.ended[pid] = status
        self.note(f"pid {pid} {status}: dropped from the group")
        member.close()

    def _adopt_children(self) -> None:
        for pid, member in self._children.adopt().items():
            self.members[pid] = member
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
