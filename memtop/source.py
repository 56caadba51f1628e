"""The data source the views poll: one agent connection plus what procinfo sees.

Views (batch, TUI) never open sockets; they are handed a source: the required table
interface (Source) and what else it can do (LiveControls, HeapInspection, Snapshots), which
a view finds out with isinstance. Tests hand them fakes with the same methods.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from memtop import __version__
from memtop.attach import procfs
from memtop.attach.diagnose import ending_of
from memtop.attach.runner import Program
from memtop.client import DEFAULT_BUSY_WAIT, AgentClient
from memtop.compiled import crowded_line, read_extension_modules
from memtop.ending import Ending
from memtop.errors import AgentBusy, AgentError, ConnectionLost, MemtopError
from memtop.formatting import format_size
from memtop.history import HistorySeed, seed_from_reply
from memtop.leaks import (
    Origins,
    ReferrerChain,
    TypesTable,
    chain_from_reply,
    origins_from_reply,
    types_from_reply,
)
from memtop.model import Frame, Query, Refresh, Row, refresh_from_reply, wire_key
from memtop.procinfo import ProcInfo
from memtop.snapfile import SavedSnapshot, assemble


@dataclass(frozen=True)
class TargetInfo:
    """Who is being watched and how."""

    pid: int
    python: str
    cmdline: str
    how: str  # run | remote-exec | gdb | gdb-parked | opt-in | reuse | file
    tracing_owner: str
    nframe: int
    log_path: str | None = None
    started: float | None = None  # the process's start time (epoch seconds)
    label: str = ""  # for a saved snapshot: "new.memtop", or "new.memtop vs old.memtop"
    mode: str = "exact"  # or "sampled" (memtop.modes)
    sample_rate: int | None = None  # sampled mode: mean bytes between samples


@dataclass(frozen=True)
class TracebackEntry:
    """One distinct traceback counted in a row."""

    size: int
    count: int
    frames: tuple[Frame, ...]
    size_error: int = 0  # sampled mode: 95 % half-width of the size


class Source(Protocol):
    """What every view needs from a data source: who it is, its table, a row's
    tracebacks, and leaving (`keep_agent`: the agent stays serving, for a later viewer)."""

    info: TargetInfo

    def refresh(self, query: Query, max_age: float) -> Refresh: ...

    def tracebacks(self, query: Query, row: Row, limit: int = 10) -> list[TracebackEntry]: ...

    def close(self, keep_agent: bool = False) -> Ending | None: ...


@runtime_checkable
class LiveControls(Source, Protocol):
    """A process that runs on: the history its agent kept, a baseline, the peak, the
    mode; its connection and how it ended. A saved snapshot has none of these."""

    def resume(self, query: Query) -> HistorySeed | None: ...

    def set_baseline(self) -> None: ...

    def clear_baseline(self) -> None: ...

    def reset_peak(self) -> None: ...

    # Switch between exact and sampled mode; returns what it means.
    def set_mode(self, mode: str, rate: int | None = None) -> str: ...

    def exit_status(self) -> Ending | None: ...

    def reconnect(self) -> None: ...


@runtime_checkable
class HeapInspection(Source, Protocol):
    """Leak hunting: walks of one process's gc objects, on request only."""

    def types(self, mark: bool = False, limit: int = 100) -> TypesTable: ...

    def origins(self, type_name: str, sample: int = 200, limit: int = 10) -> Origins: ...

    def referrers(
        self, type_name: str | None = None, row: Row | None = None, timeout: float = 2.0
    ) -> ReferrerChain: ...


@runtime_checkable
class Snapshots(Source, Protocol):
    """The whole snapshot behind the table, for saving."""

    def snapshot(self) -> SavedSnapshot: ...


