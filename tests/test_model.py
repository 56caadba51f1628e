"""The pure model: rows from replies, JSON lines, history, trends and verdicts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from memtop.history import History, judge_growth, seed_from_reply
from memtop.json_lines import refresh_json
from memtop.model import Frame, Query, refresh_from_reply, row_key


def reply(rows: list[dict], sample_id: int = 1, traced: int = 1000) -> dict:
    return {
        "totals": {
            "traced_current": traced,
            "traced_peak": traced * 2,
            "tracemalloc_memory": 50,
            "nframe": 4,
            "memtop_traced": 7,
            "memtop_residue": 3,
        },
        "sample": {
            "id": sample_id,
            "time": 100.0,
            "age": 0.5,
            "fresh": True,
            "pause_ms": 3.0,
            "next_in": 0.0,
            "budget": 0.05,
            "traced_blocks": 12,
            "work_ms": 3.5,
        },
        "rows": rows,
        "total_rows": len(rows),
        "baseline_time": None,
    }


ROW = {
    "filename": "/app/cache.py",
    "lineno": 42,
    "size": 1000,
    "count": 10,
    "size_diff": 100,
    "count_diff": 1,
    "source": "self._items.append(item)",
    "traceback": [
        {"filename": "/app/main.py", "lineno": 10, "source": "main()"},
        {"filename": "/app/cache.py", "lineno": 42, "source": "x"},
    ],
}


def test_row_keys_are_stable_and_distinct_per_grouping() -> None:
    frames = (Frame("/a.py", 1), Frame("/b.py", 2))
    assert row_key("lineno", "/b.py", 2, frames) == "/b.py:2"
    assert row_key("filename", "/b.py", None, frames) == "/b.py"
    assert row_key("traceback", "/b.py", 2, frames) == "/b.py:2 <- /a.py:1"


def test_refresh_from_reply_combines_agent_and_procinfo() -> None:
    sample = refresh_from_reply(7, 123.0, Query(), reply([ROW]), rss=5000, uss=4000)
    assert sample.pid == 7 and sample.rss == 5000 and sample.uss == 4000
    assert sample.untraced == 5000 - 1000 - 50 - 3  # less traced, the tracer and memtop's
    assert sample.traced_blocks == 12 and sample.work_ms == 3.5
    row = sample.rows[0]
    assert row.key == "/app/cache.py:42" and row.average == 100.0
    assert row.traceback[0] == Frame("/app/main.py", 10, "main()")


def test_untraced_is_unknown_without_rss_and_never_negative() -> None:
    assert refresh_from_reply(1, 0.0, Query(), reply([]), rss=None, uss=None).untraced is None
    over = refresh_from_reply(1, 0.0, Query(), reply([], traced=9000), rss=10, uss=None)
    assert over.untraced == 0


def test_json_line_has_exactly_the_documented_row_fields() -> None:
    data = refresh_json(refresh_from_reply(7, 123.0, Query(), reply([ROW]), rss=5000, uss=None))
    for name in (
        "pid",
        "time",
        "group_by",
        "cumulative",
        "rss",
        "uss",
        "traced_current",
        "traced_peak",
        "tracemalloc_memory",
        "traced_blocks",
        "nframe",
        "pause_ms",
        "rows",
    ):
        assert name in data
    assert data["uss"] is None
    row = data["rows"][0]
    documented = {
        "key",
        "filename",
        "lineno",
        "size",
        "count",
        "size_diff",
        "count_diff",
        "source",
        "traceback",
    }
    added = {"growth_rate", "suspect", "suspect_confidence"}  # leak hunting, additive
    modes = {"size_error", "count_error"}  # DESIGN.md §7 Modes: 0 in exact mode
    assert set(row) == documented | added | modes
    assert row["size_error"] == 0 and row["count_error"] == 0
    assert data["mode"] == "exact" and data["sample_rate"] is None
    assert row["growth_rate"] is None and row["suspect"] is False
    assert row["traceback"] == [
        {"filename": "/app/main.py", "lineno": 10},
        {"filename": "/app/cache.py", "lineno": 42},
    ]


def test_history_records_trend_points_only_for_new_tables() -> None:
    history = History()
    row = dict(ROW)
    for sample_id, size in [(1, 100), (1, 100), (2, 150), (3, 90)]:
        row["size"] = size
        sample = refresh_from_reply(1, float(sample_id), Query(), reply([row], sample_id), 10, None)
        history.add(sample)
    assert history.trend("/app/cache.py:42") == (100, 150, 90)
    assert len(history.points) == 4


def test_history_trends_restart_when_the_grouping_changes() -> None:
    history = History()
    history.add(refresh_from_reply(1, 1.0, Query(), reply([ROW], 1), 10, None))
    other = Query(group_by="filename")
    history.add(refresh_from_reply(1, 2.0, other, reply([dict(ROW, lineno=None)], 2), 10, None))
    assert history.trend("/app/cache.py:42") == ()
    assert history.trend("/app/cache.py") == (1000,)


def steady(start: int, step: int, n: int = 8, every: float = 1.0) -> list[tuple[float, int]]:
    return [(i * every, start + i * step) for i in range(n)]


def test_steady_growth_is_a_suspect_with_its_rate() -> None:
    suspect = judge_growth(steady(10_000, 2_000))
    assert suspect is not None
    assert abs(suspect.rate - 120_000) < 1  # 2000 B/s
    assert 0.6 < suspect.confidence <= 1.0 and suspect.points == 8


def test_a_single_spike_is_not_a_suspect() -> None:
    points = [(float(i), 10_000 if i < 4 else 500_000) for i in range(8)]
    assert judge_growth(points) is None


def test_shrinking_flat_noisy_and_short_series_are_not_suspects() -> None:
    assert judge_growth(steady(100_000, -2_000)) is None
    assert judge_growth(steady(100_000, 0)) is None
    noisy = [(float(i), 50_000 + (3_000 if i % 2 else -3_000)) for i in range(10)]
    assert judge_growth(noisy) is None
    assert judge_growth(steady(10_000, 2_000, n=4)) is None
    assert judge_growth(steady(10_000, 10)) is None  # grows by less than 1 KiB in all


def test_more_history_means_more_confidence() -> None:
    short, long = judge_growth(steady(0, 4096, n=5)), judge_growth(steady(0, 4096, n=12))
    assert short is not None and long is not None and long.confidence > short.confidence


def test_history_finds_the_growing_row_and_reports_it_in_json() -> None:
    history = History()
    for i in range(8):
        leak = dict(ROW, size=10_000 + i * 5_000)
        flat = dict(ROW, lineno=7, size=90_000)
        sample = refresh_from_reply(1, float(i), Query(), reply([flat, leak], i + 1), 10, None)
        # the table's time drives the rate
        sample = replace(sample, table=replace(sample.table, time=float(i)))
        history.add(sample)
    assert set(history.suspects()) == {"/app/cache.py:42"}
    data = refresh_json(sample, history)
    rows = {row["key"]: row for row in data["rows"]}
    assert rows["/app/cache.py:42"]["suspect"] is True
    assert abs(rows["/app/cache.py:42"]["growth_rate"] - 300_000) < 1
    assert rows["/app/cache.py:7"]["suspect"] is False
    assert rows["/app/cache.py:7"]["growth_rate"] == 0.0


def test_growth_that_stopped_is_no_longer_a_suspect() -> None:
    ramp = steady(10_000, 4_000, n=20)
    flat = [(20.0 + i, ramp[-1][1]) for i in range(10)]
    assert judge_growth(ramp) is not None
    assert judge_growth(ramp + flat) is None


def history_reply(group_by: str, session: str = "s1") -> dict:
    """An agent's `history` reply: two points, two tables of one row."""
    key: dict[str, Any] = {
        "filename": "/app/cache.py",
        "lineno": 42 if group_by != "filename" else None,
    }
    if group_by == "traceback":
        key["traceback"] = [
            {"filename": "/app/main.py", "lineno": 10},
            {"filename": "/app/cache.py", "lineno": 42},
        ]
    return {
        "session": session,
        "since": 1.0,
        "point_fields": ["time", "rss", "traced_current", "tracemalloc_memory",
                         "memtop_traced", "memtop_residue"],
        "points": [[1.0, 10, 5, 1, 0, 0], [2.0, None, 6, 1, 0, 0]],
        "keys": [key],
        "tables": [{"id": 1, "time": 1.0, "rows": [[0, 100]]},
                   {"id": 2, "time": 2.0, "rows": [[0, 150]]}],
    }  # fmt: skip


