"""The one-line verdict on a process's memory, read from an explicit account of its RSS.

RSS = traced (the program's Python allocations, and memtop's own) + the tracer's own
memory (tracemalloc's tables) + what memtop's table reads left behind + untraced.
Untraced holds the interpreter and everything allocated before tracing started (the
baseline, constant), native allocations (C extensions, direct malloc) and memory freed but
not returned to the OS (fragmentation).

Each part gets its own rate with its own noise (a least-squares slope and its standard
error), and a finding is worded only from the rate of the part it names, with that rate
next to it: the line never says a part is flat while showing it grow. Pure: no IO, no UI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * 1024

# Bytes per minute below which a part is not said to grow, whatever its fit: less than
# this is not worth a line on the screen of a monitoring tool.
TRACED_FLOOR = 256 * KIB
UNTRACED_FLOOR = 2 * MIB
# A finding needs its rate to stand this many standard errors above zero.
SIGNIFICANCE = 3.0
# Python objects cost more RSS than tracemalloc counts, per block rather than per byte:
# the C allocator's headers around tracemalloc's two allocations per trace, pymalloc's
# rounding. Measured on 3.12 with tracemalloc alone, untraced memory grew by 0.9-1.1x the
# tracer's growth for leaks of floats, objects, tuples, strings and dicts (0 for big
# blocks). Untraced growth up to this much is that overhead, not a second cause.
TRACER_OVERHEAD = 1.5
TRACED_OVERHEAD = 0.25
# The history a verdict reads, and the least of it worth reading.
WINDOW = 120.0
MIN_POINTS = 5
MIN_SPAN = 15.0


@dataclass(frozen=True)
class MemoryPoint:
    """The memory account of one refresh (bytes)."""

    time: float
    rss: int | None
    traced: int  # all traced memory, memtop's own included
    tracer: int = 0  # the tracer's own memory (tracemalloc's tables)
    memtop: int = 0  # memtop's own traced memory in the target (part of `traced`)
    residue: int = 0  # untraced memory memtop's table reads left behind

    @property
    def program(self) -> int:
        """Traced memory the program itself holds."""
        return self.traced - self.memtop

    @property
    def untraced(self) -> int | None:
        """RSS not held by traced memory, the tracer or memtop (None without RSS; may be
        < 0 when traced memory was never touched, so it is kept raw for rates)."""
        if self.rss is None:
            return None
        return self.rss - self.traced - self.tracer - self.residue


@dataclass(frozen=True)
class Rate:
    """A part's growth: bytes per minute over the window and the standard error of that
    slope; the same over the window's last third (is it growing now?)."""

    per_minute: float = 0.0
    error: float = 0.0
    now: float = 0.0
    now_error: float = math.inf

    def growing(self, floor: float) -> bool:
        """Significant growth above `floor`: over the window, and still going on in its last
        third (at a third of the pace at least, and not only by that third's noise); or
        steadily over the last third alone (growth that goes on after a fall)."""
        over_window = self.per_minute > floor and self.per_minute > SIGNIFICANCE * self.error
        still = self.now > max(floor / 2, self.per_minute / 3) and self.now > 2.0 * self.now_error
        return (over_window and still) or self._growing_now(floor)

    def shown(self, floor: float) -> float:
        """The rate that makes it growing (the window's, else the last third's)."""
        if self.per_minute > floor and self.per_minute > SIGNIFICANCE * self.error:
            return self.per_minute
        return self.now if self._growing_now(floor) else self.per_minute

    def _growing_now(self, floor: float) -> bool:
        return self.now > floor and self.now > SIGNIFICANCE * self.now_error


@dataclass(frozen=True)
class Verdict:
    """A one-line reading of the memory history, and the rates it was read from."""

    kind: str  # collecting | steady | growing | untraced-growing | fragmentation | untraced
    text: str
    rss: Rate = Rate()
    traced: Rate = Rate()  # the program's traced memory
    tracer: Rate = Rate()
    untraced: Rate = Rate()

    growth: tuple[str, ...] = ()  # the kinds of growth found ("growing", "untraced-growing")

    def grows(self, kind: str) -> bool:
        """True when this kind of growth is one of the findings."""
        return kind in self.growth

    @property
    def traced_rate(self) -> float:
        return self.traced.per_minute

    @property
    def rss_rate(self) -> float:
        return self.rss.per_minute


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope (units per second) of (time, value) points, and its standard
    error (0 with fewer than three points)."""
    n = len(points)
    if n < 2:
        return 0.0, 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0, 0.0
    per_second = sum((t - mean_t) * (v - mean_v) for t, v in points) / var
    if n < 3:
        return per_second, 0.0
    residual = sum((v - (mean_v + per_second * (t - mean_t))) ** 2 for t, v in points)
    return per_second, math.sqrt(residual / (n - 2) / var)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per second) of (time, value) points."""
    return fit(points)[0]


