"""The pure core: what the views show, derived from the agent's replies.

No IO, no Textual. The batch output and the TUI are two views of these objects.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

GROUP_KEYS = ("lineno", "filename", "traceback")
SORT_KEYS = ("size", "size_diff", "count", "count_diff", "growth")


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
class Sample:
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
    pause_ms: float
    table: TableInfo
    rows: tuple[Row, ...]
    total_rows: int
    baseline_time: float | None = None
    agent_traced: int = 0

    @property
    def untraced(self) -> int | None:
        """RSS not explained by traced Python allocations (native, fragmentation, tracer)."""
        if self.rss is None:
            return None
        return max(0, self.rss - self.traced_current)


def row_key(group_by: str, filename: str, lineno: int | None, frames: tuple[Frame, ...]) -> str:
    """Stable identity of a row within one grouping."""
    if group_by == "filename":
        return filename
    if group_by == "traceback":
        return " <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(frames))
    return f"{filename}:{lineno}"


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
    )


def sample_from_reply(
    pid: int, now: float, query: Query, reply: dict[str, Any], rss: int | None, uss: int | None
) -> Sample:
    """Combine the agent's `top` reply with what procinfo read from outside."""
    totals = reply["totals"]
    info = reply["sample"]
    return Sample(
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
        pause_ms=float(info.get("work_ms", 0.0)),
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
        agent_traced=int(totals.get("agent_traced", 0)),
    )


def sample_json(sample: Sample, history: History | None = None) -> dict[str, Any]:
    """The `--json` line of one refresh (schema in DESIGN.md §2; fields are only added).

    With the `history` of the refreshes so far, rows carry `growth_rate` (bytes/min over
    their recent tables, null while too few) and `suspect` (steady growth: a likely leak)."""
    suspects = history.suspects() if history is not None else {}
    return {
        "pid": sample.pid,
        "time": sample.time,
        "group_by": sample.query.group_by,
        "cumulative": sample.query.cumulative,
        "rss": sample.rss,
        "uss": sample.uss,
        "traced_current": sample.traced_current,
        "traced_peak": sample.traced_peak,
        "tracemalloc_memory": sample.tracemalloc_memory,
        "traced_blocks": sample.traced_blocks,
        "nframe": sample.nframe,
        "pause_ms": sample.pause_ms,
        "untraced": sample.untraced,
        "table": {
            "age": round(sample.table.age, 3),
            "fresh": sample.table.fresh,
            "pause_ms": sample.table.pause_ms,
            "next_in": sample.table.next_in,
            "budget": sample.table.budget,
        },
        "rows": [
            {
                "key": row.key,
                "filename": row.filename,
                "lineno": row.lineno,
                "size": row.size,
                "count": row.count,
                "size_diff": row.size_diff,
                "count_diff": row.count_diff,
                "source": row.source,
                "traceback": [{"filename": f.filename, "lineno": f.lineno} for f in row.traceback],
                "growth_rate": history.growth_rate(row.key) if history is not None else None,
                "suspect": row.key in suspects,
                "suspect_confidence": suspects[row.key].confidence if row.key in suspects else 0.0,
            }
            for row in sample.rows
        ],
    }


# --- history and verdict ----------------------------------------------------------------

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class MemoryPoint:
    """Process and traced memory at one refresh."""

    time: float
    rss: int | None
    traced: int


