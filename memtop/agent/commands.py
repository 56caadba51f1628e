"""The fixed, read-only command set: dispatch, and the commands behind the live table.
Arguments are checked in args.py; nothing from a request is ever evaluated, imported,
unpickled or used as a path."""

import math
import os
import sys
import time
import tracemalloc

from . import checks, collector, modes, timeline
from .checks import BadArgs
from .object_commands import MAX_TRACEBACKS, ObjectCommands

MAX_ROWS = 500
Z95 = 1.959963984540054  # a 95 % interval of a normal estimate: ± Z95 standard deviations
COMPARE_MODES = ("previous", "baseline")
MAX_CONFIGS_PER_CLIENT = 4


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
        # The session token this viewer authenticated with.
        self.token = None

    def clear(self):
        """Forget everything (the viewer left): its tables, baseline and snapshot."""
        self.__init__()


def _frames_out(tb, sources):
    # Oldest frame first, like tracemalloc.Traceback.
    return [
        {"filename": f, "lineno": n, "source": sources.get((f, n), "")} for f, n in reversed(tb)
    ]


class Commands(ObjectCommands):
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
            "history": self.cmd_history,
            "mode": self.cmd_mode,
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
        config = checks.grouping_config(args)
        group_by, cumulative = config[0], config[1]
        limit = checks.limit(args, 50, MAX_ROWS)
        sort = checks.choice(args, "sort", collector.SORT_KEYS, "size")
        compare = checks.choice(args, "compare", COMPARE_MODES, "previous")
        max_age = checks.get(args, "max_age", float, 1.0)
        want_sources = checks.get(args, "sources", bool, True)
        # The sample whose rows the viewer holds from its last reply: unchanged rows are not
        # sent again (encoding 500 rows costs the program tens of ms, ten times that when
        # tracemalloc traces the encoder's own allocations).
        reuse_rows = checks.get(args, "reuse_rows", int, -1)
        # Rows the viewer needs whatever their rank here: a process group's viewer sums
        # each row over processes, and a row near the top there may rank low in this one.
        keys = tuple(checks.row_keys(args.get("keys", []), group_by, MAX_ROWS))

        self.agent.follow_tracing()  # a table of an ended tracing session is not served
        # Totals first: read after the agent's own work they would include its temporaries.
        totals = self.sampler.totals()
        # A viewer's refresh is a point of the shared history too (at most every 0.2 s).
        self.agent.keep_history(totals, timeline.VIEWER_SPACING)
        sample, cost = self.sampler.sample(max(0.0, max_age))
        started = time.thread_time()
        base = client.baseline if compare == "baseline" else None
        shape = (
            sample.id,
            config,
            compare,
            base.id if base else None,
            sort,
            limit,
            want_sources,
            keys,
        )
        reading = 0.0
        unchanged = False
        if client.last_rows is not None and client.last_rows[0] == shape:
            out_rows, total = client.last_rows[1], client.last_rows[2]
            unchanged = reuse_rows == sample.id
        else:
            self.sampler.admit_derived(sample, "a table for these settings")
            out_rows, total, reading = self._rows(
                client, sample, config, base, compare, sort, limit, want_sources, keys
            )
            client.last_rows = (shape, out_rows, total)
        # Reading source files is not snapshot work: it is cached and bounded on its own,
        # and charging it would freeze the first table for seconds.
        self.sampler.charge(time.thread_time() - started - reading, sample)
        described = self.sampler.describe(sample, cost)
        described["work_ms"] = round((cost + time.thread_time() - started) * 1000.0, 3)
        return {
            "tracing": self.agent.tracing_info(),
            # A baseline read in an earlier tracing session: what it held is not comparable.
            "baseline_restarted": base is not None and self.agent.timeline.started_before(base),
            "group_by": group_by,
            "cumulative": cumulative,
            "sort": sort,
            "compare": compare if (compare == "previous" or client.baseline) else "none",
            "baseline_time": client.baseline.time if client.baseline is not None else None,
            "sample": described,
            "totals": totals,
            "total_rows": total,
            "rows": [] if unchanged else out_rows,
            "rows_unchanged": unchanged,
        }

    def _rows(self, client, sample, config, base, compare, sort, limit, want_sources, keys):
        """Rank one grouping of `sample` against the previous one or the baseline: the top
        `limit` rows, then those of `keys` not among them.

        Returns (rows, total keys, seconds spent reading source lines)."""
        group_by = config[0]
        current = self.sampler.grouped(sample, config)
        variances = self.sampler.variances(sample, config)
        if compare == "baseline":
            against = self.sampler.grouped(base, config) if base is not None else None
        else:
            against = self._previous(client, config, sample, current)
        rows, total = collector.rank(current, against, group_by, sort, limit)
        try:
            self.agent.timeline.record_rows(config, sample, rows)
        except Exception as exc:  # the shared history must never cost a viewer its table
            self.agent.record_error("history: %r" % (exc,))
        if keys:
            ranked = {row[0] for row in rows}
            asked = [key for key in dict.fromkeys(keys) if key not in ranked]
            rows = rows + collector.rows_of(current, against, asked)
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
                    **_errors(variances, key),
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

    def cmd_history(self, args, client):
        """The shared history of the current tracing session for one grouping: memory
        points and the recent tables' rows, for a viewer to go on from."""
        config = checks.grouping_config(args)
        info = self.agent.tracing_info()
        reply = self.agent.timeline.reply(config)
        reply["tracing"] = info
        return reply

    def cmd_tracebacks(self, args, client):
        config = checks.grouping_config(args)
        group_by, cumulative = config[0], config[1]
        limit = checks.limit(args, 10, MAX_TRACEBACKS)
        key = checks.row_key(args.get("key"), group_by)
        sample = self.sampler.latest
        if sample is None:
            sample, _ = self.sampler.sample(0.0)
        self.sampler.admit_derived(sample, "a row's tracebacks")
        started = time.thread_time()
        keep = collector.filename_filter(config[2], config[3])
        found = collector.tracebacks_of(sample.by_traceback, group_by, cumulative, key, keep, limit)
        frames = set()
        for tb, _, _ in found:
            frames.update(tb)
        lookup = self.sources.lookup(frames)
        self.sampler.charge(time.thread_time() - started, sample)
        variances = sample.variances
        return {
            "sample": self.sampler.describe(sample, 0.0),
            "nframe": self.agent.traceback_depth(),
            "tracebacks": [
                {
                    "size": size,
                    "count": count,
                    "frames": _frames_out(tb, lookup),
                    **_errors(variances, tb),
                }
                for tb, size, count in found
            ],
        }

    def cmd_baseline(self, args, client):
        action = checks.choice(args, "action", ("set", "clear"), "set")
        if action == "clear":
            client.baseline = None
            return {"baseline_time": None}
        self.agent.follow_tracing()
        sample, _ = self.sampler.sample(checks.get(args, "max_age", float, 0.0))
        client.baseline = sample
        return {"baseline_time": sample.time, "sample": self.sampler.describe(sample, 0.0)}

    def cmd_reset_peak(self, args, client):
        if self.sampler.byte_sampler is None and not tracemalloc.is_tracing():
            raise BadArgs("tracemalloc is not tracing")
        self.sampler.reset_peak()
        return self.sampler.totals()

    def cmd_configure(self, args, client):
        if checks.get(args, "keep_token", bool, False) and client.token is not None:
            # The viewer leaves the agent serving (`Q`, a dropped terminal): a later viewer
            # reads the token from the run dir instead of injecting a new session.
            self.agent.keep_token(client.token)
        if "idle_timeout" in args:
            value = args["idle_timeout"]
            if value is not None:
                value = checks.get(args, "idle_timeout", float, 0.0)
                if value <= 0:
                    raise BadArgs("idle_timeout must be positive or null")
            self.agent.idle_timeout = value
        return {"idle_timeout": self.agent.idle_timeout}

    def cmd_mode(self, args, client):
        """Switch between exact and sampled mode (every viewer's tables start over)."""
        if "mode" not in args:
            return modes.info(self.agent)
        mode = checks.choice(args, "mode", modes.MODES, "exact")
        rate = checks.get(args, "rate", int, self.agent.rate or modes.DEFAULT_RATE)
        try:
            modes.check(mode, rate)
        except ValueError as exc:
            raise BadArgs(str(exc)) from None
        try:
            modes.switch(self.agent, mode, rate)
        except Exception as exc:  # bytesampler.Unavailable: the reason goes to the viewer
            raise BadArgs(str(exc)) from None
        client.baseline = None
        return modes.info(self.agent)

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


def _errors(variances, key):
    """A row's 95 % half-widths in sampled mode ({} in exact mode: the wire stays as it
    was; the viewer reads a missing error as 0)."""
    if variances is None:
        return {}
    # A row that vanished since the table it is compared with has no samples left.
    var_size, var_count = variances.get(key, (0.0, 0.0))[:2]
    return {
        "size_error": round(Z95 * math.sqrt(var_size)) if var_size > 0 else 0,
        "count_error": round(Z95 * math.sqrt(var_count)) if var_count > 0 else 0,
    }


def _count_entries(path):
    try:
        return len(os.listdir(path))
    except OSError:
        return None