def rate(series: list[tuple[float, float]], tail_from: float) -> Rate:
    """The Rate of a (time, bytes) series; its last third starts at `tail_from`."""
    per_second, error = fit(series)
    tail = [p for p in series if p[0] >= tail_from] or series[-2:]
    now, now_error = fit(tail)
    # Fewer than four points in the last third cannot say alone that it grows.
    return Rate(
        per_second * 60.0,
        error * 60.0,
        now * 60.0,
        now_error * 60.0 if len(tail) >= 4 else math.inf,
    )


def judge(points: list[MemoryPoint], window: float = WINDOW) -> Verdict:
    """Read the account over the last `window` seconds.

    Findings, most striking first: memory freed but kept (fragmentation); then growth,
    the faster first: untraced memory growing beyond the allocator overhead of Python
    objects (native memory or fragmentation), traced memory growing (Python objects);
    then most of RSS untraced. The first leads; other growth follows it, each with its
    own rate."""
    if not points:
        return Verdict("collecting", "collecting: no data yet")
    recent = [p for p in points if p.time >= points[-1].time - window]
    span = recent[-1].time - recent[0].time
    if len(recent) < MIN_POINTS or span < MIN_SPAN:
        return Verdict("collecting", f"collecting: {span:.0f} s of history")
    last = recent[-1]
    tail_from = last.time - span / 3
    with_rss = [p for p in recent if p.rss is not None]
    rates = {
        "rss": rate([(p.time, float(p.rss or 0)) for p in with_rss], tail_from),
        "traced": rate([(p.time, float(p.program)) for p in recent], tail_from),
        "tracer": rate([(p.time, float(p.tracer)) for p in recent], tail_from),
        "untraced": rate([(p.time, float(p.untraced or 0)) for p in with_rss], tail_from),
    }
    traced, untraced = rates["traced"], rates["untraced"]

    growth: list[tuple[float, str, str]] = []
    floor = max(TRACED_FLOOR, 0.01 * last.program)
    if traced.growing(floor):
        shown = traced.shown(floor)
        growth.append((shown, "growing", f"traced {format_rate(shown)}"))
    if last.rss is not None:
        # Python objects cost RSS beyond what tracemalloc counts: that share is no finding.
        overhead = TRACER_OVERHEAD * max(rates["tracer"].per_minute, 0.0)
        overhead += TRACED_OVERHEAD * max(traced.per_minute, 0.0)
        floor = max(UNTRACED_FLOOR, 0.01 * last.rss) + overhead
        if untraced.growing(floor):
            shown = untraced.shown(floor)
            growth.append((shown, "untraced-growing", f"untraced {format_rate(shown)}"))
    growth.sort(reverse=True)

    findings = [(kind, f"{what}: {WHY[kind]}") for _, kind, what in growth]
    fragmentation = _fragmentation(recent, with_rss)
    if fragmentation:
        findings.insert(0, ("fragmentation", fragmentation))
    untraced_now = last.untraced
    if untraced_now is not None and last.rss and untraced_now > max(100 * MIB, 3 * last.traced):
        findings.append(
            (
                "untraced",
                f"{untraced_now / last.rss:.0%} of RSS is untraced: native allocations, "
                "or memory allocated before tracing started",
            )
        )
    kinds = tuple(kind for _, kind, _ in growth)
    if not findings:
        return Verdict("steady", "steady", growth=kinds, **rates)
    kind, text = findings[0]
    followers = [what for _, k, what in growth if k != kind]
    return Verdict(kind, " · ".join([text, *followers]), growth=kinds, **rates)


# What each kind of growth means, said after its rate.
WHY = {
    "growing": "Python objects accumulating",
    "untraced-growing": "native memory or fragmentation (outside tracemalloc)",
}


def _fragmentation(recent: list[MemoryPoint], with_rss: list[MemoryPoint]) -> str:
    """Words for memory freed but kept: traced fell well below its recent peak while RSS
    stayed near its own (empty when that is not the case)."""
    last = recent[-1]
    top_traced = max(p.traced for p in recent)
    top_rss = max((p.rss or 0) for p in with_rss)
    if (
        last.rss is not None
        and top_traced - last.traced > 8 * MIB
        and last.traced < 0.5 * top_traced
        and last.rss > 0.8 * top_rss
    ):
        return (
            f"RSS high but traced fell to {last.traced / top_traced:.0%} of its recent peak: "
            "freed memory not returned to the OS (fragmentation)"
        )
    return ""


def format_rate(bytes_per_min: float) -> str:
    """'+3.1 MiB/min' style rate."""
    sign = "+" if bytes_per_min >= 0 else "-"
    value = abs(bytes_per_min)
    if value >= MIB:
        return f"{sign}{value / MIB:.1f} MiB/min"
    return f"{sign}{value / KIB:.0f} KiB/min"
