"""A busy agent (its time budget spent) in the live view: a notice, then the answer once
the agent allows it, never an error screen or a crash."""

from __future__ import annotations

import time

from ui_fakes import CWD, T0, FakeSource, status

from memtop.errors import AgentBusy
from memtop.leaks import ReferrerChain, TypesTable
from memtop.model import Query, Refresh, Row
from memtop.ui.app import MemtopApp
from memtop.ui.referrers_panel import ReferrersPanel
from memtop.ui.types_screen import TypesScreen

WAIT = 1.5
MESSAGE = "a walk of the gc's objects waits for the agent's time budget: retry in 1.5 s"


class BusyFirst(FakeSource):
    """Answers each kind of request busy once, then as FakeSource does."""

    def __init__(self) -> None:
        super().__init__()
        self.told: set[str] = set()

    def _once(self, kind: str) -> None:
        if kind not in self.told:
            self.told.add(kind)
            raise AgentBusy(MESSAGE, WAIT)

    def refresh(self, query: Query, max_age: float) -> Refresh:
        self._once("refresh")
        return super().refresh(query, max_age)

    def types(self, mark: bool = False, limit: int = 100) -> TypesTable:
        self._once("types")
        return super().types(mark, limit)

    def referrers(
        self, type_name: str | None = None, row: Row | None = None, timeout: float = 2.0
    ) -> ReferrerChain:
        self._once("referrers")
        return super().referrers(type_name, row, timeout)


async def wait_until(pilot, predicate, what: str, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)
    return value


async def test_a_busy_refresh_is_a_notice_and_the_table_comes_when_the_agent_said() -> None:
    source = BusyFirst()
    app = MemtopApp(source, Query(), 1.0, clock=lambda: T0, cwd=CWD, autorefresh=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: "time budget" in status(app), "the notice")
        assert app.sample is None
        await wait_until(pilot, lambda: app.sample is not None, "the table after the wait")
        assert "time budget" not in status(app)


async def test_a_busy_types_walk_says_so_and_walks_when_the_agent_said() -> None:
    source = BusyFirst()
    app = MemtopApp(source, Query(), 1.0, clock=lambda: T0, cwd=CWD, autorefresh=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.sample is not None, "the first table")
        await pilot.press("o")
        screen = app.screen
        assert isinstance(screen, TypesScreen)
        notice = f"{MESSAGE}; walking again in {WAIT} s"
        await wait_until(
            pilot, lambda: notice in str(screen.query_one("#types-walk").render()), "the notice"
        )
        await wait_until(pilot, lambda: screen.table is not None, "the walk after the wait")
        await pilot.press("down", "w")
        panel = app.screen
        assert isinstance(panel, ReferrersPanel)
        await wait_until(pilot, lambda: panel.chain is not None, "the chain after the wait")
        assert source.told == {"refresh", "types", "referrers"}  # each was told busy once