@dataclass(frozen=True)
class Verdict:
    """A one-line reading of the memory history."""

    kind: str  # collecting | steady | growing | rss-growing | fragmentation | untraced
    text: str
    traced_rate: float = 0.0  # bytes per minute
    rss_rate: float = 0.0


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per second) of (time, value) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def judge(points: list[MemoryPoint], window: float = 120.0) -> Verdict:
    """Read growth and the RSS-vs-traced gap over the last `window` seconds.

    Growth counts when it holds over the window and still holds over its last third (a
    burst a minute ago is not growth now), or when the last third alone rises steadily
    (growth that goes on after a burst). When several findings hold, the most striking
    leads and traced growth, if any, follows: "RSS high but traced fell ... · traced +3
    MiB/min"."""
    if not points:
        return Verdict("collecting", "collecting: no data yet")
    recent = [p for p in points if p.time >= points[-1].time - window]
    span = recent[-1].time - recent[0].time
    if len(recent) < 5 or span < 10.0:
        return Verdict("collecting", f"collecting: {span:.0f} s of history")
    last = recent[-1]
    tail = [p for p in recent if p.time >= last.time - span / 3] or recent[-2:]
    traced_rate = slope([(p.time, p.traced) for p in recent]) * 60.0
    traced_now = slope([(p.time, p.traced) for p in tail]) * 60.0
    with_rss = [p for p in recent if p.rss is not None]
    rss_rate = slope([(p.time, float(p.rss or 0)) for p in with_rss]) * 60.0 if with_rss else 0.0
    rss_now = slope([(p.time, float(p.rss or 0)) for p in tail if p.rss is not None]) * 60.0
    limit = max(256 * KIB, 0.01 * last.traced)
    tail_points = [(p.time, float(p.traced)) for p in tail]
    steady_now = (
        len(tail) >= 4 and traced_now > limit and r_squared(tail_points, traced_now / 60.0) >= 0.8
    )
    growing = (traced_rate > limit and traced_now > limit / 2) or steady_now
    growth = f"traced {format_rate(traced_rate if traced_rate > limit else traced_now)}"
    rss = last.rss
    findings: list[tuple[str, str]] = []
    if rss is not None:
        rss_limit = max(MIB, 0.01 * rss)
        if rss_rate > rss_limit and rss_now > rss_limit / 2 and traced_rate < 0.5 * rss_rate:
            findings.append(
                (
                    "rss-growing",
                    f"RSS {format_rate(rss_rate)} while traced is "
                    "flat: native memory or fragmentation",
                )
            )
        top_traced = max(p.traced for p in recent)
        top_rss = max((p.rss or 0) for p in with_rss)
        if (
            top_traced - last.traced > 8 * MIB
            and last.traced < 0.5 * top_traced
            and rss > 0.8 * top_rss
        ):
            findings.append(
                (
                    "fragmentation",
                    f"RSS high but traced fell to "
                    f"{last.traced / top_traced:.0%} of its recent peak: freed memory "
                    "not returned to the OS (fragmentation)",
                )
            )
    if growing:
        findings.append(("growing", f"{growth}: Python objects accumulating"))
    if rss is not None:
        untraced = rss - last.traced
        if untraced > 100 * MIB and untraced > 3 * last.traced:
            findings.append(
                (
                    "untraced",
                    f"{untraced / rss:.0%} of RSS is untraced: native "
                    "allocations, or memory allocated before tracing started",
                )
            )
    if not findings:
        return Verdict("steady", "steady", traced_rate, rss_rate)
    kind, text = findings[0]
    if growing and kind != "growing":
        text += f" · {growth}"
    return Verdict(kind, text, traced_rate, rss_rate)


def format_rate(bytes_per_min: float) -> str:
    """'+3.1 MB/min' style rate."""
    sign = "+" if bytes_per_min >= 0 else "-"
    value = abs(bytes_per_min)
    if value >= MIB:
        return f"{sign}{value / MIB:.1f} MiB/min"
    return f"{sign}{value / KIB:.0f} KiB/min"


@dataclass(frozen=True)
class Suspect:
    """A row that keeps growing: a likely leak."""

    rate: float  # bytes per minute
    confidence: float  # 0..1: how steady the growth is, and how much history backs it
    points: int


SUSPECT_MIN_POINTS = 5
SUSPECT_MIN_GROWTH = 1024


def judge_growth(points: list[tuple[float, int]]) -> Suspect | None:
    """A Suspect when (time, size) points rise steadily, not in one jump.

    Steady: most steps go up, few go down, and a straight line explains the sizes well
    (r²). A single spike has one rising step out of many and is not a suspect."""
    n = len(points)
    if n < SUSPECT_MIN_POINTS:
        return None
    sizes = [size for _, size in points]
    steps = [b - a for a, b in pairwise(sizes)]
    rises = sum(1 for d in steps if d > 0)
    falls = sum(1 for d in steps if d < 0)
    if (
        sizes[-1] - sizes[0] < SUSPECT_MIN_GROWTH
        or rises < 0.6 * len(steps)
        or falls > 0.2 * len(steps)
    ):
        return None
    per_second = slope([(t, float(s)) for t, s in points])
    if per_second <= 0:
        return None
    fit = r_squared([(t, float(s)) for t, s in points], per_second)
    if fit < 0.5:
        return None
    confidence = (rises / len(steps)) * fit * min(1.0, len(steps) / 10)
    return Suspect(per_second * 60.0, round(confidence, 3), n)


