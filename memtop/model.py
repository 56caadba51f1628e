"""The pure core: what the views show, derived from the agent's replies.

No IO, no Textual. The batch output and the TUI are two views of these objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memtop.agent import protocol, rowkeys
from memtop.formatting import format_size

# What the agent accepts in one list of filename patterns (include, exclude).
MAX_PATTERNS = protocol.MAX_PATTERNS
MAX_PATTERN_CHARS = protocol.MAX_PATTERN_CHARS

# The agent's grouping keys and sort orders, one copy (memtop.agent.rowkeys).
GROUP_KEYS = rowkeys.GROUP_KEYS
CUMULATIVE_KEYS = rowkeys.CUMULATIVE_KEYS  # the groupings that may count every frame
SORT_KEYS = rowkeys.SORT_KEYS


# Allocations that are rarely what a leak hunt is after: the import system, frames
# tracemalloc could not name, and memtop's own agent and tracemalloc module.
INTERNAL_PATTERNS = (
    "<frozen importlib.*",
    "*/importlib/*",
    "<unknown>",
    "*/memtop/agent/*",
    "*/tracemalloc.py",
)


@dataclass(frozen=True)
class Frame:
    """One frame of an allocation traceback."""

    filename: str
    lineno: int
    source: str = ""


@dataclass(frozen=True)
class Row:
    """One line of the top table."""

    key: str
    filename: str
    lineno: int | None
    size: int
    count: int
    size_diff: int
    count_diff: int
    source: str
    traceback: tuple[Frame, ...]
    # Watching a group (memtop.group): (pid, size, count) of each process holding the row.
    procs: tuple[tuple[int, int, int], ...] = ()
    # Sampled mode: 95 % half-widths of size and count (0 in exact mode).
    size_error: int = 0
    count_error: int = 0

    @property
    def average(self) -> float:
        """Average block size in bytes."""
        return self.size / self.count if self.count else 0.0


@dataclass(frozen=True)
class Query:
    """What the viewer asks the agent for on each refresh."""

    group_by: str = "lineno"
    cumulative: bool = False
    limit: int = 50
    sort: str = "size"
    compare: str = "previous"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def grouping_args(self) -> dict[str, Any]:
        """Arguments that select a grouping (shared by `top` and `tracebacks`)."""
        return {
            "group_by": self.group_by,
            "cumulative": self.cumulative,
            "include": list(self.include),
            "exclude": list(self.exclude),
        }

    def top_args(self, max_age: float) -> dict[str, Any]:
        """Arguments of the agent's `top` command."""
        return {
            **self.grouping_args(),
            "limit": self.limit,
            "sort": self.sort,
            "compare": self.compare,
            "max_age": max_age,
        }


@dataclass(frozen=True)
class TableInfo:
    """When the rows were computed, and what that cost the target."""

    sample_id: int
    time: float
    age: float
    fresh: bool
    pause_ms: float
    next_in: float
    budget: float


@dataclass(frozen=True)
class Tracing:
    """The tracing session a table comes from."""

    session: str | None  # new at every start or restart of tracing (None: not tracing)
    since: float | None  # when tracing started (epoch), when the agent knows it
    owner: str  # "agent" (started by memtop), "target" (the program's own) or "none"
    sees_only_new: bool  # started by an attach: memory allocated before is not traced

    def age(self, now: float) -> float | None:
        """Seconds since tracing started, when known."""
        return None if self.since is None else max(0.0, now - self.since)


def tracing_from_reply(raw: Any) -> Tracing | None:
    """The `tracing` object of an agent's reply or a saved file's header (None when there
    is none, or it is not what memtop writes)."""
    if not isinstance(raw, dict):
        return None
    since = raw.get("since")
    session = raw.get("session")
    if not isinstance(since, (int, float, type(None))) or isinstance(since, bool):
        return None
    return Tracing(
        session=None if session is None else str(session),
        since=None if since is None else float(since),
        owner=str(raw.get("owner", "?")),
        sees_only_new=raw.get("sees_only_new") is True,
    )


@dataclass(frozen=True)
class Refresh:
    """One refresh: process memory, tracemalloc totals and the top rows."""

    pid: int
    time: float
    query: Query
    rss: int | None
    uss: int | None
    traced_current: int
    traced_peak: int
    tracemalloc_memory: int
    traced_blocks: int | None
    nframe: int
    # The agent's work for this refresh (its table read, grouping and reply), in ms; the
    # table's own pause_ms is the part that read the traces (TableInfo).
    work_ms: float
    table: TableInfo
    rows: tuple[Row, ...]
    total_rows: int
    baseline_time: float | None = None
    memtop_traced: int = 0  # memtop's own traced memory in the target (part of traced)
    memtop_residue: int = 0  # untraced memory memtop's table reads left behind
    read_peak: int = 0  # extra resident memory the last table read needed while it lasted
    extension_modules: int = 0  # compiled extension modules loaded (memtop.compiled)
    processes: tuple[Any, ...] = ()  # a group's refresh: memtop.group.ProcessTotals each
    tracing: Tracing | None = None
    baseline_restarted: bool = False  # the baseline was read in an earlier tracing session
    mode: str = "exact"  # or "sampled": sizes and counts are estimates (memtop.modes)
    sample_rate: int | None = None  # sampled mode: mean bytes between samples
    sampler_gaps: int = 0  # times the program unhooked the sampler (re-hooked each time)

    @property
    def sampled(self) -> bool:
        """True when sizes and counts are the byte sampler's estimates."""
        return self.mode == "sampled"

    @property
    def error_bars(self) -> bool:
        """Rows carry error bars (a saved sampled snapshot keeps the estimates only)."""
        return self.sampled and any(row.size_error for row in self.rows)

    @property
    def memtop_memory(self) -> int:
        """memtop's own memory in the target: what it holds, and what its reads left."""
        return self.memtop_traced + self.memtop_residue

    @property
    def untraced(self) -> int | None:
        """RSS held neither by traced memory, nor by the tracer's own tables, nor left by
        memtop: native memory, fragmentation, and what existed before tracing started."""
        if self.rss is None:
            return None
        return max(
            0, self.rss - self.traced_current - self.tracemalloc_memory - self.memtop_residue
        )


