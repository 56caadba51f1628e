"""The agent's grouping equals tracemalloc's own statistics() and compare_to() on the same
traces, for every grouping, with and without cumulative, filters and its own traces."""

from __future__ import annotations

import _tracemalloc
import gc
import tracemalloc
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from memtop.agent import collector

AGENT_FILES = tracemalloc.Filter(False, collector._AGENT_DIR + "/*", all_frames=True)
HUGE = 10**9


def recurse(depth: int, n: int) -> list[bytearray]:
    if depth == 0:
        return [bytearray(64 + i % 7) for i in range(n)]
    return recurse(depth - 1, n)


def workload() -> list[object]:
    """Allocations of several sizes, on several lines, through recursion (repeated frames)."""
    return [
        [str(i) * 3 for i in range(500)],
        recurse(6, 200),
        {i: (i, i) for i in range(300)},
        [bytes(2000) for _ in range(20)],
    ]


@pytest.fixture(params=[1, 4, 12], ids=lambda n: f"nframe{n}")
def tracing(request: pytest.FixtureRequest) -> Iterator[int]:
    tracemalloc.start(request.param)
    try:
        yield request.param
    finally:
        tracemalloc.stop()


def expected_key(stat: tracemalloc.Statistic | tracemalloc.StatisticDiff, group_by: str) -> object:
    frames = [(f.filename, f.lineno) for f in stat.traceback]
    if group_by == "filename":
        return frames[0][0]
    if group_by == "lineno":
        return frames[0]
    return tuple(reversed(frames))  # raw order: most recent first


def ours(traces: Sequence[Any], group_by: str, cumulative: bool, include=(), exclude=()) -> dict:
    sample = collector.take_sample(1, read=lambda: traces)
    keep = collector.filename_filter(include, exclude)
    return collector.group(sample.by_traceback, group_by, cumulative, keep)


CASES = [
    ("lineno", False),
    ("lineno", True),
    ("filename", False),
    ("filename", True),
    ("traceback", False),
]


@pytest.mark.parametrize(("group_by", "cumulative"), CASES)
def test_statistics_equal_stdlib(tracing: int, group_by: str, cumulative: bool) -> None:
    keep = workload()
    traces = _tracemalloc._get_traces()
    snapshot = tracemalloc.Snapshot(traces, tracing).filter_traces([AGENT_FILES])
    expected = [
        (expected_key(s, group_by), s.size, s.count)
        for s in snapshot.statistics(group_by, cumulative)
    ]
    rows, total = collector.rank(ours(traces, group_by, cumulative), None, group_by, "size", HUGE)
    assert [(r[0], r[1], r[3]) for r in rows] == expected
    assert total == len(expected)
    assert len(expected) > 10
    del keep


@pytest.mark.parametrize(("group_by", "cumulative"), CASES)
def test_compare_to_equals_stdlib(tracing: int, group_by: str, cumulative: bool) -> None:
    first = workload()
    traces_before = _tracemalloc._get_traces()
    second = workload()
    del first[1], second[1]  # the recursion's rows vanish, the others grow
    traces_after = _tracemalloc._get_traces()
    before = tracemalloc.Snapshot(traces_before, tracing).filter_traces([AGENT_FILES])
    after = tracemalloc.Snapshot(traces_after, tracing).filter_traces([AGENT_FILES])
    expected = [
        (expected_key(s, group_by), s.size, s.size_diff, s.count, s.count_diff)
        for s in after.compare_to(before, group_by, cumulative)
    ]
    rows, _ = collector.rank(
        ours(traces_after, group_by, cumulative),
        ours(traces_before, group_by, cumulative),
        group_by,
        "size_diff",
        HUGE,
    )
    assert [r[:5] for r in rows] == expected
    assert any(r[2] > 0 for r in rows)
    if group_by != "filename":  # everything here is in one file, which only grows
        assert any(r[2] < 0 for r in rows)
    del first, second


def test_filters_match_tracemalloc_filter(tracing: int) -> None:
    keep = workload()
    traces = _tracemalloc._get_traces()
    this_file = __file__
    snapshot = tracemalloc.Snapshot(traces, tracing).filter_traces(
        [
            AGENT_FILES,
            tracemalloc.Filter(True, this_file),
            tracemalloc.Filter(True, "*/json/*"),
            tracemalloc.Filter(False, "*tracemalloc.py"),
        ]
    )
    expected = [(expected_key(s, "lineno"), s.size, s.count) for s in snapshot.statistics("lineno")]
    grouped = ours(
        traces, "lineno", False, include=(this_file, "*/json/*"), exclude=("*tracemalloc.py",)
    )
    rows, _ = collector.rank(grouped, None, "lineno", "size", HUGE)
    assert [(r[0], r[1], r[3]) for r in rows] == expected
    assert {r[0][0] for r in rows} <= {this_file} | {r[0][0] for r in rows if "/json/" in r[0][0]}
    del keep


