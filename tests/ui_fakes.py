"""A scripted data source for the TUI tests: deterministic samples, every failure on demand."""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from textual.screen import Screen
from textual.widget import Widget

from memtop.ending import Ending
from memtop.errors import AgentError, ConnectionLost
from memtop.history import MIB, History
from memtop.leaks import ChainStep, Origins, OriginSite, ReferrerChain, TypeRow, TypesTable
from memtop.model import Frame, Query, Refresh, Row, TableInfo, Tracing
from memtop.snapfile import SavedSnapshot
from memtop.source import TargetInfo, TracebackEntry, switched_text
from memtop.ui.app import MemtopApp

S = TypeVar("S", bound=Screen[Any])

T0 = 1_764_000_000.0  # the fake's "now" at its first refresh
RATE = 256 * 1024  # the fake's sample rate in sampled mode
CWD = "/srv/app"


MAIN = Frame(f"{CWD}/main.py", 10, "serve_forever(app)")


@dataclass(frozen=True)
class Site:
    """One allocating line of the fake program, with its caller."""

    filename: str
    lineno: int
    source: str
    size: int
    count: int
    growth: int  # bytes per refresh
    caller: Frame = MAIN


SITES = (
    Site(f"{CWD}/app/cache.py", 42, "self._items.append(item)", 12 * MIB, 100_000, 120_000),
    Site(f"{CWD}/app/sessions.py", 17, "session = Session(user_id, token)", 5 * MIB, 40_000, 9_000),
    Site(f"{CWD}/app/render.py", 88, "return template.render(**context)", 3 * MIB, 2_048, 0),
    Site(
        "/usr/lib/python3.12/json/decoder.py",
        353,
        "obj, end = self.scan_once(s, idx)",
        2 * MIB,
        30_000,
        -4_000,
    ),
    Site("<frozen importlib._bootstrap_external>", 729, "", 1 * MIB, 9_000, 0),
    Site("<unknown>", 0, "", 300_000, 12, 0),
    *(
        Site(
            f"{CWD}/app/handlers/h{i:02d}.py",
            10 + i,
            f"payload = parse(chunk_{i})",
            (200 - 7 * i) * 1024,
            100 + i,
            0,
        )
        for i in range(24)
    ),
)


@dataclass(frozen=True)
class LiveType:
    """One type of the fake program's heap, as the gc would count it."""

    name: str
    count: int
    each: int  # shallow bytes per object
    growth: int  # objects per walk


TYPES = (
    LiveType("dict", 120_000, 232, 180),
    LiveType("app.sessions.Session", 4_000, 56, 90),
    LiveType("list", 30_000, 88, 0),
    LiveType("function", 9_000, 136, 0),
    LiveType("app.cache.Item", 2_500, 48, 60),
    LiveType("tuple", 50_000, 64, -20),
    *(LiveType(f"app.models.Model{i:02d}", 500 + 10 * i, 48, 0) for i in range(20)),
)
UNTRACED_NOTE = (
    "objects allocated before tracing started, or reusing memory from CPython's free lists "
    "(dicts, lists, tuples), have no allocation traceback"
)
SESSION_LINE = Frame(f"{CWD}/app/sessions.py", 17, "session = Session(user_id, token)")
LOGIN = Frame(f"{CWD}/app/views.py", 31, "session = store.login(user)")

HOSTILE = Site(
    f"{CWD}/app/evil\x1b[31m[bold]red.py",
    3,
    "print('\x1b]0;pwned\x07 [b]not bold[/b]')",
    8 * MIB,
    10,
    0,
)


