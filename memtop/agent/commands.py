"""The fixed, read-only command set: dispatch, and the commands behind the live table.
Commands are registered in registry.py and their arguments checked in checks.py; nothing
from a request is ever evaluated, imported, unpickled or used as a path."""

import math
import os
import sys
import time
import tracemalloc

from . import checks, collector, modes, registry, rowkeys, timeline
from .checks import BadArgs
from .object_commands import MAX_TRACEBACKS, ObjectCommands
from .registry import GROUPING, TOTALS, command

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


class Commands(ObjectCommands):
    """Dispatches requests to handlers; one instance per running agent."""

    def __init__(self, agent):
        self.agent = agent
        self.sampler = agent.sampler
        self.sources = agent.sources
        # A fixed table, not getattr(self, "cmd_" + cmd) per request: since 3.12 getattr
        # interns the name it is given, and interned strings are immortal there: a leak
        # per request.
        self.handlers = {
            name: (spec, getattr(self, spec.method)) for name, spec in registry.COMMANDS.items()
        }

    def handle(self, cmd, args, client):
        """Run one command; returns its result or raises BadArgs / KeyError (unknown)."""
        spec, method = self.handlers[cmd]
        return method(registry.declared(spec, args), client)

    @command(
        "ping",
        reply=(
            "agent_version",
            "uptime",
            "clients",
            "allocated_blocks",
            "threads",
            "fds",
            "errors",
            "samples",
            "tracing_owner",
            "idle_timeout",
        ),
    )
    def cmd_ping(self, args, client):
        """No arguments. Reply: `agent_version`, `uptime` (s), `clients`, `allocated_blocks`,
        `threads`, `fds`, `errors` (the agent's recent internal errors), `samples` (tables
        read), `tracing_owner` (`agent` or `target`), `idle_timeout`."""
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

    @command("stats", reply=TOTALS)
    def cmd_stats(self, args, client):
        """No arguments. Reply: the totals read now: `tracing`, `traced_current`,
        `traced_peak`, `tracemalloc_memory`, `nframe`, `allocated_blocks`, `traced_blocks`,
        `memtop_traced`, `memtop_residue`, `mode` (`exact` or `sampled`), `sample_rate`
        (bytes; null in exact mode), `sampler_gaps` (times the program unhooked the
        sampler). In sampled mode the sizes are the sampler's estimates,
        `tracemalloc_memory` its own memory, `nframe` its depth (64)."""
        return self.sampler.totals()

    @command(
        "top",
        args=(*GROUPING, "limit", "sort", "compare", "max_age", "sources", "reuse_rows", "keys"),
        reply=(
            "tracing",
            "baseline_restarted",
            "group_by",
            "cumulative",
            "sort",
            "compare",
            "baseline_time",
            "sample",
            "totals",
            "total_rows",
            "rows",
            "rows_unchanged",
        ),
    )
    def cmd_top(self, args, client):
        """Arguments: the grouping arguments; `limit` (rows, 1–500, default 50); `sort`
        (`size`, `size_diff`, `count`, `count_diff`, `growth`); `compare` (`previous` or
        `baseline`); `max_age` (s: a table younger than this is reused); `sources` (bool:
        send source lines); `reuse_rows` (the sample id of the rows the viewer holds from
        its last reply: unchanged rows are not sent again); `keys` (at most 500 row keys,
        each as `tracebacks` takes `key`: their rows follow the top `limit` rows whatever
        their rank, a key the table does not hold gets no row; a process group's viewer
        sums rows over processes; an agent loaded by an older memtop ignores it).
        Reply: `tracing` (session id, since, owner, `sees_only_new`), `baseline_restarted`,
        `group_by`, `cumulative`, `sort`, `compare`, `baseline_time`, `sample` (the table:
        `id`, `time`, `age`, `fresh`, `pause_ms`, `next_in`, `budget`, `work_ms`,
        `traced_blocks`, `read_peak`), `totals` (as `stats`), `total_rows`, `rows` (each:
        `filename`, `lineno`, `size`, `count`, `size_diff`, `count_diff`, `source`,
        `traceback` as `[filename, lineno, source]` newest first; in sampled mode also
        `size_error` and `count_error`, 95 % half-widths), `rows_unchanged` (true: `rows`
        is empty and the viewer's held rows stand)."""
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

        before = self.sampler.latest  # a sample read from here on is this request's
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
        described = self.sampler.describe(sample, sample is not before)
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
        for row in rows:
            out = rowkeys.wire_row(group_by, *row, lookup)
            out.update(_errors(variances, row[0]))
            out_rows.append(out)
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

    @command(
        "history",
        args=GROUPING,
        reply=("tracing", "session", "since", "points", "point_fields", "keys", "tables"),
    )
    def cmd_history(self, args, client):
        """Arguments: the grouping arguments.
        Reply: `tracing`, the memory points of the current tracing session (`session`,
        `since`, `points`, `point_fields`) and the recent tables' rows of that grouping
        (`keys`, `tables`), for a viewer that comes back to go on from."""
        config = checks.grouping_config(args)
        info = self.agent.tracing_info()
        reply = self.agent.timeline.reply(config)
        reply["tracing"] = info
        return reply

    @command(
        "tracebacks", args=(*GROUPING, "key", "limit"), reply=("sample", "nframe", "tracebacks")
    )
    def cmd_tracebacks(self, args, client):
        """Arguments: the grouping arguments; `key` (the row: `{"filename", "lineno"}` or
        `{"frames": [[filename, lineno], …]}`); `limit` (default 10).
        Reply: `sample`, `nframe`, `tracebacks` (each: `size`, `count`, `frames`; in
        sampled mode also `size_error`, `count_error`)."""
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
            "sample": self.sampler.describe(sample, False),
            "nframe": self.agent.traceback_depth(),
            "tracebacks": [
                {
                    "size": size,
                    "count": count,
                    "frames": rowkeys.frames_out(tb, lookup),
                    **_errors(variances, tb),
                }
                for tb, size, count in found
            ],
        }

    @command("baseline", args=("action", "max_age"), reply=("baseline_time", "sample"))
    def cmd_baseline(self, args, client):
        """Arguments: `action` (`set` or `clear`); `max_age` (s, for the table `set` reads).
        Reply: `baseline_time` (null after `clear`), `sample`."""
        action = checks.choice(args, "action", ("set", "clear"), "set")
        if action == "clear":
            client.baseline = None
            return {"baseline_time": None}
        self.agent.follow_tracing()
        sample, _ = self.sampler.sample(checks.get(args, "max_age", float, 0.0))
        client.baseline = sample
        return {"baseline_time": sample.time, "sample": self.sampler.describe(sample, False)}

    @command("reset_peak", reply=TOTALS)
    def cmd_reset_peak(self, args, client):
        """No arguments. Reply: the totals, as `stats`. An error when tracemalloc is not
        tracing."""
        if self.sampler.byte_sampler is None and not tracemalloc.is_tracing():
            raise BadArgs("tracemalloc is not tracing")
        self.sampler.reset_peak()
        return self.sampler.totals()

    @command("configure", args=("idle_timeout", "keep_token"), reply=("idle_timeout",))
    def cmd_configure(self, args, client):
        """Arguments: `idle_timeout` (s, positive, or null: never); `keep_token` (bool: the
        viewer leaves the agent serving; its token is kept in the run directory for the
        next one).
        Reply: `idle_timeout`."""
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

    @command("mode", args=("mode", "rate"), reply=("mode", "sample_rate", "mode_note"))
    def cmd_mode(self, args, client):
        """Arguments: `mode` (`exact` or `sampled`; without it the reply only says the
        current mode); `rate` (bytes between samples on average, 1024 to 2^34; default: the
        agent's rate, or 256 KiB). Switches live: to exact, tracemalloc starts afresh; to
        sampled, the agent's tracemalloc session stops and the sampler starts. Every
        viewer's tables, the history and this viewer's baseline start over. An error
        (`bad_args`) with the reason when sampled mode cannot run (`sampled mode
        unavailable: …`); the agent then stays as it was.
        Reply: `mode`, `sample_rate` (null in exact mode), `mode_note` (why sampled mode
        could not start with the agent, if it could not)."""
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

    @command("detach", reply=("detaching", "tracing_owner", "stays", "other_viewers"))
    def cmd_detach(self, args, client):
        """No arguments. Reply: `detaching`, `tracing_owner`, `stays` (the agent goes on
        serving), `other_viewers` (while others watch, nobody is pulled away)."""
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
