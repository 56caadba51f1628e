"""A viewer that leaves with the agent serving (`Q`) and a new one later: the agent keeps the
history of its tracing session, and the new viewer goes on from it, on real targets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import (
    TARGETS,
    Targets,
    marked_lines,
    memtop_cli,
    need_interpreter,
    run_commands,
    wait_for,
    wait_state,
)

from memtop.history import History
from memtop.model import Query
from memtop.source import LiveSource

LEAKY = TARGETS / "leaky.py"
pytestmark = pytest.mark.e2e


def leak_key(state: dict) -> str:
    return f"{LEAKY}:{marked_lines(LEAKY)['list_leak']}"


def watch(source: LiveSource, history: History, query: Query, until, what: str) -> None:
    """Refresh every 0.2 s into `history` until `until(history)` holds."""

    def step() -> bool:
        history.add(source.refresh(query, max_age=0.15))
        if until(history):
            return True
        time.sleep(0.2)
        return False

    wait_for(step, 60, what)


@pytest.mark.parametrize("minor", ["3.9", "3.13"])
def test_a_new_viewer_goes_on_with_the_trend_a_continuous_viewer_shows(
    targets: Targets, minor: str
) -> None:
    """After `Q`, a new viewer's first screen has the leaking line's trend, rate and
    suspect, and the memory chart, equal to what a viewer that never left shows."""
    program, state_path = targets.start("leaky.py", "list", python=need_interpreter(minor))
    state = wait_state(state_path)
    key = leak_key(state)
    query = Query()
    first = LiveSource(targets.connect(program), program.pid, "run", program)
    history = History()
    watch(
        first,
        history,
        query,
        lambda h: key in h.suspects() and h.points[-1].time - h.points[0].time > 3,
        "the leak to be a suspect",
    )
    first.close(keep_agent=True)

    resumed_source = LiveSource(targets.connect(program), program.pid, "run", program)
    resumed = History()
    resumed.seed(resumed_source.resume(query))
    # Before any refresh of its own, the new viewer reads what the first one read.
    assert resumed.trend(key) == history.trend(key)
    assert resumed.growth_rate(key) == history.growth_rate(key)
    assert resumed.growth_rate(key) > 0  # type: ignore[operator]
    assert set(resumed.suspects()) == set(history.suspects())
    # The memory chart goes on too: a point at each of the viewer's refreshes (0.2 s).
    assert len(resumed.points) >= len(history.points) - 2
    assert resumed.points[0].time <= history.points[0].time + 1.0

    # And from then on the two agree, refresh after refresh.
    for _ in range(3):
        sample = resumed_source.refresh(query, max_age=0.0)
        history.add(sample)
        resumed.add(sample)
        assert resumed.trend(key) == history.trend(key)
        assert resumed.growth_rate(key) == pytest.approx(history.growth_rate(key))
        assert resumed.suspects() == history.suspects()
        time.sleep(0.25)
    resumed_source.close()


@pytest.mark.parametrize("minor", ["3.9", "3.14"])
def test_a_viewer_never_mixes_two_tracing_sessions(targets: Targets, minor: str) -> None:
    """The program restarts tracing: the agent drops the old session's history, a new
    viewer starts from nothing, and a viewer watching through the restart starts over."""
    commands = targets.tmp / "commands"
    commands.touch()
    program, state_path = targets.start(
        "retracer.py", str(commands), python=need_interpreter(minor)
    )
    wait_state(state_path)
    query = Query()
    source = LiveSource(targets.connect(program), program.pid, "run", program)
    history = History()
    watch(source, history, query, lambda h: len(h.points) >= 3, "a few refreshes")
    before = history.session
    assert before is not None
    seed = LiveSource(targets.connect(program), program.pid, "run", program).resume(query)
    assert seed is not None and seed.session == before and seed.points

    run_commands(commands, state_path, "restart:4")
    sample = source.refresh(query, max_age=0.0)
    assert sample.tracing is not None and sample.tracing.session not in (None, before)
    history.add(sample)
    assert history.restarts == 1 and len(history.points) == 1
    # Δ columns never compare with a table of the last session.
    assert all(row.size_diff == 0 and row.count_diff == 0 for row in sample.rows)
    assert all(p.time >= sample.time for p in history.points)

    later = LiveSource(targets.connect(program), program.pid, "run", program).resume(query)
    assert later is not None and later.session == sample.tracing.session
    assert all(p.time > seed.points[-1].time for p in later.points)
    assert not any(t[1] <= seed.points[-1].time for t in later.tables)


def test_a_baseline_from_before_a_tracing_restart_is_flagged(targets: Targets) -> None:
    commands = targets.tmp / "commands"
    commands.touch()
    program, state_path = targets.start("retracer.py", str(commands))
    wait_state(state_path)
    query = Query(compare="baseline")
    source = LiveSource(targets.connect(program), program.pid, "run", program)
    source.set_baseline()
    assert source.refresh(query, max_age=0.0).baseline_restarted is False
    run_commands(commands, state_path, "restart:4")
    assert source.refresh(query, max_age=0.0).baseline_restarted is True
    source.set_baseline()
    assert source.refresh(query, max_age=0.0).baseline_restarted is False


def test_the_agent_history_of_many_rows_stays_under_its_cap() -> None:
    """Thousands of distinct rows over hundreds of tables and several groupings: the
    timeline keeps at most its tables, rows and groupings, and its memory stops growing."""
    import tracemalloc

    from memtop.agent import timeline as tl

    class Read:
        def __init__(self, number: int) -> None:
            self.id = number
            self.time = time.time()

    tracemalloc.start(1)
    try:
        keeper = tl.Timeline()
        keeper.begin(since=time.time() - 1)
        totals = {
            "tracing": True,
            "traced_current": 1,
            "tracemalloc_memory": 2,
            "memtop_traced": 3,
            "memtop_residue": 4,
        }
        used = []
        for number in range(1, 801):
            for grouping in range(tl.MAX_GROUPINGS):
                config = ("lineno", False, (), (f"g{grouping}",))
                rows = [
                    ((f"/app/module_{number}_{n}.py", n), 1000 + n, 0, 1, 0, None)
                    for n in range(300)
                ]
                keeper.record_rows(config, Read(number), rows)
            del rows
            for step in range(2):
                keeper.record_point(totals, 10, now=time.time() + 2 * number + step)
            if number in (400, 800):
                used.append(tracemalloc.get_traced_memory()[0])
        keeper.record_rows(
            ("filename", False, (), ()), Read(801), [(("/app/x.py", 1), 1, 0, 1, 0, None)]
        )
        assert len(keeper.tables) == tl.MAX_GROUPINGS  # the least recently used went
        assert ("lineno", False, (), ("g0",)) not in keeper.tables
        keeper.tables.popitem()
        for tables in keeper.tables.values():
            assert len(tables) == tl.MAX_TABLES
            assert all(len(keys) == tl.MAX_ROWS for _, _, keys, _ in tables)
        assert keeper.point_count() <= tl.MAX_POINTS + tl.MAX_POINTS // 8
        assert len(reply_points := keeper.reply(("x", False, (), ()))["points"]) == tl.MAX_POINTS
        assert reply_points[-1][1:] == [10, 1, 2, 3, 4]
        reply = keeper.reply(next(iter(keeper.tables)))
        assert len(reply["keys"]) <= tl.MAX_TABLES * tl.MAX_ROWS
        # Full since well before table 400: memory no longer grows with the tables seen.
        assert used[1] - used[0] < 64 * 1024, used
    finally:
        tracemalloc.stop()


def test_a_run_traces_from_the_start_and_says_nothing_is_missing(short_tmp: Path) -> None:
    """`memtop run` JSON names its tracing session, which started with the program: no
    warning that older memory is missing, in JSON or in the text view."""
    run = ("run", "--log", str(short_tmp / "log"), str(TARGETS / "leaky.py"))
    out = memtop_cli(*run[:1], "--json", "-n", "1", *run[1:], str(short_tmp / "a"), "list")
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stdout.splitlines()[0])
    assert line["sees_only_new"] is False
    assert isinstance(line["tracing_session"], str)
    assert line["tracing_since"] <= line["time"]
    text = memtop_cli(*run[:1], "-b", "-n", "1", *run[1:], str(short_tmp / "b"), "list")
    assert text.returncode == 0, text.stderr
    assert "tracing since" not in text.stdout and "warning:" not in text.stdout