class FakeSource:
    """Implements memtop.source.Source with made-up but consistent numbers."""

    def __init__(
        self,
        sites: tuple[Site, ...] = SITES,
        nframe: int = 4,
        tracing_owner: str = "agent",
        mode: str = "exact",
    ) -> None:
        self.sites = sites
        self.nframe = nframe
        # exact, or sampled at RATE: rows then carry error bars (a tenth of their size)
        self.mode = mode
        self.info = TargetInfo(
            pid=4242,
            python="3.12.1",
            cmdline="python app.py --port 8000",
            how="run",
            tracing_owner=tracing_owner,
            nframe=nframe,
            log_path="/tmp/memtop-1000/app.log",
            started=T0 - 3723.0,
            mode=mode,
            sample_rate=RATE if mode == "sampled" else None,
        )
        self.refreshes = 0
        self.queries: list[Query] = []
        self.calls: list[str] = []
        self.fail: Exception | None = None  # raised by refreshes until cleared
        self.ended: Ending | None = None
        self.reconnect_fails = 0
        self.stretched = False
        self.types_list = TYPES
        self.walks = 0
        self.tracing: Tracing | None = None  # the tracing session each table names
        self.restarted = False  # tracing restarted since the baseline (as the agent says)
        # (time, walk number) of the previous types walk, and of the marked one
        self._looked: tuple[float, int] | None = None
        self._mark: tuple[float, int] | None = None

    # --- Source ------------------------------------------------------------------------

    def resume(self, query: Query) -> None:
        return None

    def refresh(self, query: Query, max_age: float) -> Refresh:
        self.queries.append(query)
        if self.fail is not None:
            raise self.fail
        self.refreshes += 1
        return self.sample(query, self.refreshes)

    def tracebacks(self, query: Query, row: Row, limit: int = 10) -> list[TracebackEntry]:
        self.calls.append(f"tracebacks {row.key}")
        if self.fail is not None:
            raise self.fail
        return [
            TracebackEntry(row.size * 3 // 4, row.count * 3 // 4, row.traceback),
            TracebackEntry(
                row.size // 4,
                row.count // 4,
                (Frame(f"{CWD}/worker.py", 55, "run_batch(jobs)"), *row.traceback[-1:]),
            ),
        ][:limit]

    def set_mode(self, mode: str, rate: int | None = None) -> str:
        """As the agent does: the mode changes, the rows become (or stop being) estimates."""
        self.calls.append(f"mode {mode}")
        if self.fail is not None:
            raise self.fail
        self.mode = mode
        sample_rate = (rate or RATE) if mode == "sampled" else None
        self.info = dataclasses.replace(self.info, mode=mode, sample_rate=sample_rate)
        return switched_text(mode, sample_rate)

    def set_baseline(self) -> None:
        self.calls.append("baseline set")

    def clear_baseline(self) -> None:
        self.calls.append("baseline clear")

    def reset_peak(self) -> None:
        self.calls.append("reset peak")
        if self.fail is not None:
            raise self.fail

    def types(self, mark: bool = False, limit: int = 100) -> TypesTable:
        """Each walk the types grow by their `growth`; Δ against the mark, else the
        previous walk (none on the first: like the agent, Δ 0)."""
        self.calls.append(f"types mark={mark}")
        if self.fail is not None:
            raise self.fail
        self.walks += 1
        now = T0 + 100.0 + self.walks
        against = self._mark or self._looked
        walks = self.walks - against[1] if against else 0
        rows = []
        for kind in self.types_list:
            count = kind.count + kind.growth * self.walks
            grown = kind.growth * walks
            rows.append(TypeRow(kind.name, count, count * kind.each, grown, grown * kind.each))
        rows.sort(key=lambda r: (r.size_diff, r.count_diff, r.size), reverse=True)
        self._looked = (now, self.walks)
        if mark:
            self._mark = (now, self.walks)
        return TypesTable(
            rows=tuple(rows[:limit]),
            objects=sum(r.count for r in rows),
            total_types=len(rows),
            since=against[0] if against else None,
            baseline=self._mark[0] if self._mark else None,
            cost_ms=23.4,
        )

    def origins(self, type_name: str, sample: int = 200, limit: int = 10) -> Origins:
        self.calls.append(f"origins {type_name}")
        if self.fail is not None:
            raise self.fail
        if type_name == "dict":  # some from free lists: no traceback
            site = OriginSite(120, (MAIN, Frame(f"{CWD}/app/render.py", 88, "ctx = dict(c)")))
            return Origins(type_name, sample, sample - 120, UNTRACED_NOTE, (site,))
        sites = (
            OriginSite(sample * 3 // 4, (MAIN, LOGIN, SESSION_LINE)),
            OriginSite(sample // 4, (Frame(f"{CWD}/worker.py", 55, "run_batch(jobs)"), LOGIN)),
        )
        return Origins(type_name, sample, 0, "", sites[:limit])

    def referrers(
        self, type_name: str | None = None, row: Row | None = None, timeout: float = 2.0
    ) -> ReferrerChain:
        self.calls.append(f"referrers {type_name or (row.key if row else None)}")
        if self.fail is not None:
            raise self.fail
        if type_name is None and row is not None and row.key != f"{SESSION_LINE.filename}:17":
            reason = "no object the gc tracks was found with that allocation line"
            return ReferrerChain(
                False, f"an object allocated at {row.key}", (), False, (), "", reason
            )
        steps = (
            ChainStep("dict", "global SESSIONS", "module app.sessions"),
            ChainStep("app.sessions.SessionStore", "._sessions", ""),
            ChainStep("dict", "['8a9f03c2']", ""),
            ChainStep(type_name or "app.sessions.Session", "", ""),
        )
        allocated = (Frame(MAIN.filename, MAIN.lineno), Frame(SESSION_LINE.filename, 17))
        return ReferrerChain(True, "the newest one", steps, False, allocated, "", "")

    def snapshot(self) -> SavedSnapshot:
        self.calls.append("snapshot")
        if self.fail is not None:
            raise self.fail
        meta = {
            "pid": self.info.pid,
            "python": self.info.python,
            "cmdline": self.info.cmdline,
            "time": T0,
            "nframe": self.nframe,
            "tracing_owner": self.info.tracing_owner,
            "traced_current": sum(site.size for site in self.sites),
            "traced_peak": sum(site.size for site in self.sites) + 4 * MIB,
        }
        snapshot = SavedSnapshot(meta)
        for site in self.sites:
            caller = site.caller
            tb = ((site.filename, site.lineno), (caller.filename, caller.lineno))
            snapshot.entries.append((tb, max(1, site.size // site.count), site.count))
            snapshot.sources[(site.filename, site.lineno)] = site.source
            snapshot.sources[(caller.filename, caller.lineno)] = caller.source
        return snapshot

    def exit_status(self) -> Ending | None:
        return self.ended

    def reconnect(self) -> None:
        self.calls.append("reconnect")
        if self.reconnect_fails:
            self.reconnect_fails -= 1
            raise ConnectionLost("cannot connect to the agent")
        self.fail = None

    def close(self, keep_agent: bool = False) -> Ending | None:
        self.calls.append(f"close keep_agent={keep_agent}")
        return None

    # --- what the agent would answer -------------------------------------------------

    def sample(self, query: Query, n: int) -> Refresh:
        rows = self.rows(query, n)
        total = sum(self._size(s, n) for s in self.sites)
        table = TableInfo(
            sample_id=n,
            time=T0 + n - (8.0 if self.stretched else 0.1),
            age=8.0 if self.stretched else 0.1,
            fresh=not self.stretched,
            pause_ms=12.5,
            next_in=3.0 if self.stretched else 0.0,
            budget=0.05,
        )
        return Refresh(
            pid=self.info.pid,
            time=T0 + n,
            query=query,
            rss=total + 30 * MIB + n * 50_000,
            uss=total + 26 * MIB,
            traced_current=total,
            traced_peak=total + 4 * MIB,
            tracemalloc_memory=8 * MIB,
            traced_blocks=sum(s.count for s in self.sites),
            nframe=self.nframe,
            work_ms=12.5,
            table=table,
            rows=tuple(rows[: query.limit]),
            total_rows=len(rows),
            baseline_time=T0 if query.compare == "baseline" else None,
            tracing=self.tracing,
            baseline_restarted=self.restarted and query.compare == "baseline",
            mode=self.mode,
            sample_rate=self.info.sample_rate,
        )

    def _size(self, site: Site, n: int) -> int:
        return max(0, site.size + site.growth * n)

    def rows(self, query: Query, n: int) -> list[Row]:
        sites = [s for s in self.sites if self._kept(s, query)]
        since = 1 if query.compare == "previous" else n  # baseline: taken at refresh 0
        grouped: dict[str, Row] = {}
        for site in sites:
            frames = (site.caller, Frame(site.filename, site.lineno, site.source))
            size = self._size(site, n)
            diff = 0 if n == 1 and query.compare == "previous" else site.growth * since
            count_diff = diff // 100
            if query.group_by == "filename":
                key, lineno, source = site.filename, None, ""
            elif query.group_by == "traceback":
                caller = site.caller
                key = f"{site.filename}:{site.lineno} <- {caller.filename}:{caller.lineno}"
                lineno, source = site.lineno, site.source
            else:
                key, lineno, source = f"{site.filename}:{site.lineno}", site.lineno, site.source
            old = grouped.get(key)
            if old is not None:
                size, diff = size + old.size, diff + old.size_diff
            count = site.count + site.growth // 100 * n
            error = size // 10 if self.mode == "sampled" else 0
            grouped[key] = Row(
                key,
                site.filename,
                lineno,
                size,
                count,
                diff,
                count_diff,
                source,
                frames,
                size_error=error,
                count_error=count // 10 if error else 0,
            )
        order = {
            "size": lambda r: r.size,
            "count": lambda r: r.count,
            "size_diff": lambda r: abs(r.size_diff),
            "count_diff": lambda r: abs(r.count_diff),
            "growth": lambda r: r.size_diff,
        }[query.sort]
        return sorted(grouped.values(), key=lambda r: (-order(r), r.key))

    @staticmethod
    def _kept(site: Site, query: Query) -> bool:
        name = site.filename
        if query.include and not any(fnmatch.fnmatch(name, p) for p in query.include):
            return False
        return not any(fnmatch.fnmatch(name, p) for p in query.exclude)


def filled_history(source: FakeSource, query: Query, points: int = 60) -> History:
    """A History as if the viewer had been watching for `points` refreshes."""
    history = History()
    for n in range(1, points + 1):
        history.add(source.sample(query, n))
    source.refreshes = points  # the viewer's first refresh comes next
    return history


__all__ = [
    "CWD",
    "HOSTILE",
    "SITES",
    "T0",
    "TYPES",
    "UNTRACED_NOTE",
    "AgentError",
    "FakeSource",
    "Site",
    "filled_history",
    "settle",
    "until",
]


async def settle(pilot: Any) -> None:
    """Wait until no request to the source is under way and every message was handled."""
    app = pilot.app
    for _ in range(200):
        await app.workers.wait_for_complete()
        await pilot.pause()
        busy = app.refreshing or getattr(app.screen, "walking", False)
        if not any(w.is_running for w in app.workers) and not busy:
            await pilot.pause()
            return
    raise AssertionError("the app never settled")


async def until(pilot: Any, condition: Any, what: str, timeout: float = 20.0) -> None:
    """Let the app run until `condition()` holds (a message handled, a notice shown):
    on a loaded machine a worker's result can land after every worker finished."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.02)


# --- reading the screen -----------------------------------------------------------------


def lines_of(widget: Widget) -> list[str]:
    """The text of every line a widget of the line API shows."""
    return [widget.render_line(y).text for y in range(widget.size.height)]


def status(app: MemtopApp) -> str:
    return lines_of(app.status_line)[0]


def header(app: MemtopApp) -> str:
    return "\n".join(lines_of(app.header_bar))


def table_lines(app: MemtopApp) -> list[str]:
    return lines_of(app.table)


def screen_as(app: MemtopApp, kind: type[S]) -> S:
    """The screen on top, which must be a `kind`."""
    screen = app.screen
    assert isinstance(screen, kind), f"{type(screen).__name__} is on top, not {kind.__name__}"
    return screen


def told(app: MemtopApp) -> list[str]:
    """Every notification the app showed, oldest first."""
    return [n.message for n in app._notifications]
