"""A scripted data source for the TUI tests: deterministic samples, every failure on demand."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from memtop.errors import AgentError, ConnectionLost
from memtop.model import MIB, Frame, History, Query, Row, Sample, TableInfo
from memtop.source import TargetInfo, TracebackEntry

T0 = 1_764_000_000.0  # the fake's "now" at its first refresh
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
    ) -> None:
        self.sites = sites
        self.nframe = nframe
        self.info = TargetInfo(
            pid=4242,
            python="3.12.1",
            cmdline="python app.py --port 8000",
            how="run",
            tracing_owner=tracing_owner,
            nframe=nframe,
            log_path="/tmp/memtop-1000/app.log",
            started=T0 - 3723.0,
        )
        self.refreshes = 0
        self.queries: list[Query] = []
        self.calls: list[str] = []
        self.fail: Exception | None = None  # raised by refreshes until cleared
        self.ended: str | None = None
        self.reconnect_fails = 0
        self.stretched = False

    # --- Source ------------------------------------------------------------------------

    def refresh(self, query: Query, max_age: float) -> Sample:
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

    def set_baseline(self) -> None:
        self.calls.append("baseline set")

    def clear_baseline(self) -> None:
        self.calls.append("baseline clear")

    def reset_peak(self) -> None:
        self.calls.append("reset peak")
        if self.fail is not None:
            raise self.fail

    def exit_status(self) -> str | None:
        return self.ended

    def reconnect(self) -> None:
        self.calls.append("reconnect")
        if self.reconnect_fails:
            self.reconnect_fails -= 1
            raise ConnectionLost("cannot connect to the agent")
        self.fail = None

    def close(self, keep_agent: bool = False) -> str | None:
        self.calls.append(f"close keep_agent={keep_agent}")
        return None

    # --- what the agent would answer -------------------------------------------------

    def sample(self, query: Query, n: int) -> Sample:
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
        return Sample(
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
            pause_ms=12.5,
            table=table,
            rows=tuple(rows[: query.limit]),
            total_rows=len(rows),
            baseline_time=T0 if query.compare == "baseline" else None,
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
            grouped[key] = Row(
                key, site.filename, lineno, size, count, diff, count_diff, source, frames
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
    "AgentError",
    "FakeSource",
    "Site",
    "filled_history",
    "settle",
]


async def settle(pilot: Any) -> None:
    """Wait until no request to the source is under way and every message was handled."""
    app = pilot.app
    for _ in range(200):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not any(w.is_running for w in app.workers) and not app.refreshing:
            await pilot.pause()
            return
    raise AssertionError("the app never settled")
