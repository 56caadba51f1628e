"""The history the agent keeps for viewers that come and go: the memory account about once a
second, and the rows of the recent tables per grouping, for the current tracing session.

A viewer that leaves with the agent serving (`Q`) and a new one that comes later read the
same history, so trends, charts and leak suspects go on where they were. Its memory is
bounded (MAX_POINTS, MAX_TABLES x MAX_ROWS per grouping, MAX_GROUPINGS) and, being
allocated by the agent's own code, is counted as memtop's own traced memory like the rest.

A tracing session ends when tracing stops or restarts (a program may do either): its
history is dropped then, so a viewer never mixes numbers of two sessions. An object
allocated at the start of a session marks it, as in lifecycle.py: tracemalloc forgets every
trace when tracing stops.
"""

import array
import binascii
import collections
import os
import time
import tracemalloc

from . import rowkeys

MAX_POINTS = 1200  # memory points: 20 minutes at one a second
POINT_SPACING = 1.0  # without a viewer
VIEWER_SPACING = 0.2  # at a viewer's refreshes
MAX_TABLES = 30  # tables per grouping: the viewer's per-row trend length
MAX_ROWS = 100  # rows kept per table, the largest first
MAX_GROUPINGS = 4
# The marker of a session of the byte sampler: tracemalloc's state does not end it.
SAMPLED = "sampled"
_POINT_FIELDS = ("traced_current", "tracemalloc_memory", "memtop_traced", "memtop_residue")
_WIDTH = 2 + len(_POINT_FIELDS)


class Timeline:
    """Memory points and recent tables of the current tracing session."""

    def __init__(self):
        self.spacing = POINT_SPACING
        self.session = None  # an id, new for every tracing session the agent sees
        self.since = None  # when the session started, if known (the agent started it)
        self.begun = 0.0  # when the agent first saw the session
        self._marker = None  # None: no session; False: one the agent cannot mark
        # Points flat in one array of doubles, _WIDTH per point: a tuple per point would
        # cost seven times as much in the program.
        self.points = array.array("d")
        # grouping config -> deque of (sample id, table time, keys, array of sizes)
        self.tables = collections.OrderedDict()
        # One copy of each key the tables hold: every read builds its keys anew, and 30
        # tables would otherwise keep 30 copies of each (and pin the reads' memory).
        self._keys = {}
        self._recorded = 0

    def begin(self, since=None, sampled=False):
        """A new session starts now (`since`: when tracing started, if known); a `sampled`
        one lasts until the agent ends it, whatever tracemalloc does."""
        self._forget()
        now = time.time()
        self.session = binascii.hexlify(os.urandom(6)).decode("ascii")
        self.since = since
        self.begun = since if since is not None else now
        if sampled:
            self._marker = SAMPLED
            return
        marker = object()
        traced = tracemalloc.is_tracing() and tracemalloc.get_object_traceback(marker)
        self._marker = marker if traced else False

    def follow(self):
        """Notice a session that ended or began since the last call; True when one did."""
        marker = self._marker
        if marker is SAMPLED:
            return False
        tracing = tracemalloc.is_tracing()
        if marker is None:
            if not tracing:
                return False
            self.begin()
            return True
        if tracing and (marker is False or tracemalloc.get_object_traceback(marker) is not None):
            return False
        self._forget()
        if tracing:
            self.begin()
        return True

    def end(self):
        """The agent ended the session (a switch of mode): its history goes with it."""
        self._forget()

    def _forget(self):
        self.session = self.since = None
        self._marker = None
        del self.points[:]
        self.tables.clear()
        self._keys = {}

    def record_point(self, totals, rss, now=None, spacing=None):
        """Add the memory account of now, `spacing` (default: self.spacing) after the last."""
        if self.session is None or not totals.get("tracing"):
            return
        now = time.time() if now is None else now
        if now - self.last_point_time() < (spacing or self.spacing):
            return
        self.points.append(now)
        self.points.append(-1.0 if rss is None else float(rss))
        for name in _POINT_FIELDS:
            self.points.append(float(totals[name]))
        if len(self.points) > (MAX_POINTS + MAX_POINTS // 8) * _WIDTH:
            del self.points[: len(self.points) - MAX_POINTS * _WIDTH]

    def last_point_time(self):
        """When the last point was recorded (0 without one)."""
        return self.points[-_WIDTH] if self.points else 0.0

    def point_count(self):
        """How many points the history holds."""
        return len(self.points) // _WIDTH

    def record_rows(self, config, sample, rows):
        """Remember a table's rows (collector.rank's, largest first) for one grouping."""
        if self.session is None or sample.time < self.begun:
            return  # read before this session began: its rows belong to the last one
        tables = self.tables.get(config)
        if tables is None:
            if len(self.tables) >= MAX_GROUPINGS:
                self.tables.popitem(last=False)
            tables = self.tables[config] = collections.deque(maxlen=MAX_TABLES)
        else:
            self.tables.move_to_end(config)
        sizes = {row[0]: row[1] for row in rows}
        if tables and tables[-1][0] == sample.id:
            # Another viewer's table of the same read (another sort or limit): merge.
            _, _, keys, old = tables.pop()
            for at, key in enumerate(keys):
                sizes.setdefault(key, old[at])
        ranked = sorted(sizes.items(), key=lambda item: item[1], reverse=True)[:MAX_ROWS]
        keys = tuple(self._key(key) for key, _ in ranked)
        tables.append((sample.id, sample.time, keys, array.array("q", [s for _, s in ranked])))
        self._recorded += 1
        if self._recorded % MAX_TABLES == 0:
            self._keys = {key: key for held in self.tables.values() for t in held for key in t[2]}

    def _key(self, key):
        """The timeline's own copy of a row key."""
        found = self._keys.get(key)
        if found is None:
            found = self._keys[key] = _copy(key)
        return found

    def started_before(self, sample):
        """True when `sample` was read before the current session began (a restart lies
        between it and now)."""
        return self.session is None or sample.time < self.begun

    def reply(self, config):
        """The wire form of the history for one grouping (keys listed once)."""
        group_by = config[0]
        start = max(0, len(self.points) - MAX_POINTS * _WIDTH)
        index = {}
        wire_keys = []
        tables = []
        for sample_id, when, keys, sizes in self.tables.get(config, ()):
            rows = []
            for position, key in enumerate(keys):
                at = index.get(key)
                if at is None:
                    at = index[key] = len(wire_keys)
                    wire_keys.append(rowkeys.history_key(key, group_by))
                rows.append([at, sizes[position]])
            tables.append({"id": sample_id, "time": when, "rows": rows})
        return {
            "session": self.session,
            "since": self.since,
            "points": [
                _point_out(self.points[i : i + _WIDTH])
                for i in range(start, len(self.points), _WIDTH)
            ],
            "point_fields": ["time", "rss", *_POINT_FIELDS],
            "keys": wire_keys,
            "tables": tables,
        }


def _point_out(values):
    """One point on the wire: its time, then whole bytes (rss null when unknown)."""
    out = [values[0]] + [int(v) for v in values[1:]]
    if out[1] < 0:
        out[1] = None
    return out


def _copy(key):
    """A key built anew: a filename, a (filename, lineno) frame, or a traceback of frames."""
    if isinstance(key, str):
        return key
    if isinstance(key[0], str):
        return (key[0], key[1] + 0)
    return tuple([(filename, lineno + 0) for filename, lineno in key])
