"""Reads tracemalloc's trace table and groups it in the target, the way `Snapshot.statistics()`
and `Snapshot.compare_to()` do, without the per-trace allocations that make the stdlib slow.

Every temporary object created while tracing is on is itself traced (about 1 µs each), so the
per-trace loop must allocate nothing: it appends the existing size objects to one list per
traceback and sums each list once at the end. Tracebacks with identical frames are one shared
tuple in `_get_traces()`'s result, so dict lookups hit by identity.

Raw tracebacks are tuples of (filename, lineno), most recent frame first, as `_get_traces()`
returns them; rows sent to the viewer list frames oldest first, like `tracemalloc.Traceback`.
"""

import heapq
import os
import time
import tracemalloc
from operator import itemgetter

from . import footprint, rowkeys
from .globmatch import compile_glob

GROUP_KEYS = rowkeys.GROUP_KEYS
SORT_KEYS = rowkeys.SORT_KEYS

_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
# The agent's modules, as their code objects name them. The launcher hands control to
# the user's program: its frames belong to the program.
_AGENT_FILES = frozenset(
    os.path.join(_AGENT_DIR, name)
    for name in os.listdir(_AGENT_DIR)
    if name.endswith(".py") and name != "launch.py"
)


def _raw_traces_fast():
    """`_get_traces()` when it exists and has the known shape, else None."""
    try:
        import _tracemalloc

        traces = _tracemalloc._get_traces()
    except (ImportError, AttributeError):
        return None
    if traces:
        first = traces[0]
        # Shape (domain, size, traceback, total_nframe) on CPython 3.9 through 3.15.
        if not (
            isinstance(first, tuple)
            and len(first) == 4
            and isinstance(first[1], int)
            and isinstance(first[2], tuple)
        ):
            return None
    return traces


def _raw_traces_public():
    # Public API only: Trace.traceback is oldest first, so reverse it to the raw order.
    snapshot = tracemalloc.take_snapshot()
    return [
        (
            trace.domain,
            trace.size,
            tuple((f.filename, f.lineno) for f in reversed(trace.traceback)),
            0,
        )
        for trace in snapshot.traces
    ]


def read_raw_traces():
    """The live traces in `_get_traces()` form; public Snapshot API when that is missing."""
    traces = _raw_traces_fast()
    return traces if traces is not None else _raw_traces_public()


def is_agent_file(filename):
    """True for the agent's own source files (their allocations are never shown)."""
    return filename in _AGENT_FILES


class Sample:
    """One read of the trace table, reduced to totals per distinct traceback."""

    __slots__ = (
        "by_traceback",
        "cost",
        "count",
        "derived",
        "id",
        "own_count",
        "own_size",
        "read_cost",
        "read_peak",
        "sampled",
        "size",
        "time",
        "variances",
    )

    def __init__(self, sample_id, when):
        self.id = sample_id
        self.time = when
        self.cost = 0.0
        self.read_cost = 0.0
        self.derived = 0
        self.by_traceback = {}
        self.size = self.count = 0
        self.own_size = self.own_count = 0
        self.read_peak = 0
        # Sampled mode: {traceback: (size variance, count variance)}, and the sampler's
        # table the estimates come from (its rate, gaps, memory).
        self.variances = None
        self.sampled = None


def take_sample(sample_id, read=read_raw_traces):
    """Read all traces and total them per traceback; `cost` is the CPU time the agent's
    thread spent (it holds the GIL while it runs)."""
    started = time.thread_time()
    sample = Sample(sample_id, time.time())
    before = footprint.resident_bytes()
    traces = read()
    # What the read itself needs while it lasts (the table's copy is freed by now, its
    # list of tuples is not): shown to the user as memtop's cost.
    sample.read_peak = max(0, footprint.resident_bytes() - before)
    sizes_by_tb = _sizes_by_traceback(traces)
    by_traceback = sample.by_traceback
    size_total = count_total = own_size = own_count = 0
    for tb, sizes in sizes_by_tb.items():
        size = sum(sizes)
        count = len(sizes)
        # A plain loop with a set lookup: this runs once per distinct traceback.
        for frame in tb:
            if frame[0] in _AGENT_FILES:
                own_size += size
                own_count += count
                break
        else:
            by_traceback[_own_copy(tb)] = (size, count)
            size_total += size
            count_total += count
    # Freed together: the read's objects fill whole arenas that the allocator returns.
    del traces, sizes_by_tb
    sample.size, sample.count = size_total, count_total
    sample.own_size, sample.own_count = own_size, own_count
    sample.cost = time.thread_time() - started
    return sample


def _own_copy(tb):
    """`tb` built anew. The read's traceback tuples (and their line numbers) were made in
    the middle of its million temporary tuples: kept past the read, each one would pin a
    whole arena of them in the program's memory."""
    return tuple([(filename, lineno + 0) for filename, lineno in tb])


def _sizes_by_traceback(traces):
    # The hot loop: no object is created per trace, only list growth per distinct traceback.
    groups = {}
    get = groups.get
    for _, size, tb, _ in traces:
        sizes = get(tb)
        if sizes is None:
            groups[tb] = [size]
        else:
            sizes.append(size)
    return groups


