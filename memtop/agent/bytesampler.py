"""The stdlib front end of memtop's native byte sampler: start, stop, liveness, and tables.

Turns the library's aggregated per-stack snapshot into the `{traceback: (size, count)}`
form the collector groups, with variances for 95 % error half-widths. Lines are resolved
here, lazily, once per (code object, instruction offset).

The library is never unloaded and its hook contexts are never freed: another allocator
hook installed above ours (tracemalloc) keeps pointers to them.
"""

import ctypes
import math
import os
import threading

from . import collector, nativelib
from .nativelib import API_VERSION, LIBRARY_NAME, Unavailable, library_path, open_library

__all__ = [
    "API_VERSION",
    "LIBRARY_NAME",
    "ByteSampler",
    "SampledTable",
    "Unavailable",
    "half_width",
    "library_path",
    "load",
    "open_library",
    "rows",
    "tracebacks",
]

Z95 = 1.959963984540054
HEADER_WORDS = 12
# Dead stacks tolerated (beyond twice the live ones) before a table read compacts them.
COMPACT_SLACK = 1024

_lock = threading.Lock()
_loaded = None  # (library, ByteSampler) once loaded: never unloaded


def load(_layout_fault=False):
    """The process's one ByteSampler; raises Unavailable with the reason it cannot run.

    `_layout_fault` makes the library's walk drop a frame, as a wrong layout would (tests).
    """
    global _loaded
    with _lock:
        if _loaded is not None and not _layout_fault:
            return _loaded[1]
        refusal = nativelib.refusal()
        if refusal:
            raise Unavailable(refusal)
        if _loaded is not None:
            lib = _loaded[0]
        else:
            path = library_path()
            try:
                lib = open_library(path)
                nativelib.declare(lib)
            except (OSError, AttributeError) as exc:
                raise Unavailable("cannot load %s: %s" % (path, exc)) from None
            if lib.mts_version() != API_VERSION:
                raise Unavailable("the library at %s is of another memtop version" % path)
            if lib.mts_init(ctypes.byref(nativelib.c_api())) != 0:
                raise Unavailable(nativelib.reason(lib))
        lib.mts_set_layout_fault(1 if _layout_fault else 0)
        try:
            problem = nativelib.self_test(lib)
        finally:
            lib.mts_set_layout_fault(0)
        if problem is not None:
            raise Unavailable("the frame layout self-test failed: %s" % problem)
        if _loaded is None:
            _loaded = (lib, ByteSampler(lib))
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork_in_child)
        return _loaded[1]


def _after_fork_in_child():
    # The child starts without sampling: only the forking thread exists, so the lock may
    # be held by a thread that is gone; the allocators go back to what they were.
    global _lock
    _lock = threading.Lock()
    if _loaded is not None and _loaded[1].running:
        _loaded[1].stop()
        _loaded[1].gaps = 0


class SampledTable:
    """One read of the sampler: estimates per distinct traceback, as the collector groups.

    `by_traceback` maps a traceback (tuple of (filename, lineno), innermost frame first)
    to (size, count) estimates; `variance_by_traceback` to the variances of those.
    """

    __slots__ = (
        "by_traceback",
        "count",
        "dropped",
        "gaps",
        "hooks",
        "live_samples",
        "own_count",
        "own_size",
        "rate",
        "samples_taken",
        "size",
        "table_bytes",
        "variance_by_traceback",
        "walk_errors",
    )

    def __init__(self):
        self.by_traceback = {}
        self.variance_by_traceback = {}
        self.size = self.count = 0
        self.own_size = self.own_count = 0
        self.live_samples = self.samples_taken = self.dropped = self.walk_errors = 0
        self.rate = 0.0
        self.table_bytes = 0
        self.gaps = 0
        self.hooks = 0


def half_width(variance):
    """95 % half-width of a normal estimate with this variance."""
    return Z95 * math.sqrt(variance) if variance > 0 else 0.0


