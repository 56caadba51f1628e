"""The history of refreshes, read: memory series for charts, a one-line verdict on
RSS vs traced memory, and leak suspects (rows that keep growing). Pure: no IO, no UI."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise

from memtop.model import Query, Sample

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

    Steady: most steps go up, few go down, a straight line explains the sizes well (r²),
    and the last third still rises. A single spike has one rising step out of many; a
    bounded cache that filled up has a flat end: neither is a suspect."""
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
    recent = sizes[-max(3, n // 3) :]
    if recent[-1] <= recent[0]:
        return None  # it grew, then stopped (a cache that filled up): not growing now
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