def test_a_seed_names_rows_as_the_top_reply_does() -> None:
    for group_by in ("lineno", "filename", "traceback"):
        query = Query(group_by=group_by)
        seed = seed_from_reply(query, history_reply(group_by))
        assert seed is not None
        row = refresh_from_reply(1, 3.0, query, reply([ROW], 3), 10, None).rows[0]
        history = History()
        history.seed(seed)
        assert history.trend(row.key) == (100, 150), group_by
        assert [p.rss for p in history.points] == [10, None]


def test_a_new_grouping_takes_the_agents_trends_and_only_newer_points() -> None:
    history = History()
    history.add(refresh_from_reply(1, 1.5, Query(), reply([ROW], 1), 10, None))
    assert history.trend("/app/cache.py:42") == (1000,)
    other = Query(group_by="filename")
    history.seed(seed_from_reply(other, history_reply("filename")))
    assert [p.time for p in history.points] == [1.5, 2.0]  # the agent's older point is not
    history.add(refresh_from_reply(1, 3.0, other, reply([dict(ROW, lineno=None)], 1), 10, None))
    assert history.trend("/app/cache.py") == (100, 150, 1000)


def test_a_seed_of_another_tracing_session_is_not_mixed_in() -> None:
    history = History()
    history.seed(seed_from_reply(Query(), history_reply("lineno", "s1")))
    history.seed(seed_from_reply(Query(), history_reply("lineno", "s2")))
    assert history.session == "s1" and len(history.points) == 2
    assert seed_from_reply(Query(), dict(history_reply("lineno"), session=None)) is None