class LiveSource:
    """A real agent connection (and, under `memtop run`, the program memtop started).

    Thread-safe: requests from several worker threads are serialised on one connection."""

    def __init__(
        self,
        client: AgentClient,
        pid: int,
        how: str,
        program: Program | None = None,
        token: str | None = None,
    ) -> None:
        self.client = client
        self.pid = pid
        self.program = program
        self.token = token if token is not None else (program.token if program else None)
        self.proc = ProcInfo(pid)
        try:
            self._start: int | None = procfs.start_time(pid)
        except (OSError, ValueError, IndexError):
            self._start = None  # gone already
        self._lock = threading.Lock()
        # The rows of the last `top` reply and the query they answer: the agent need not
        # send unchanged rows again (the reply says rows_unchanged).
        self._rows_held: tuple[Query, int, list[Any]] | None = None
        # How long a request waits for the agent's time budget, and a refresh of the table
        # (the live view: not at all, it shows a notice and asks again when the agent said).
        self.busy_wait = DEFAULT_BUSY_WAIT
        self.refresh_wait = DEFAULT_BUSY_WAIT
        client.busy_wait = 0.0  # waits happen in _request, outside the lock
        greeting = client.greeting
        self.info = TargetInfo(
            pid=pid,
            python=str(greeting.get("py", "?")),
            cmdline=self.proc.cmdline(),
            how=how,
            tracing_owner=str(greeting.get("tracing_owner", "?")),
            nframe=int(greeting.get("nframe", 0)),
            log_path=program.log_path if program is not None else None,
            started=self.proc.create_time(),
            **_mode_fields(greeting),
        )

    def refresh(self, query: Query, max_age: float, keys: Sequence[Row] = ()) -> Refresh:
        """One refresh: the agent's rows and totals, RSS/USS read from outside; the rows
        of `keys` follow the top rows, whatever their rank."""
        args = query.top_args(max_age)
        if keys:
            args["keys"] = [wire_key(query.group_by, row) for row in keys]
        held = self._rows_held
        if held is not None and held[0] == query:
            args["reuse_rows"] = held[1]  # the sample they were read from
        reply = self._request("top", _wait=self.refresh_wait, **args)
        if reply.get("rows_unchanged") is True and held is not None and held[0] == query:
            reply = {**reply, "rows": held[2]}  # the agent knew we have them
        else:
            self._rows_held = (query, reply["sample"]["id"], reply["rows"])
        memory = self.proc.memory()
        sample = refresh_from_reply(self.pid, time.time(), query, reply, memory.rss, memory.uss)
        if crowded_line(sample) is None:
            return sample  # the count matters only then: not read
        found = read_extension_modules(self.pid)
        return dataclasses.replace(sample, extension_modules=len(found or ()))

    def resume(self, query: Query) -> HistorySeed | None:
        """The history the agent kept for this tracing session, for `query`'s grouping:
        a viewer that comes back goes on from it (None from an agent that keeps none)."""
        try:
            reply = self._request("history", **query.grouping_args())
        except AgentError:
            return None  # an agent of an older memtop, still loaded in the program
        try:
            return seed_from_reply(query, reply)
        except (KeyError, TypeError, ValueError) as exc:
            raise MemtopError(f"the agent sent an invalid history: {exc!r}") from exc

    def tracebacks(self, query: Query, row: Row, limit: int = 10) -> list[TracebackEntry]:
        """The heaviest tracebacks counted in `row`."""
        key = wire_key(query.group_by, row)
        reply = self._request("tracebacks", **query.grouping_args(), key=key, limit=limit)
        return [
            TracebackEntry(
                size=int(entry["size"]),
                count=int(entry["count"]),
                frames=tuple(
                    Frame(str(f["filename"]), int(f["lineno"]), str(f.get("source", "")))
                    for f in entry["frames"]
                ),
                size_error=int(entry.get("size_error", 0)),
            )
            for entry in reply["tracebacks"]
        ]

    def set_mode(self, mode: str, rate: int | None = None) -> str:
        """Switch the agent to `mode` (sampled at `rate`, or the rate it had, or the
        default); every viewer's tables start over. Returns what the switch means."""
        if rate is None:
            reply = self._request("mode", mode=mode)
        else:
            reply = self._request("mode", mode=mode, rate=rate)
        self.info = dataclasses.replace(self.info, **_mode_fields(reply))
        return switched_text(self.info.mode, self.info.sample_rate)

    def set_baseline(self) -> None:
        self._request("baseline", action="set")

    def clear_baseline(self) -> None:
        self._request("baseline", action="clear")

    def reset_peak(self) -> None:
        self._request("reset_peak")

    def types(self, mark: bool = False, limit: int = 100) -> TypesTable:
        """Live objects by type from the gc (a walk of every object: on request only).
        `mark` makes this the baseline later looks are compared with."""
        return types_from_reply(self._request("types", mark=mark, limit=limit))

    def origins(self, type_name: str, sample: int = 200, limit: int = 10) -> Origins:
        """Where a bounded sample of `type_name`'s instances was allocated."""
        return origins_from_reply(
            self._request("origins", type=type_name, sample=sample, limit=limit)
        )

    def referrers(
        self, type_name: str | None = None, row: Row | None = None, timeout: float = 2.0
    ) -> ReferrerChain:
        """What keeps a sample object alive: the newest `type_name` instance, or an object
        allocated at `row` (lineno grouping)."""
        if type_name is not None:
            return chain_from_reply(self._request("referrers", type=type_name, timeout=timeout))
        if row is None or row.lineno is None:
            raise MemtopError("a referrer chain needs a type or a row of a source line")
        key = wire_key("lineno", row)
        return chain_from_reply(self._request("referrers", key=key, timeout=timeout))

    def snapshot(self) -> SavedSnapshot:
        """The whole snapshot, for saving (see memtop.snapfile)."""
        with self._lock:
            self.client.busy_wait = self.busy_wait
            try:
                return fetch_snapshot(self.client, self.pid)
            finally:
                self.client.busy_wait = 0.0

    def reconnect(self) -> None:
        """Open a new connection to the same agent (after ConnectionLost).

        The agent forgets a viewer's previous table and baseline with its connection, so
        the first refresh after this shows no diffs. Raises AttachError or ConnectionLost."""
        if self.token is None:
            raise ConnectionLost("no session token to reconnect with")
        with self._lock:
            self.client.close()
            self.client = AgentClient.connect(
                self.client.path,
                self.token,
                expected_pid=self.pid,
                uid=self.client.uid,
                root=self.client.root,
            )
            self.client.busy_wait = 0.0

    def _request(self, cmd: str, _wait: float | None = None, **args: object) -> Any:
        """One request; a busy agent is asked again when it says, for up to `_wait`
        seconds (default busy_wait), without holding the connection meanwhile: other
        views' requests go on."""
        deadline = time.monotonic() + (self.busy_wait if _wait is None else _wait)
        while True:
            try:
                with self._lock:
                    return self.client.request(cmd, **args)
            except AgentBusy as exc:
                if time.monotonic() + exc.retry_in > deadline:
                    raise
                time.sleep(exc.retry_in)

    def exit_status(self) -> Ending | None:
        """How the target ended, or None while it runs."""
        if self.program is not None:
            return self.program.exit_status()
        if self._start is None:
            return Ending()
        return ending_of(self.pid, self._start)

    detached = False  # set by close() once the agent answered its detach
    agent_stopped = False  # and the agent stopped (no other viewer, not an opt-in agent)

    def close(self, keep_agent: bool = False) -> Ending | None:
        """Leave: stop the program memtop started, or detach the agent; with `keep_agent`
        (the user's `Q`, a hang-up) the agent stays serving for a later viewer. Returns
        the program's exit status when memtop stopped it."""
        status = None
        try:
            if keep_agent and self.program is not None:
                # The program memtop started keeps its agent for as long as it runs.
                self._request("configure", keep_token=True, idle_timeout=None)
            elif keep_agent:
                # An attached agent detaches by itself after its idle timeout.
                self._request("configure", keep_token=True)
            elif self.program is None:
                reply = self._request("detach")
                self.detached = True
                self.agent_stopped = not reply.get("other_viewers") and not reply.get("stays")
        except MemtopError:
            pass
        finally:
            self.client.close()
        if self.program is not None and not keep_agent:
            status = self.program.stop()
        return status