def test_agent_traces_are_excluded_and_counted() -> None:
    tracemalloc.start(4)
    try:
        sampler_like = collector.take_sample(1)  # allocates from agent code, traced
        memo = [sampler_like]
        traces = _tracemalloc._get_traces()
        sample = collector.take_sample(2, read=lambda: traces)
    finally:
        tracemalloc.stop()
    assert sample.own_count > 0
    for tb in sample.by_traceback:
        assert not any(collector.is_agent_file(f) for f, _ in tb)
    del memo


def test_launcher_frames_belong_to_the_program() -> None:
    launcher = collector._AGENT_DIR + "/launch.py"
    assert not collector.is_agent_file(launcher)
    assert collector.is_agent_file(collector._AGENT_DIR + "/server.py")


def own_lines(by_traceback: dict) -> dict:
    """Only this file's live allocations: memory parked in CPython's free lists keeps the
    trace of its first owner, so other lines can drift between two reads."""
    return {tb: v for tb, v in by_traceback.items() if tb[0][0] == __file__}


def test_public_api_fallback_gives_the_same_sample(
    tracing: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep = workload()
    real = _tracemalloc._get_traces
    monkeypatch.delattr(_tracemalloc, "_get_traces")
    gc.disable()  # a collection between the two reads would change them
    try:
        slow = collector.take_sample(2)
        # Read right after, with nothing allocated in between outside agent code.
        fast = collector.take_sample(1, read=real)
    finally:
        gc.enable()
    assert own_lines(slow.by_traceback) == own_lines(fast.by_traceback)
    assert len(own_lines(fast.by_traceback)) >= 4
    del keep


def test_unexpected_trace_shape_falls_back(tracing: int, monkeypatch: pytest.MonkeyPatch) -> None:
    keep = workload()
    real = _tracemalloc._get_traces
    monkeypatch.setattr(_tracemalloc, "_get_traces", lambda: [(0, 10, (("x", 1),))])
    gc.disable()
    try:
        slow = collector.take_sample(2)
        fast = collector.take_sample(1, read=real)
    finally:
        gc.enable()
    assert own_lines(slow.by_traceback) == own_lines(fast.by_traceback)
    assert len(own_lines(fast.by_traceback)) >= 4
    assert (("x", 1),) not in slow.by_traceback
    del keep


def test_tracebacks_of_a_lineno_row_are_those_ending_there(tracing: int) -> None:
    keep = workload()
    traces = _tracemalloc._get_traces()
    sample = collector.take_sample(1, read=lambda: traces)
    grouped = collector.group(sample.by_traceback, "lineno", False)
    key = max(grouped, key=lambda k: grouped[k][0])
    found = collector.tracebacks_of(sample.by_traceback, "lineno", False, key, limit=HUGE)
    assert found and all(tb[0] == key for tb, _, _ in found)
    assert sum(size for _, size, _ in found) == grouped[key][0]
    assert [size for _, size, _ in found] == sorted((size for _, size, _ in found), reverse=True)
    del keep


def test_vanished_rows_report_size_zero() -> None:
    previous = {("a.py", 1): [100, 2, (("a.py", 1),), 100]}
    rows, total = collector.rank({}, previous, "lineno", "size_diff", 10)
    assert rows == [(("a.py", 1), 0, -100, 0, -2, (("a.py", 1),))]
    assert total == 1


def test_first_refresh_has_zero_diffs() -> None:
    current = {("a.py", 1): [100, 2, (("a.py", 1),), 100]}
    rows, _ = collector.rank(current, None, "lineno", "size", 10)
    assert rows[0][2] == 0 and rows[0][4] == 0


def test_limit_keeps_the_largest_rows() -> None:
    current = {("a.py", n): [n * 10, 1, (("a.py", n),), n * 10] for n in range(1, 101)}
    rows, total = collector.rank(current, None, "lineno", "size", 5)
    assert [r[1] for r in rows] == [1000, 990, 980, 970, 960]
    assert total == 100
