"""Which rows a group refresh must ask its processes for again. Each process ranks its own
rows and sends the top ones; a row of the merged top can rank lower in some process, or in
every one. What a process did not send is bounded by the last row it sent, in the sort's
order (the threshold rule of merging ranked lists), which says what to ask again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from memtop.model import Query, Refresh, Row, wire_key

DEEPEST = 500  # the most rows an agent ranks in one reply (its `top` limit)
KEYS_BYTES = 40 * 1024  # row keys asked in one request (a request is at most 64 KiB)

ORDER: dict[str, Callable[[Row], int]] = {
    "size": lambda r: r.size,
    "count": lambda r: r.count,
    "size_diff": lambda r: abs(r.size_diff),
    "count_diff": lambda r: abs(r.count_diff),
    "growth": lambda r: r.size_diff,
}


# A row's signed value under each order (the order ranks it, or its magnitude).
_VALUE: dict[str, Callable[[Row], int]] = {
    "size": lambda r: r.size,
    "count": lambda r: r.count,
    "size_diff": lambda r: r.size_diff,
    "count_diff": lambda r: r.count_diff,
    "growth": lambda r: r.size_diff,
}


@dataclass(frozen=True)
class Ask:
    """A process asked again: its top `depth` rows, and those of `rows` whatever their rank."""

    depth: int
    rows: tuple[Row, ...]


def completions(samples: dict[int, Refresh], query: Query) -> dict[int, Ask]:
    """What to ask each process again so that every row the merged top `query.limit` could
    hold has every process's share, and no row ranked by no process could beat them.

    A process that sent its top k rows of more holds, of any row it did not send, at most
    what its k-th row holds (in the sort's order). That bounds each row's sum over the
    processes that did not send it, and the sum of a row no process sent."""
    sort = query.sort if query.sort in _VALUE else "size"
    value, order = _VALUE[sort], ORDER[sort]
    held = {pid: {row.key: row for row in s.rows} for pid, s in samples.items()}
    cuts: dict[int, int] = {}  # processes that ranked part of their rows: the last one's order
    for pid, sample in samples.items():
        ranked = sample.rows[: min(sample.query.limit, sample.total_rows)]
        if sample.total_rows > sample.query.limit and ranked:
            cuts[pid] = order(ranked[-1])
    if not cuts:
        return {}
    rows: dict[str, Row] = {}
    ranges: dict[str, tuple[float, float]] = {}
    unsent: dict[str, list[int]] = {}
    for pid in sorted(samples):
        for key, row in held[pid].items():
            rows.setdefault(key, row)
    for key in rows:
        known = sum(value(held[pid][key]) for pid in samples if key in held[pid])
        missing = [pid for pid in cuts if key not in held[pid]]
        low = known + sum(_unsent(sort, cuts[pid])[0] for pid in missing)
        high = known + sum(_unsent(sort, cuts[pid])[1] for pid in missing)
        ranges[key] = _ranked_range(sort, low, high)
        if missing:
            unsent[key] = missing
    lows = sorted((low for low, _ in ranges.values()), reverse=True)
    edge = lows[query.limit - 1] if len(lows) >= query.limit else -math.inf
    asks: dict[int, list[Row]] = {}
    for key in sorted(unsent, key=lambda k: -ranges[k][1]):
        if ranges[key][1] > edge:
            for pid in unsent[key]:
                asks.setdefault(pid, []).append(rows[key])
    deeper: set[int] = set()
    never_sent = _ranked_range(
        sort,
        sum(_unsent(sort, cut)[0] for cut in cuts.values()),
        sum(_unsent(sort, cut)[1] for cut in cuts.values()),
    )
    if never_sent[1] > edge:
        deeper = {pid for pid in cuts if samples[pid].query.limit < DEEPEST}
    return {
        pid: Ask(
            depth=min(DEEPEST, 4 * samples[pid].query.limit)
            if pid in deeper
            else samples[pid].query.limit,
            rows=tuple(asks.get(pid, ())),
        )
        for pid in sorted(deeper | set(asks))
    }


def _unsent(sort: str, cut: int) -> tuple[float, float]:
    """The signed values a process can hold of a row it did not send, when the last row
    it sent ranks `cut` (in the sort's order): none, or at most as much."""
    if sort in ("size", "count"):
        return 0, cut
    if sort == "growth":
        return -math.inf, max(cut, 0)
    return -cut, cut  # the magnitude of a change ranks


def _ranked_range(sort: str, low: float, high: float) -> tuple[float, float]:
    """The range of a row's rank in the sort's order, from the range of its value."""
    if sort not in ("size_diff", "count_diff"):
        return low, high
    if low <= 0 <= high:
        return 0, max(-low, high)
    return min(abs(low), abs(high)), max(abs(low), abs(high))


def keys_that_fit(rows: Iterable[Row], group_by: str) -> tuple[Row, ...]:
    """The first rows whose keys fit in one request (an agent takes at most DEEPEST)."""
    fitting: list[Row] = []
    spent = 0
    for row in rows:
        spent += len(json.dumps(wire_key(group_by, row)))
        if spent > KEYS_BYTES or len(fitting) == DEEPEST:
            break
        fitting.append(row)
    return tuple(fitting)