def r_squared(points: list[tuple[float, float]], per_second: float) -> float:
    """How much of the variance a line of that slope (through the means) explains."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    total = sum((v - mean_v) ** 2 for _, v in points)
    if total == 0:
        return 0.0
    residual = sum((v - (mean_v + per_second * (t - mean_t))) ** 2 for t, v in points)
    return max(0.0, 1.0 - residual / total)


@dataclass
class History:
    """Accumulates refreshes: memory series for the chart and verdict, per-row trends."""

    max_points: int = 3600
    row_points: int = 30
    points: deque[MemoryPoint] = field(default_factory=deque)
    # per row: (table time, size) of the recent tables that showed it
    _trends: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    _trend_query: Query | None = None
    _last_table: int | None = None

    def add(self, sample: Sample) -> None:
        """Record one refresh."""
        self.points.append(MemoryPoint(sample.time, sample.rss, sample.traced_current))
        while len(self.points) > self.max_points:
            self.points.popleft()
        grouping = (
            sample.query.group_by,
            sample.query.cumulative,
            sample.query.include,
            sample.query.exclude,
        )
        if self._trend_query is None or grouping != (
            self._trend_query.group_by,
            self._trend_query.cumulative,
            self._trend_query.include,
            self._trend_query.exclude,
        ):
            self._trends = {}
            self._last_table = None
        self._trend_query = sample.query
        if sample.table.sample_id == self._last_table:
            return  # same table as last refresh: no new trend point
        self._last_table = sample.table.sample_id
        for row in sample.rows:
            series = self._trends.setdefault(row.key, deque(maxlen=self.row_points))
            series.append((sample.table.time, row.size))
        if len(self._trends) > 4 * max(len(sample.rows), 50):
            keep = {row.key for row in sample.rows}
            self._trends = {k: v for k, v in self._trends.items() if k in keep}

    def trend(self, key: str) -> tuple[int, ...]:
        """Recent sizes of one row, oldest first."""
        return tuple(size for _, size in self._trends.get(key, ()))

    def suspects(self) -> dict[str, Suspect]:
        """Rows growing steadily over their recent tables, by key."""
        found = {}
        for key, series in self._trends.items():
            suspect = judge_growth(list(series))
            if suspect is not None:
                found[key] = suspect
        return found

    def growth_rate(self, key: str) -> float | None:
        """Bytes per minute over the row's recent tables (None with fewer than 3)."""
        series = self._trends.get(key)
        if series is None or len(series) < 3:
            return None
        return slope([(t, float(size)) for t, size in series]) * 60.0

    def verdict(self) -> Verdict:
        """The verdict over the recorded history."""
        return judge(list(self.points))


# --- leak hunting: objects by type, where they came from, what holds them ---------------


@dataclass(frozen=True)
class TypeRow:
    """Live objects of one type (as the gc sees them) and their growth."""

    name: str
    count: int
    size: int  # shallow bytes (sys.getsizeof)
    count_diff: int
    size_diff: int


@dataclass(frozen=True)
class TypesTable:
    """The gc's view of the heap, by type, with growth since the baseline (or the last look)."""

    rows: tuple[TypeRow, ...]
    objects: int
    total_types: int
    since: float | None
    baseline: float | None
    cost_ms: float


@dataclass(frozen=True)
class OriginSite:
    """Where a share of a type's sampled instances were allocated."""

    count: int
    frames: tuple[Frame, ...]  # oldest first


@dataclass(frozen=True)
class Origins:
    """Allocation sites of a sample of one type's instances."""

    type_name: str
    sampled: int
    untraced: int
    note: str
    sites: tuple[OriginSite, ...]


@dataclass(frozen=True)
class ChainStep:
    """One step of a referrer chain, from the root down to the object."""

    type_name: str
    edge: str  # how this object refers to the next one ("global CACHE", "['k1']", ".items")
    root: str  # set on the first step: "module app.cache", "class app.Registry", "thread ..."


@dataclass(frozen=True)
class ReferrerChain:
    """What keeps a sample object alive."""

    found: bool
    what: str
    steps: tuple[ChainStep, ...]
    cut: bool
    allocated_at: tuple[Frame, ...]
    note: str
    reason: str


def types_from_reply(reply: dict[str, Any]) -> TypesTable:
    return TypesTable(
        rows=tuple(
            TypeRow(
                str(r["type"]),
                int(r["count"]),
                int(r["size"]),
                int(r["count_diff"]),
                int(r["size_diff"]),
            )
            for r in reply["rows"]
        ),
        objects=int(reply["objects"]),
        total_types=int(reply["total_types"]),
        since=reply.get("since"),
        baseline=reply.get("baseline"),
        cost_ms=float(reply["cost_ms"]),
    )


def _frames_from(raw: list[dict[str, Any]]) -> tuple[Frame, ...]:
    return tuple(Frame(str(f["filename"]), int(f["lineno"]), str(f.get("source", ""))) for f in raw)


def origins_from_reply(reply: dict[str, Any]) -> Origins:
    return Origins(
        type_name=str(reply["type"]),
        sampled=int(reply["sampled"]),
        untraced=int(reply["untraced"]),
        note=str(reply.get("note", "")),
        sites=tuple(OriginSite(int(s["count"]), _frames_from(s["frames"])) for s in reply["sites"]),
    )


def chain_from_reply(reply: dict[str, Any]) -> ReferrerChain:
    return ReferrerChain(
        found=bool(reply["found"]),
        what=str(reply["what"]),
        steps=tuple(
            ChainStep(str(s["type"]), str(s["edge"]), str(s["root"])) for s in reply["steps"]
        ),
        cut=bool(reply["cut"]),
        allocated_at=tuple(Frame(str(f), int(n)) for f, n in reply.get("allocated_at", ())),
        note=str(reply.get("note", "")),
        reason=str(reply.get("reason", "")),
    )
