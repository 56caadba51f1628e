"""When to read the trace table, and what it costs the target.

Reading every trace holds the GIL for a time that grows with the heap (about 0.5 s at a
million blocks). Costs are the agent thread's CPU time (`time.thread_time`): while the
agent runs Python it holds the GIL, and wall time would also count the moments the
target's own threads took the GIL back.

The sampler keeps all of the agent's work under a duty-cycle budget. Every piece of work
that grows with the heap (a sample, a grouping for a viewer's settings, a gc walk for
`types`, a referrer walk, a whole snapshot) is counted in one ledger: work of `t` seconds
moves the time from which new work is allowed `t / budget` seconds on. A new sample is
taken only from then on (until then viewers get the previous one); other work asked for
before then is refused with the seconds to wait (`Busy`), except the first few pieces of
work on a fresh sample, so that each viewer gets its table of a sample another viewer
took. So the agent's work stays at or below `budget` of wall time at any heap size and
any request rate. Totals (`get_traced_memory`) are cheap and always fresh.

In sampled mode the table comes from the native byte sampler (`byte_sampler`): reading it
costs microseconds whatever the heap, each refresh first checks that its hooks are still
live, and the totals are its estimates.
"""

import sys
import time
import tracemalloc

from . import collector, footprint
from .checks import Busy

# Groupings kept for the latest sample (each holds one entry per key), and pieces of work
# on a fresh sample done before the budget allows new work again (while they cost no more
# than the sample's own read, or DERIVED_FLOOR seconds).
MAX_DERIVED = 8
DERIVED_FLOOR = 0.02