def row_ident(group_by: str, filename: str, lineno: int | None, frames: tuple[Frame, ...]) -> Any:
    """The grouping's own key of a row, as the agent groups by it (memtop.agent.rowkeys)."""
    pairs = [(f.filename, f.lineno) for f in frames]
    return rowkeys.key_from_row(group_by, filename, lineno, pairs)


def row_key(group_by: str, filename: str, lineno: int | None, frames: tuple[Frame, ...]) -> str:
    """Stable identity of a row within one grouping, as the viewer names it."""
    return str(rowkeys.label(row_ident(group_by, filename, lineno, frames), group_by))


def wire_key(group_by: str, row: Row) -> dict[str, Any]:
    """How a request names `row` to the agent (tracebacks, referrers)."""
    key = row_ident(group_by, row.filename, row.lineno, row.traceback)
    wire: dict[str, Any] = rowkeys.encode(key, group_by)
    return wire


def row_from_reply(group_by: str, raw: dict[str, Any]) -> Row:
    """A Row from one row object of the agent's `top` reply."""
    frames = tuple(
        Frame(str(f["filename"]), int(f["lineno"]), str(f.get("source", "")))
        for f in raw.get("traceback", ())
    )
    filename = str(raw["filename"])
    lineno = raw.get("lineno")
    return Row(
        key=row_key(group_by, filename, lineno, frames),
        filename=filename,
        lineno=None if lineno is None else int(lineno),
        size=int(raw["size"]),
        count=int(raw["count"]),
        size_diff=int(raw["size_diff"]),
        count_diff=int(raw["count_diff"]),
        source=str(raw.get("source", "")),
        traceback=frames,
        size_error=int(raw.get("size_error", 0)),
        count_error=int(raw.get("count_error", 0)),
    )


def refresh_from_reply(
    pid: int, now: float, query: Query, reply: dict[str, Any], rss: int | None, uss: int | None
) -> Refresh:
    """Combine the agent's `top` reply with what procinfo read from outside."""
    totals = reply["totals"]
    info = reply["sample"]
    return Refresh(
        pid=pid,
        time=now,
        query=query,
        rss=rss,
        uss=uss,
        traced_current=int(totals["traced_current"]),
        traced_peak=int(totals["traced_peak"]),
        tracemalloc_memory=int(totals["tracemalloc_memory"]),
        traced_blocks=info.get("traced_blocks"),
        nframe=int(totals["nframe"]),
        work_ms=float(info.get("work_ms", 0.0)),
        table=TableInfo(
            sample_id=int(info["id"]),
            time=float(info["time"]),
            age=float(info["age"]),
            fresh=bool(info["fresh"]),
            pause_ms=float(info["pause_ms"]),
            next_in=float(info["next_in"]),
            budget=float(info["budget"]),
        ),
        rows=tuple(row_from_reply(query.group_by, r) for r in reply["rows"]),
        total_rows=int(reply["total_rows"]),
        baseline_time=reply.get("baseline_time"),
        memtop_traced=int(totals.get("memtop_traced", 0)),
        memtop_residue=int(totals.get("memtop_residue", 0)),
        read_peak=int(info.get("read_peak", 0)),
        tracing=tracing_from_reply(reply.get("tracing")),
        baseline_restarted=bool(reply.get("baseline_restarted", False)),
        mode="sampled" if totals.get("mode") == "sampled" else "exact",
        sample_rate=_optional_int(totals.get("sample_rate")),
        sampler_gaps=int(totals.get("sampler_gaps", 0)),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


RESTARTED_BASELINE = (
    "tracing restarted after the baseline was set: the Δ columns compare two tracing "
    "sessions (set a new baseline)"
)


def only_new_note(tracing: Tracing | None, now: float) -> str | None:
    """The warning that older memory is missing, when tracing started at an attach."""
    if tracing is None or not tracing.sees_only_new:
        return None
    age = tracing.age(now)
    since = "" if age is None else f" {_duration(age)} ago"
    return f"tracing since attach{since}: older memory is not in the table"


def empty_note(tracing: Tracing | None, now: float) -> str | None:
    """Why an attach's table is empty (None unless tracing started at the attach)."""
    if tracing is None or not tracing.sees_only_new:
        return None
    age = tracing.age(now)
    when = "" if age is None else f" {_duration(age)} ago"
    return f"0 rows: nothing allocated since the attach{when} is held"


def mode_text(sample: Refresh) -> str:
    """The mode in words: 'exact (tracemalloc)' or 'sampled, 1 per 256 KiB'."""
    if not sample.sampled:
        return "exact (tracemalloc)"
    rate = format_size(sample.sample_rate).replace(".0 ", " ") if sample.sample_rate else "?"
    return f"sampled, 1 per {rate}"


def gaps_note(gaps: int) -> str:
    """What the sampler's gaps mean: the program unhooked it (tracemalloc.stop())."""
    times = "once" if gaps == 1 else f"{gaps} times"
    return (
        f"the program unhooked the sampler {times} (tracemalloc.stop()); memtop hooked it "
        "again, and what was allocated in between is not in the table"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
