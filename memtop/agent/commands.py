"""The fixed, read-only command set. Arguments are validated here; nothing from a request
is ever evaluated, imported, unpickled or used as a path."""

import os
import sys
import time
import tracemalloc

from . import collector, export, objects, referrers

MAX_ROWS = 500
MAX_TRACEBACKS = 50
MAX_PATTERNS = 32
MAX_PATTERN_CHARS = 1024
COMPARE_MODES = ("previous", "baseline")
MAX_CONFIGS_PER_CLIENT = 8


class BadArgs(Exception):
    """An argument of the wrong type or value: replied as `bad_args`."""


class ClientState:
    """What the agent remembers for one viewer: its previous groupings and its baseline."""

    def __init__(self):
        # config -> (sample_id, grouping, grouping it was compared against)
        self.previous = {}
        self.baseline = None
        # (what shaped them, rows, total): a refresh between two samples costs nothing.
        self.last_rows = None
        # Object counts by type: the last ones this viewer saw, and its marked baseline.
        self.types_previous = None
        self.types_baseline = None
        # A snapshot being fetched part by part: (id, parts).
        self.export = None

    def clear(self):
        """Forget everything (the viewer left): its tables, baseline and snapshot."""
        self.__init__()


def _get(args, name, kind, default):
    value = args.get(name, default)
    if kind is int and isinstance(value, bool):
        raise BadArgs("%s must be an integer" % name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise BadArgs("%s must be of type %s" % (name, kind.__name__))
    return value


def _choice(args, name, choices, default):
    value = _get(args, name, str, default)
    if value not in choices:
        raise BadArgs("%s must be one of %s" % (name, ", ".join(choices)))
    return value


def _patterns(args, name):
    value = args.get(name, [])
    if not isinstance(value, list) or len(value) > MAX_PATTERNS:
        raise BadArgs("%s must be a list of at most %d patterns" % (name, MAX_PATTERNS))
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_PATTERN_CHARS:
            raise BadArgs("%s must hold strings of at most %d chars" % (name, MAX_PATTERN_CHARS))
    return tuple(value)


def _limit(args, default, cap):
    value = _get(args, "limit", int, default)
    if value < 1:
        raise BadArgs("limit must be at least 1")
    return min(value, cap)


def grouping_config(args):
    """(group_by, cumulative, include, exclude) from request arguments."""
    group_by = _choice(args, "group_by", collector.GROUP_KEYS, "lineno")
    cumulative = _get(args, "cumulative", bool, False)
    if cumulative and group_by == "traceback":
        raise BadArgs("cumulative applies to lineno and filename grouping only")
    return (group_by, cumulative, _patterns(args, "include"), _patterns(args, "exclude"))


def _frames_out(tb, sources):
    # Oldest frame first, like tracemalloc.Traceback.
    return [
        {"filename": f, "lineno": n, "source": sources.get((f, n), "")} for f, n in reversed(tb)
    ]


class Commands:
    """Dispatches requests to handlers; one instance per running agent."""

    def __init__(self, agent):
        self.agent = agent
        self.sampler = agent.sampler
        self.sources = agent.sources
        self.handlers = {
            "ping": self.cmd_ping,
            "stats": self.cmd_stats,
            "top": self.cmd_top,
            "tracebacks": self.cmd_tracebacks,
            "baseline": self.cmd_baseline,
            "reset_peak": self.cmd_reset_peak,
            "configure": self.cmd_configure,
            "detach": self.cmd_detach,
            "types": self.cmd_types,
            "snapshot": self.cmd_snapshot,
            "origins": self.cmd_origins,
            "referrers": self.cmd_referrers,
        }

    def handle(self, cmd, args, client):
        """Run one command; returns its result or raises BadArgs / KeyError (unknown)."""
        # A fixed table, not getattr(self, "cmd_" + cmd): since 3.12 getattr interns the
        # name it is given, and interned strings are immortal there: a leak per request.
        return self.handlers[cmd](args, client)

    def cmd_ping(self, args, client):
        agent = self.agent
        return {
            "agent_version": agent.version,
            "uptime": time.time() - agent.started,
            "clients": agent.client_count(),
            "allocated_blocks": sys.getallocatedblocks(),
            "threads": _count_entries("/proc/self/task"),
            "fds": _count_entries("/proc/self/fd"),
            "errors": list(agent.errors),
            "samples": self.sampler.samples_taken,
            "tracing_owner": agent.tracing_owner,
            "idle_timeout": agent.idle_timeout,
        }

    def cmd_stats(self, args, client):
        return self.sampler.totals()

    def cmd_top(self, args, client):
        config = grouping_config(args)
        group_by, cumulative = config[0], config[1]
        limit = _limit(args, 50, MAX_ROWS)
        sort = _choice(args, "sort", collector.SORT_KEYS, "size")
        compare = _choice(args, "compare", COMPARE_MODES, "previous")
        max_age = _get(args, "max_age", float, 1.0)
        want_sources = _get(args, "sources", bool, True)

        # Totals first: read after the agent's own work they would include its temporaries.
        totals = self.sampler.totals()
        sample, cost = self.sampler.sample(max(0.0, max_age))
        started = time.thread_time()
        base = client.baseline if compare == "baseline" else None
        shape = (sample.id, config, compare, base.id if base else None, sort, limit, want_sources)
        reading = 0.0
        if client.last_rows is not None and client.last_rows[0] == shape:
            out_rows, total = client.last_rows[1], client.last_rows[2]
        else:
            out_rows, total, reading = self._rows(
                client, sample, config, base, compare, sort, limit, want_sources
            )
            client.last_rows = (shape, out_rows, total)
        # Reading source files is not snapshot work: it is cached and bounded on its own,
        # and charging it would freeze the first table for seconds.
        self.sampler.charge(time.thread_time() - started - reading)
        described = self.sampler.describe(sample, cost)
        described["work_ms"] = round((cost + time.thread_time() - started) * 1000.0, 3)
        return {
            "group_by": group_by,
            "cumulative": cumulative,
            "sort": sort,
            "compare": compare if (compare == "previous" or client.baseline) else "none",
            "baseline_time": client.baseline.time if client.baseline is not None else None,
            "sample": described,
            "totals": totals,
            "total_rows": total,
            "rows": out_rows,
        }

    def _rows(self, client, sample, config, base, compare, sort, limit, want_sources):
        """Rank one grouping of `sample` against the previous one or the baseline.

        Returns (rows, total keys, seconds spent reading source lines)."""
        group_by = config[0]
        current = self.sampler.grouped(sample, config)
        if compare == "baseline":
            against = self.sampler.grouped(base, config) if base is not None else None
        else:
            against = self._previous(client, config, sample, current)
        rows, total = collector.rank(current, against, group_by, sort, limit)
        lookup = {}
        reading = time.thread_time()
        if want_sources:
            frames = set()
            for row in rows:
                frames.update(row[5])
            lookup = self.sources.lookup(frames)
        reading = time.thread_time() - reading
        out_rows = []
        for key, size, size_diff, count, count_diff, tb in rows:
            filename, lineno = tb[0]
            if group_by == "lineno":
                filename, lineno = key
            elif group_by == "filename":
                filename, lineno = key, None
            out_rows.append(
                {
                    "filename": filename,
                    "lineno": lineno,
                    "size": size,
                    "count": count,
                    "size_diff": size_diff,
                    "count_diff": count_diff,
                    "source": lookup.get((filename, lineno), "") if lineno is not None else "",
                    "traceback": _frames_out(tb, lookup),
                }
            )
        return out_rows, total, reading

    def _previous(self, client, config, sample, current):
        """The grouping this client saw before the current sample (None the first time)."""
        seen = client.previous.get(config)
        if seen is None:
            if len(client.previous) >= MAX_CONFIGS_PER_CLIENT:
                # Each remembered grouping holds memory in the target: forget the oldest.
                del client.previous[next(iter(client.previous))]
            client.previous[config] = (sample.id, current, None)
            return None
        seen_id, seen_grouping, seen_against = seen
        if seen_id == sample.id:
            # Same sample as the last request: repeat its diff rather than showing zeros.
            return seen_against
        client.previous[config] = (sample.id, current, seen_grouping)
        return seen_grouping

    def cmd_tracebacks(self, args, client):
        config = grouping_config(args)
        group_by, cumulative = config[0], config[1]
        limit = _limit(args, 10, MAX_TRACEBACKS)
        key = _row_key(args.get("key"), group_by)
        sample = self.sampler.latest
        if sample is None:
            sample, _ = self.sampler.sample(0.0)
        keep = collector.filename_filter(config[2], config[3])
        started = time.thread_time()
        found = collector.tracebacks_of(sample.by_traceback, group_by, cumulative, key, keep, limit)
        frames = set()
        for tb, _, _ in found:
            frames.update(tb)
        lookup = self.sources.lookup(frames)
        self.sampler.charge(time.thread_time() - started)
        return {
            "sample": self.sampler.describe(sample, 0.0),
            "nframe": tracemalloc.get_traceback_limit() if tracemalloc.is_tracing() else 0,
            "tracebacks": [
                {"size": size, "count": count, "frames": _frames_out(tb, lookup)}
                for tb, size, count in found
            ],
        }

    def cmd_baseline(self, args, client):
        action = _choice(args, "action", ("set", "clear"), "set")
        if action == "clear":
            client.baseline = None
            return {"baseline_time": None}
        sample, _ = self.sampler.sample(_get(args, "max_age", float, 0.0))
        client.baseline = sample
        return {"baseline_time": sample.time, "sample": self.sampler.describe(sample, 0.0)}

    def cmd_types(self, args, client):
        """Live objects by type from the gc, with growth since the viewer's baseline (or its
        previous look). Runs only when asked; its cost counts against the budget."""
        limit = _limit(args, 50, objects.MAX_TYPES)
        mark = _get(args, "mark", bool, False)
        started = time.thread_time()
        counts = objects.count_types()
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
                }
                for name, count, size, dcount, dsize in rows
            ],
            "total_types": total,
            "objects": sum(count for count, _ in counts.values()),
            "since": since,
            "baseline": client.types_baseline[0] if client.types_baseline else None,
            "cost_ms": round(cost * 1000.0, 3),
        }

    def cmd_origins(self, args, client):
        """Allocation sites of a bounded sample of one type's instances."""
        name = _type_arg(args)
        sample = min(max(_get(args, "sample", int, 200), 1), objects.MAX_SAMPLE)
        limit = _limit(args, 10, MAX_TRACEBACKS)
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
            "note": _untraced_note() if untraced else "",
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

    def cmd_referrers(self, args, client):
        """A referrer chain from a sample object (of a type, or allocated at a line) back
        to a root. Bounded in time; keeps no reference once answered."""
        seconds = min(max(_get(args, "timeout", float, 2.0), 0.1), 10.0)
        started = time.thread_time()
        if "type" in args:
            sample = objects.instances(_type_arg(args), 1)
            what = "the newest %s" % args["type"]
            missing = "no live %s is tracked by the gc" % args["type"]
        else:
            key = _row_key(args.get("key"), "lineno")
            sample = objects.objects_allocated_at(key[0], key[1], 1)
            what = "an object allocated at %s:%d" % key
            missing = (
                "no object the gc tracks was found with that allocation line: the gc "
                "tracks containers only (strings, bytes and numbers have no referrer "
                "walk), and " + _untraced_note()
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
            "note": "" if traced else _untraced_note(),
            "reason": reason,
        }

    def cmd_snapshot(self, args, client):
        """One part of a whole snapshot (part 0 builds it; the others are fetched in order
        and the last one frees it). Counts against the budget like a table."""
        part = _get(args, "part", int, 0)
        if part == 0:
            started = time.thread_time()
            client.export = (int(time.time() * 1000), export.build(self.sources))
            self.sampler.charge(time.thread_time() - started)
        if client.export is None:
            raise BadArgs("no snapshot is being fetched: ask for part 0 first")
        snapshot_id, parts = client.export
        if part != 0 and _get(args, "snapshot", int, -1) != snapshot_id:
            raise BadArgs("that snapshot is gone; ask for part 0 again")
        if not 0 <= part < len(parts):
            raise BadArgs("part must be from 0 to %d" % (len(parts) - 1))
        reply = dict(parts[part], snapshot=snapshot_id, part=part, parts=len(parts))
        if part == len(parts) - 1:
            client.export = None
        return reply

    def cmd_reset_peak(self, args, client):
        if not tracemalloc.is_tracing():
            raise BadArgs("tracemalloc is not tracing")
        self.sampler.reset_peak()
        return self.sampler.totals()

    def cmd_configure(self, args, client):
        if "idle_timeout" in args:
            value = args["idle_timeout"]
            if value is not None:
                value = _get(args, "idle_timeout", float, 0.0)
                if value <= 0:
                    raise BadArgs("idle_timeout must be positive or null")
            self.agent.idle_timeout = value
        return {"idle_timeout": self.agent.idle_timeout}

    def cmd_detach(self, args, client):
        owner = self.agent.tracing_owner
        others = self.agent.client_count() - 1
        if others > 0:
            # Another viewer is still watching: leaving must not pull the agent from it.
            return {
                "detaching": False,
                "tracing_owner": owner,
                "stays": True,
                "other_viewers": others,
            }
        self.agent.detach("detach requested by a viewer")
        return {
            "detaching": True,
            "tracing_owner": owner,
            "stays": not self.agent.stopping,
            "other_viewers": 0,
        }