class Sampler:
    """The latest sample, groupings derived from it, and the duty-cycle accounting."""

    def __init__(self, budget=0.05, min_interval=0.2, owns_tracing=False):
        self.budget = budget
        self.min_interval = min_interval
        self.owns_tracing = owns_tracing
        self.latest = None
        self.samples_taken = 0
        self._started_at = 0.0
        # time.monotonic() from which the budget allows new work.
        self._free_at = 0.0
        self._derived = {}
        # Highest traced peak seen outside the agent's own work (see correct_peak), and
        # the bytes the agent still held for its viewers when it last reset the peak.
        self._peak = 0
        self._held = 0
        # Untraced memory the reads of the trace table left behind, in total (footprint).
        self.residue = 0
        # Sampled mode: the running ByteSampler (None in exact mode).
        self.byte_sampler = None

    def clear(self):
        """Drop every cached sample and grouping."""
        self.latest = None
        self._derived = {}

    def next_allowed_in(self):
        """Seconds until the budget allows a new sample (0 when it does now)."""
        if self.latest is None:
            return 0.0
        now = time.monotonic()
        return max(0.0, self._free_at - now, self._started_at + self.min_interval - now)

    def spend(self, seconds):
        """Count `seconds` of work just done against the budget."""
        now = time.monotonic()
        self._free_at = max(self._free_at, now - seconds) + seconds / self.budget

    def admit(self, what):
        """Raise Busy unless the budget allows new work now."""
        wait = self._free_at - time.monotonic()
        if wait > 0:
            raise Busy(wait, what)

    def admit_derived(self, sample, what):
        """Admit work on `sample`: the first pieces on the latest sample always (up to
        MAX_DERIVED, while they have cost less than the read itself; counted all the same),
        any other only within the budget."""
        if (
            sample is self.latest
            and sample.derived < MAX_DERIVED
            and sample.cost - sample.read_cost <= max(sample.read_cost, DERIVED_FLOOR)
        ):
            sample.derived += 1
            return
        self.admit(what)

    def sample(self, max_age):
        """The latest sample, refreshed when older than `max_age` and the budget allows.

        Returns (sample, cost of this call in seconds)."""
        latest = self.latest
        if latest is not None and (
            time.time() - latest.time < max_age or self.next_allowed_in() > 0
        ):
            return latest, 0.0
        self._started_at = time.monotonic()
        self.samples_taken += 1
        if self.byte_sampler is not None:
            fresh = _take_sampled(self.samples_taken, self.byte_sampler)
            fresh.read_cost = fresh.cost
            self.latest = fresh
            self._derived = {}
            self.spend(fresh.cost)
            return fresh, fresh.cost
        before = footprint.untraced_bytes()
        fresh = collector.take_sample(self.samples_taken)
        started = time.thread_time()
        footprint.release_free_memory()
        fresh.cost += time.thread_time() - started
        fresh.read_cost = fresh.cost
        # The program's own traced growth meanwhile cancels out of untraced memory; its
        # native growth during the read (a few percent of the time) is counted as memtop's.
        self.residue += max(0, footprint.untraced_bytes() - before)
        self.latest = fresh
        self._derived = {}
        self.spend(fresh.cost)
        return fresh, fresh.cost

    def charge(self, seconds, sample=None):
        """Count work against the budget; work derived from `sample` also adds to the pause
        its replies report."""
        if sample is not None:
            sample.cost += seconds
        self.spend(seconds)

    def variances(self, sample, config):
        """The variances of `sample`'s estimates grouped like `grouped` (sampled mode;
        None in exact mode)."""
        if sample.variances is None:
            return None
        key = ("variances", config)
        found = self._derived.get(key) if sample is self.latest else None
        if found is None:
            keep = collector.filename_filter(config[2], config[3])
            found = collector.group(sample.variances, config[0], config[1], keep)
            if sample is self.latest:
                self._derived[key] = found
        return found

    def grouped(self, sample, config):
        """Grouping of `sample` for config (group_by, cumulative, include, exclude), cached
        while `sample` is the latest. The caller charges the time it took."""
        if sample is not self.latest:
            return _group(sample, config)
        found = self._derived.get(config)
        if found is None:
            found = _group(sample, config)
            if len(self._derived) >= MAX_DERIVED:
                # Distinct filters must not grow the program: forget the oldest grouping.
                del self._derived[next(iter(self._derived))]
            self._derived[config] = found
        return found

    def note_peak(self):
        """Remember the traced peak before the agent allocates for its own work."""
        if self.byte_sampler is None and tracemalloc.is_tracing():
            peak = tracemalloc.get_traced_memory()[1] - self._held
            if peak > self._peak:
                self._peak = peak

    def correct_peak(self, held=0):
        """Undo the agent's own contribution to the traced peak.

        The agent's temporary lists are traced; when the agent started tracing it may reset
        the peak after its work and report the peak it saw before. `held` is what the agent
        keeps past its work (replies a slow viewer has not read yet): the reset peak
        includes it, so later readings discount it. A target that traces on its own keeps
        its peak untouched."""
        if self.byte_sampler is None and self.owns_tracing and tracemalloc.is_tracing():
            tracemalloc.reset_peak()
            self._held = held

    def reset_peak(self):
        """The user asked to restart peak tracking from now."""
        if self.byte_sampler is None:
            tracemalloc.reset_peak()
        self._peak = 0

    def totals(self):
        """Cheap figures, fresh on every call."""
        if self.byte_sampler is not None:
            return self._sampled_totals()
        tracing = tracemalloc.is_tracing()
        current, peak = tracemalloc.get_traced_memory() if tracing else (0, 0)
        if self.owns_tracing:
            peak = max(peak, self._peak)
        latest = self.latest
        return {
            "tracing": tracing,
            "traced_current": current,
            "traced_peak": peak,
            "tracemalloc_memory": tracemalloc.get_tracemalloc_memory() if tracing else 0,
            "nframe": tracemalloc.get_traceback_limit() if tracing else 0,
            "allocated_blocks": sys.getallocatedblocks(),
            "traced_blocks": latest.count if latest is not None else None,
            # memtop's own traced memory (part of traced_current), and the untraced memory
            # its reads of the trace table left behind (footprint).
            "memtop_traced": latest.own_size if latest is not None else 0,
            "memtop_residue": self.residue,
            "mode": "exact",
            "sample_rate": None,
            "sampler_gaps": 0,
        }

    def _sampled_totals(self):
        """The estimates of a fresh sampler table (at most `min_interval` old): reading it
        takes microseconds. Every call checks that the hooks are still live."""
        from .nativelib import MAX_FRAMES  # loaded already: the sampler runs

        if not self.byte_sampler.ensure_live():
            self.latest = None  # its samples include the gap's: read afresh
        latest, _ = self.sample(0.0)
        table = latest.sampled
        current = latest.size + latest.own_size
        self._peak = max(self._peak, current)
        return {
            "tracing": True,
            "traced_current": current,
            "traced_peak": self._peak,
            "tracemalloc_memory": table.table_bytes,
            "nframe": MAX_FRAMES,
            "allocated_blocks": sys.getallocatedblocks(),
            "traced_blocks": latest.count,
            "memtop_traced": latest.own_size,
            "memtop_residue": 0,
            "mode": "sampled",
            "sample_rate": self.byte_sampler.rate,
            "sampler_gaps": self.byte_sampler.gaps,
        }

    def describe(self, sample, fresh):
        """What a reply says about the sample behind its rows (`fresh`: read for this
        request; not "it cost time": a sampled-mode read may take less than the clock
        shows)."""
        now = time.time()
        return {
            "id": sample.id,
            "time": sample.time,
            "age": max(0.0, now - sample.time),
            "fresh": fresh,
            "pause_ms": round(sample.cost * 1000.0, 3),
            "next_in": round(self.next_allowed_in(), 3),
            "budget": self.budget,
            "traced_blocks": sample.count,
            "traced_size": sample.size,
            # Extra resident memory this sample's read needed while it lasted.
            "read_peak": sample.read_peak,
        }


def _take_sampled(sample_id, byte_sampler):
    """A sample of the byte sampler's estimates, after re-hooking it if a program's
    tracemalloc.stop() unhooked it (the gap is counted in the table)."""
    started = time.thread_time()
    sample = collector.Sample(sample_id, time.time())
    byte_sampler.ensure_live()
    table = byte_sampler.table()
    sample.by_traceback = table.by_traceback
    sample.variances = table.variance_by_traceback
    sample.size, sample.count = table.size, table.count
    sample.own_size, sample.own_count = table.own_size, table.own_count
    sample.sampled = table
    sample.cost = time.thread_time() - started
    return sample


def _group(sample, config):
    group_by, cumulative, include, exclude = config
    keep = collector.filename_filter(include, exclude)
    return collector.group(sample.by_traceback, group_by, cumulative, keep)
