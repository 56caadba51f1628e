"""The history of refreshes, read: memory series for charts, the verdict on the memory
account (memtop.verdict), and leak suspects (rows that keep growing). Pure: no IO, no UI."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from memtop.model import Frame, Query, Refresh, row_key
from memtop.verdict import KIB, MIB, MemoryPoint, Verdict, format_rate, judge, slope

# The verdict's names, for the views that read them with the history.
__all__ = [
    "KIB",
    "MIB",
    "History",
    "HistorySeed",
    "MemoryPoint",
    "Suspect",
    "Verdict",
    "format_rate",
    "judge",
    "seed_from_reply",
]


@dataclass(frozen=True)
class HistorySeed:
    """The history an agent kept for its tracing session, for a new viewer to go on from."""

    session: str
    points: tuple[MemoryPoint, ...]
    # (table id, table time, ((row key, size), ...)) oldest first, for `query`'s grouping
    tables: tuple[tuple[int, float, tuple[tuple[str, int], ...]], ...]
    query: Query


def seed_from_reply(query: Query, reply: dict[str, Any]) -> HistorySeed | None:
    """A HistorySeed from the agent's `history` reply (None when it has no session)."""
    session = reply.get("session")
    if session is None:
        return None
    fields = list(reply["point_fields"])
    points = []
    for raw in reply["points"]:
        named = dict(zip(fields, raw, strict=True))
        points.append(
            MemoryPoint(
                float(named["time"]),
                None if named.get("rss") is None else int(named["rss"]),
                int(named["traced_current"]),
                int(named.get("tracemalloc_memory", 0)),
                int(named.get("memtop_traced", 0)),
                int(named.get("memtop_residue", 0)),
            )
        )
    keys = []
    for raw in reply["keys"]:
        frames = tuple(
            Frame(str(f["filename"]), int(f["lineno"])) for f in raw.get("traceback", ())
        )
        lineno = raw.get("lineno")
        keys.append(row_key(query.group_by, str(raw["filename"]), lineno, frames))
    tables = tuple(
        (
            int(table["id"]),
            float(table["time"]),
            tuple((keys[int(at)], int(size)) for at, size in table["rows"]),
        )
        for table in reply["tables"]
    )
    return HistorySeed(str(session), tuple(points), tables, query)


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
    # per row, in step with _trends: the 95 % half-width of each size (sampled mode; 0 in
    # exact mode, None where a resumed history did not say)
    _errors: dict[str, deque[int | None]] = field(default_factory=dict)
    _trend_query: Query | None = None
    _last_table: int | None = None
    # The tracing session the history belongs to, and how many restarts it has seen.
    session: str | None = None
    restarts: int = 0

    def seed(self, seed: HistorySeed | None) -> None:
        """Go on from the history an agent kept: before the first refresh, or when the
        grouping changes (then only its points newer than ours are added)."""
        if seed is None:
            return
        if self.session is not None and seed.session != self.session:
            return  # tracing restarted since: the next refresh starts over anyway
        self.session = seed.session
        last = self.points[-1].time if self.points else float("-inf")
        self.points.extend(p for p in seed.points if p.time > last)
        while len(self.points) > self.max_points:
            self.points.popleft()
        self._trend_query = seed.query
        self._trends = {}
        self._errors = {}
        self._last_table = None
        for table_id, when, rows in seed.tables:
            for key, size in rows:
                series = self._trends.setdefault(key, deque(maxlen=self.row_points))
                series.append((when, size))
                self._errors.setdefault(key, deque(maxlen=self.row_points)).append(None)
            self._last_table = table_id

    def _follow_session(self, sample: Refresh) -> None:
        """Start over when tracing restarted: the old numbers measure something else."""
        session = sample.tracing.session if sample.tracing is not None else None
        if session is None:
            return
        if self.session is not None and session != self.session:
            self.points.clear()
            self._trends = {}
            self._errors = {}
            self._last_table = None
            self.restarts += 1
        self.session = session

    def add(self, sample: Refresh) -> None:
        """Record one refresh."""
        self._follow_session(sample)
        self.points.append(
            MemoryPoint(
                sample.time,
                sample.rss,
                sample.traced_current,
                sample.tracemalloc_memory,
                sample.memtop_traced,
                sample.memtop_residue,
            )
        )
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
            self._errors = {}
            self._last_table = None
        self._trend_query = sample.query
        if sample.table.sample_id == self._last_table:
            return  # same table as last refresh: no new trend point
        self._last_table = sample.table.sample_id
        for row in sample.rows:
            series = self._trends.setdefault(row.key, deque(maxlen=self.row_points))
            series.append((sample.table.time, row.size))
            errors = self._errors.setdefault(row.key, deque(maxlen=self.row_points))
            errors.append(row.size_error)
        if len(self._trends) > 4 * max(len(sample.rows), 50):
            keep = {row.key for row in sample.rows}
            self._trends = {k: v for k, v in self._trends.items() if k in keep}
            self._errors = {k: v for k, v in self._errors.items() if k in keep}

    def trend(self, key: str) -> tuple[int, ...]:
        """Recent sizes of one row, oldest first."""
        return tuple(size for _, size in self._trends.get(key, ()))

    def suspects(self) -> dict[str, Suspect]:
        """Rows growing steadily over their recent tables, by key."""
        found = {}
        for key, series in self._trends.items():
            suspect = judge_growth(list(series))
            if suspect is not None and self._beyond_noise(key, series):
                found[key] = suspect
        return found

    def _beyond_noise(self, key: str, series: deque[tuple[float, int]]) -> bool:
        """Sampled mode: the growth exceeds the error bars of its first and last sizes
        (a site that flickers between 0 and one sample's weight is noise, not a leak)."""
        errors = self._errors.get(key)
        if not errors or len(errors) != len(series):
            return True
        last = errors[-1] or 0
        first = errors[0] if errors[0] is not None else last
        return series[-1][1] - series[0][1] > first + last

    def growth_rate(self, key: str) -> float | None:
        """Bytes per minute over the row's recent tables (None with fewer than 3)."""
        series = self._trends.get(key)
        if series is None or len(series) < 3:
            return None
        return slope([(t, float(size)) for t, size in series]) * 60.0

    def verdict(self) -> Verdict:
        """The verdict over the recorded history."""
        return judge(list(self.points))