def _row_key(value, group_by):
    """A row key sent back by the viewer, checked for shape (it is only compared, never used)."""
    if not isinstance(value, dict):
        raise BadArgs("key must be an object")
    if group_by == "traceback":
        frames = value.get("frames")
        if not isinstance(frames, list) or not frames or len(frames) > 1024:
            raise BadArgs("key.frames must be a non-empty list")
        out = []
        for frame in frames:
            if (
                not isinstance(frame, list)
                or len(frame) != 2
                or not isinstance(frame[0], str)
                or not isinstance(frame[1], int)
            ):
                raise BadArgs("key.frames items must be [filename, lineno]")
            out.append((frame[0], frame[1]))
        # Frames arrive oldest first; raw tracebacks are most recent first.
        return tuple(reversed(out))
    filename = value.get("filename")
    if not isinstance(filename, str):
        raise BadArgs("key.filename must be a string")
    if group_by == "filename":
        return filename
    lineno = value.get("lineno")
    if not isinstance(lineno, int) or isinstance(lineno, bool):
        raise BadArgs("key.lineno must be an integer")
    return (filename, lineno)


def _untraced_note():
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


def _type_arg(args):
    name = args.get("type")
    if not isinstance(name, str) or not 0 < len(name) <= 300:
        raise BadArgs("type must be a type name such as 'app.models.Session'")
    return name


def _count_entries(path):
    try:
        return len(os.listdir(path))
    except OSError:
        return None
