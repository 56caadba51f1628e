"""Leak-hunting commands: objects by type, their allocation sites, what keeps one alive,
and whole snapshots. They walk the heap, so they run only when a viewer asks, and their
cost counts against the agent's budget."""

import sys
import time
import tracemalloc

from . import checks, export, objects, referrers, safeview
from .checks import BadArgs
from .registry import command

MAX_TRACEBACKS = 50
# One referrer walk holds the program's GIL this long at most.
MAX_WALK_SECONDS = 2.0


class ObjectCommands:
    """Mixed into Commands: needs self.sampler and self.sources."""

    @command(
        "types",
        args=("limit", "mark"),
        reply=("rows", "not_shown", "total_types", "objects", "since", "baseline", "cost_ms"),
    )
    def cmd_types(self, args, client):
        """Live objects by type from the gc, with growth since the viewer's baseline (or its
        previous look). Runs only when asked; its cost counts against the budget.
        Arguments: `limit` (rows); `mark` (bool: this walk becomes the baseline later walks
        are compared with).
        Reply: `rows` (each: `type`, `count`, `size`, `count_diff`, `size_diff`,
        `not_shown`), `not_shown` (why a value was not shown: the program defines it),
        `total_types`, `objects`, `since`, `baseline`, `cost_ms`."""
        limit = checks.limit(args, 50, objects.MAX_TYPES)
        mark = checks.get(args, "mark", bool, False)
        self.sampler.admit("a walk of the gc's objects")
        started = time.thread_time()
        counts, not_shown = objects.count_types()
        cost = time.thread_time() - started
        self.sampler.charge(cost)
        against = client.types_baseline or client.types_previous
        rows, total = objects.rank_types(counts, against[1] if against else None, limit)
        since = against[0] if against else None
        now = time.time()
        client.types_previous = (now, counts)
        if mark:
            client.types_baseline = (now, counts)
        return {
            "rows": [
                {
                    "type": name,
                    "count": count,
                    "size": size,
                    "count_diff": dcount,
                    "size_diff": dsize,
                    # The class defines __sizeof__: the agent did not call it, and counts
                    # each object's own struct instead.
                    "not_shown": "__sizeof__" if name in not_shown else "",
                }
                for name, count, size, dcount, dsize in rows
            ],
            "not_shown": safeview.NOT_SHOWN if not_shown else "",
            "total_types": total,
            "objects": sum(count for count, _ in counts.values()),
            "since": since,
            "baseline": client.types_baseline[0] if client.types_baseline else None,
            "cost_ms": round(cost * 1000.0, 3),
        }

    @command(
        "origins",
        args=("type", "sample", "limit"),
        reply=("type", "sampled", "untraced", "note", "sites"),
    )
    def cmd_origins(self, args, client):
        """Allocation sites of a bounded sample of one type's instances.
        Arguments: `type` (a type's qualified name); `sample` (instances to look at,
        default 200); `limit` (sites, default 10).
        Reply: `type`, `sampled`, `untraced`, `note`, `sites` (each: `count`, `frames` with
        `filename`, `lineno`, `source`)."""
        name = checks.type_name(args)
        sample = min(max(checks.get(args, "sample", int, 200), 1), objects.MAX_SAMPLE)
        limit = checks.limit(args, 10, MAX_TRACEBACKS)
        self.sampler.admit("a walk of the gc's objects")
        started = time.thread_time()
        sites, sampled, untraced = objects.allocation_sites(name, sample, limit)
        frames = set()
        for tb, _ in sites:
            frames.update(tb)
        lookup = self.sources.lookup(frames)
        self.sampler.charge(time.thread_time() - started)
        return {
            "type": name,
            "sampled": sampled,
            "untraced": untraced,
            "note": untraced_note() if untraced else "",
            "sites": [
                {
                    "count": count,
                    "frames": [
                        {"filename": f, "lineno": n, "source": lookup.get((f, n), "")}
                        for f, n in tb
                    ],
                }
                for tb, count in sites
            ],
        }

    @command(
        "referrers",
        args=("type", "key", "timeout"),
        reply=("found", "what", "steps", "cut", "allocated_at", "note", "reason"),
    )
    def cmd_referrers(self, args, client):
        """A referrer chain from a sample object (of a type, or allocated at a line) back to
        a root. Bounded in time; keeps no reference once answered.
        Arguments: `type` (the newest instance of a type) or `key` (an object allocated at
        a line: `{"filename", "lineno"}`); `timeout` (s, at most 2).
        Reply: `found`, `what`, `steps` (root first: `type`, `edge`, `root`, and for a
        thread's frame `frame` = `[filename, lineno, function, thread]`), `cut`,
        `allocated_at`, `note`, `reason`."""
        seconds = min(max(checks.get(args, "timeout", float, 2.0), 0.1), MAX_WALK_SECONDS)
        name = checks.type_name(args) if "type" in args else None
        key = None if name is not None else checks.row_key(args.get("key"), "lineno")
        self.sampler.admit("a walk of the gc's referrers")
        started = time.thread_time()
        if name is not None:
            sample = objects.instances(name, 1)
            what = "the newest %s" % name
            missing = "no live %s is tracked by the gc" % name
        else:
            sample = objects.objects_allocated_at(key[0], key[1], 1)
            what = "an object allocated at %s:%d" % key
            missing = (
                "no object the gc tracks was found with that allocation line: the gc "
                "tracks containers only (strings, bytes and numbers have no referrer "
                "walk), and " + untraced_note()
            )
        try:
            if not sample:
                return {
                    "found": False,
                    "what": what,
                    "steps": [],
                    "cut": False,
                    "allocated_at": [],
                    "note": "",
                    "reason": missing,
                }
            traced = (
                tracemalloc.get_object_traceback(sample[0]) if tracemalloc.is_tracing() else None
            )
            allocated = [[f.filename, f.lineno] for f in traced] if traced else []
            steps, cut = referrers.chain(sample.pop(), seconds)
        finally:
            del sample[:]
            self.sampler.charge(time.thread_time() - started)
        reason = ""
        if steps is None:
            reason = "no root reached within the walk's bounds (%s)" % (
                "cut short" if cut else "no module, class or thread refers to it"
            )
        return {
            "found": steps is not None,
            "what": what,
            "steps": steps or [],
            "cut": cut,
            "allocated_at": allocated,
            "note": "" if traced else untraced_note(),
            "reason": reason,
        }

    @command(
        "snapshot",
        args=("part", "snapshot"),
        reply=("snapshot", "part", "parts", "header", "frames", "tracebacks", "entries", "sources"),
    )
    def cmd_snapshot(self, args, client):
        """One part of a whole snapshot (part 0 builds it; the others are fetched in order and
        the last one frees it). Counts against the budget like a table.
        Arguments: `part` (0 starts a snapshot; later parts continue it); `snapshot` (the
        id part 0 gave).
        Reply: each part carries `snapshot` (its id), `part` and `parts` (how many); part 0
        also the snapshot's `header` (with the tracing session it comes from), the others
        bounded chunks of `frames`, `tracebacks`, their (size, count) `entries` and
        `sources`. The last part frees the snapshot."""
        part = checks.get(args, "part", int, 0)
        if part == 0:
            self.sampler.admit("a whole snapshot")
            started = time.thread_time()
            sampled = None
            if self.sampler.byte_sampler is not None:
                sampled, _ = self.sampler.sample(0.0)
            client.export = (int(time.time() * 1000), export.build(self.sources, sampled))
            # Which tracing session it comes from: a diff of two snapshots is only meaningful
            # within one (see memtop view --base).
            client.export[1][0]["header"]["tracing"] = self.agent.tracing_info()
            self.sampler.charge(time.thread_time() - started)
        if client.export is None:
            raise BadArgs("no snapshot is being fetched: ask for part 0 first")
        snapshot_id, parts = client.export
        if part != 0 and checks.get(args, "snapshot", int, -1) != snapshot_id:
            raise BadArgs("that snapshot is gone; ask for part 0 again")
        if not 0 <= part < len(parts):
            raise BadArgs("part must be from 0 to %d" % (len(parts) - 1))
        reply = dict(parts[part], snapshot=snapshot_id, part=part, parts=len(parts))
        if part == len(parts) - 1:
            client.export = None
        return reply


def untraced_note():
    """Why tracemalloc cannot say where some objects were allocated."""
    note = (
        "objects allocated before tracing started, or reusing memory from CPython's "
        "free lists (dicts, lists, tuples), have no allocation traceback"
    )
    if sys.version_info[:2] == (3, 11):
        note += (
            "; and CPython 3.11 cannot map instances of classes without __slots__ to "
            "their allocation (a CPython bug, fixed in 3.12)"
        )
    return note