class ByteSampler:
    """Start, stop, probe and read the sampler. Calls are serialised by one lock."""

    def __init__(self, lib):
        self._lib = lib
        self._lines = {}
        self._words = 4096
        self.rate = None
        self.seed = 0
        self.gaps = 0

    @property
    def running(self):
        return self.rate is not None

    def start(self, rate, seed=0):
        """Sample one block per `rate` bytes allocated, on average. Raises Unavailable."""
        with _lock:
            if self.rate is not None:
                raise Unavailable("the sampler is already running")
            if self._lib.mts_start(float(rate), seed & 0xFFFFFFFFFFFFFFFF) != 0:
                raise Unavailable(nativelib.reason(self._lib))
            self.rate = rate
            self.seed = seed

    def stop(self):
        """Stop sampling and release the code objects held; returns how many were held."""
        with _lock:
            return self._stop()

    def _stop(self):
        released = self._lib.mts_stop()
        self.rate = None
        self._lines.clear()
        return released

    def is_live(self):
        """True when both hooks are still reached by allocations (a program's
        tracemalloc.stop() unhooks a sampler started after tracemalloc)."""
        with _lock:
            return self.rate is not None and self._lib.mts_attached() == 3

    def ensure_live(self):
        """Re-hook after the sampler was unhooked; the samples of the gap are dropped (they
        would outlive their frees). Returns True when the sampler was live."""
        with _lock:
            if self.rate is None or self._lib.mts_attached() == 3:
                return True
            rate, seed = self.rate, self.seed
            self._stop()
            self.gaps += 1
            if self._lib.mts_start(float(rate), (seed + self.gaps) & 0xFFFFFFFFFFFFFFFF) != 0:
                raise Unavailable(nativelib.reason(self._lib))
            self.rate = rate
            return False

    def compact(self):
        """Release the stacks (and code objects) that no live sample uses any more."""
        with _lock:
            return self._compact() if self.rate is not None else 0

    def _compact(self):
        dropped = self._lib.mts_compact()
        if dropped:
            # Released code objects may die and their addresses be reused.
            self._lines.clear()
        return dropped

    def _snapshot(self):
        while True:
            buf = (ctypes.c_uint64 * self._words)()
            need = self._lib.mts_snapshot(buf, self._words)
            if need <= self._words:
                return buf, need
            self._words = need + need // 2 + 64

    def table(self):
        """The live sampled blocks, as estimates per traceback (empty when stopped)."""
        with _lock:
            out = SampledTable()
            out.gaps = self.gaps
            if self.rate is None:
                return out
            buf, used = self._snapshot()
            words = buf
            doubles = (ctypes.c_double * used).from_buffer(buf)
            out.live_samples, out.samples_taken = words[2], words[3]
            out.dropped, out.walk_errors = words[4], words[5]
            out.rate, out.hooks, out.table_bytes = doubles[6], words[7], words[8]
            by_tb, var_tb, lines = out.by_traceback, out.variance_by_traceback, self._lines
            w = HEADER_WORDS
            for _ in range(words[1]):
                size, count, var_size, var_count = doubles[w + 1 : w + 5]
                depth = words[w + 5]
                w += 6
                frames = []
                for i in range(depth):
                    key = (words[w + 2 * i], words[w + 2 * i + 1])
                    where = lines.get(key)
                    if where is None:
                        code = nativelib.code_at(key[0])
                        offset = key[1] - (1 << 64) if key[1] >= 1 << 63 else key[1]
                        where = lines[key] = (code.co_filename, nativelib.line_of(code, offset))
                    frames.append(where)
                w += 2 * depth
                tb = tuple(frames)
                # The agent's own work, wherever it allocates (the stdlib's json for a
                # request, say): the agent's thread and its bootstrap run through its files.
                if any(collector.is_agent_file(frame[0]) for frame in frames):
                    out.own_size += size
                    out.own_count += count
                    continue
                old = by_tb.get(tb)
                if old is not None:
                    size += old[0]
                    count += old[1]
                    var_size += var_tb[tb][0]
                    var_count += var_tb[tb][1]
                by_tb[tb] = (size, count)
                var_tb[tb] = (var_size, var_count)
            for tb, (size, count) in by_tb.items():
                by_tb[tb] = (round(size), round(count))
                out.size += by_tb[tb][0]
                out.count += by_tb[tb][1]
            out.own_size = round(out.own_size)
            out.own_count = round(out.own_count)
            if words[10] > 2 * words[1] + COMPACT_SLACK:
                # Stacks no live sample uses hold their code objects: let them go. Only
                # now: the snapshot's code addresses are resolved, and frees in other
                # threads since the snapshot may have left its stacks without samples.
                self._compact()
            return out


def rows(table, group_by="lineno", cumulative=False, limit=50, keep=None):
    """The top rows of a table as dicts: key, size, count, their 95 % half-widths
    (size_error, count_error), samples-free numbers only, and the heaviest traceback
    (oldest frame first)."""
    sizes = collector.group(table.by_traceback, group_by, cumulative, keep)
    variances = collector.group(table.variance_by_traceback, group_by, cumulative, keep)
    ranked, _ = collector.rank(sizes, None, group_by, "size", limit)
    out = []
    for key, size, _, count, _, tb in ranked:
        var = variances[key]
        out.append(
            {
                "key": key,
                "size": size,
                "count": count,
                "size_error": round(half_width(var[0])),
                "count_error": round(half_width(var[1])),
                "traceback": list(reversed(tb)),
            }
        )
    return out


def tracebacks(table, group_by, cumulative, key, limit=10, keep=None):
    """The heaviest distinct tracebacks counted in one row (the traceback panel), as dicts:
    traceback (oldest frame first), size, count and their 95 % half-widths."""
    found = collector.tracebacks_of(table.by_traceback, group_by, cumulative, key, keep, limit)
    out = []
    for tb, size, count in found:
        var_size, var_count = table.variance_by_traceback[tb]
        out.append(
            {
                "traceback": list(reversed(tb)),
                "size": size,
                "count": count,
                "size_error": round(half_width(var_size)),
                "count_error": round(half_width(var_count)),
            }
        )
    return out