def filename_filter(include, exclude):
    """Predicate on the allocating frame's filename, as `tracemalloc.Filter(all_frames=False)`."""
    if not include and not exclude:
        return None
    # Compiled by the agent (globmatch), never through fnmatch: no regex is built or cached
    # in the program, and matching cannot backtrack.
    wanted = [compile_glob(p) for p in include]
    unwanted = [compile_glob(p) for p in exclude]
    memo = {}

    def keep(filename):
        verdict = memo.get(filename)
        if verdict is None:
            verdict = (not wanted or any(g.match(filename) for g in wanted)) and not any(
                g.match(filename) for g in unwanted
            )
            memo[filename] = verdict
        return verdict

    return keep


def group(by_traceback, group_by, cumulative, keep=None):
    """Totals per key (rowkeys): {key: [size, count, heaviest_traceback, its_size]}.

    Cumulative counts a trace once for every frame of its traceback, as the stdlib does
    (a recursive frame counts each time it appears).
    """
    out = {}
    if cumulative:
        keys_of = rowkeys.KEYS_OF[group_by]
        for tb, (size, count) in by_traceback.items():
            if keep is None or keep(tb[0][0]):
                for key in keys_of(tb):
                    _add(out, key, size, count, tb)
        return out
    key_of = rowkeys.KEY_OF[group_by]
    for tb, (size, count) in by_traceback.items():
        if keep is None or keep(tb[0][0]):
            _add(out, key_of(tb), size, count, tb)
    return out


def _add(out, key, size, count, tb):
    entry = out.get(key)
    if entry is None:
        out[key] = [size, count, tb, size]
    else:
        entry[0] += size
        entry[1] += count
        if size > entry[3]:
            entry[2] = tb
            entry[3] = size


_SORT_FIELDS = {
    # Snapshot.statistics() order (then the traceback).
    "size": lambda size, size_diff, count, count_diff: (size, count),
    # Snapshot.compare_to() order (then the traceback).
    "size_diff": lambda size, size_diff, count, count_diff: (
        abs(size_diff),
        size,
        abs(count_diff),
        count,
    ),
    "count": lambda size, size_diff, count, count_diff: (count, size),
    "count_diff": lambda size, size_diff, count, count_diff: (
        abs(count_diff),
        count,
        abs(size_diff),
        size,
    ),
    # Leak hunting: the largest growth first, however small the row (shrinking rows last).
    "growth": lambda size, size_diff, count, count_diff: (size_diff, count_diff, size, count),
}


def rank(current, previous, group_by, sort="size", limit=50):
    """Top `limit` keys with diffs against `previous` (compare_to semantics: keys that
    vanished appear with size 0). Returns (rows, total_keys); a row is
    (key, size, size_diff, count, count_diff, heaviest_traceback)."""
    fields = _SORT_FIELDS[sort]
    entries = []
    for key, entry in current.items():
        size, count = entry[0], entry[1]
        old = previous.get(key) if previous is not None else None
        size_diff, count_diff = _diffs(size, count, old, previous)
        numbers = (size, size_diff, count, count_diff)
        entries.append((fields(*numbers), key, numbers, entry[2]))
    if previous is not None:
        for key, old in previous.items():
            if key not in current:
                numbers = (0, -old[0], 0, -old[1])
                entries.append((fields(*numbers), key, numbers, old[2]))
    # Select on the numbers alone (C comparisons), then settle ties at the cut and the
    # final order with the frames, as tracemalloc does.
    best = heapq.nlargest(limit, entries, key=itemgetter(0))
    if len(best) == limit < len(entries):
        edge = best[-1][0]
        chosen = {e[1] for e in best}
        best.extend(e for e in entries if e[0] == edge and e[1] not in chosen)
    best.sort(key=lambda e: (e[0], rowkeys.order_frames(e[1], group_by)), reverse=True)
    rows = [(e[1],) + e[2] + (e[3],) for e in best[:limit]]
    return rows, len(entries)


def _diffs(size, count, old, previous):
    """(size, count) changes of a row since `previous` (its entry there `old`); none
    without a previous table, the whole row when it is new."""
    if old is not None:
        return size - old[0], count - old[1]
    if previous is not None:
        return size, count
    return 0, 0


def rows_of(current, previous, keys):
    """The rows of `keys` as `rank` makes them, whatever their rank; a key in neither
    table is left out (it holds nothing)."""
    rows = []
    for key in keys:
        entry = current.get(key)
        old = previous.get(key) if previous is not None else None
        if entry is None and old is None:
            continue
        size, count, tb = (entry[0], entry[1], entry[2]) if entry is not None else (0, 0, old[2])
        size_diff, count_diff = _diffs(size, count, old, previous)
        rows.append((key, size, size_diff, count, count_diff, tb))
    return rows


def tracebacks_of(by_traceback, group_by, cumulative, key, keep=None, limit=10):
    """The heaviest distinct tracebacks counted in one row, as (traceback, size, count)."""
    found = []
    for tb, (size, count) in by_traceback.items():
        if keep is not None and not keep(tb[0][0]):
            continue
        if rowkeys.matches(tb, group_by, cumulative, key):
            found.append((size, count, tb))
    found.sort(key=lambda item: (item[0], item[1], tuple(reversed(item[2]))), reverse=True)
    return [(tb, size, count) for size, count, tb in found[:limit]]