def fetch_snapshot(client: AgentClient, pid: int) -> SavedSnapshot:
    """A whole snapshot from a connected agent, part by part, with what memtop knows of
    the process."""
    proc = ProcInfo(pid)
    memory = proc.memory()
    greeting = client.greeting
    meta = {
        "pid": pid,
        "python": greeting.get("py"),
        "cmdline": proc.cmdline(),
        "rss": memory.rss,
        "uss": memory.uss,
        "tracing_owner": greeting.get("tracing_owner"),
        "memtop": __version__,
    }
    first = client.request("snapshot", part=0)
    parts = [first]
    for part in range(1, int(first["parts"])):
        parts.append(client.request("snapshot", part=part, snapshot=first["snapshot"]))
    try:
        return assemble(meta, parts)
    except ValueError as exc:
        raise MemtopError(f"the agent sent an invalid snapshot: {exc}") from exc


def _mode_fields(reply: dict[str, Any]) -> dict[str, Any]:
    """TargetInfo's mode fields from a greeting or a `mode` reply."""
    sampled = reply.get("mode") == "sampled"
    rate = reply.get("sample_rate")
    return {
        "mode": "sampled" if sampled else "exact",
        "sample_rate": int(rate) if sampled and isinstance(rate, int) else None,
    }


def switched_text(mode: str, rate: int | None) -> str:
    """What a switch of mode means for the program and the table."""
    if mode == "sampled":
        every = format_size(rate).replace(".0 ", " ") if rate else "?"
        return (
            f"Sampled mode, 1 sample per {every}: sizes are estimates (±), the program pays "
            "a few percent; the table starts over."
        )
    return (
        "Exact mode: tracemalloc traces every allocation from now on (the program runs "
        "5-25x slower while watched); the table starts over."
    )


def wait_for_exit(source: LiveControls, timeout: float) -> Ending | None:
    """After the connection dropped: how the target ended, if it did within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        status = source.exit_status()
        if status is not None or time.monotonic() >= deadline:
            return status
        time.sleep(0.05)  # no child to wait() on when attached: poll the pid


__all__ = [
    "ConnectionLost",
    "HeapInspection",
    "LiveControls",
    "LiveSource",
    "Snapshots",
    "Source",
    "TargetInfo",
    "TracebackEntry",
    "wait_for_exit",
]
