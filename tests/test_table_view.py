"""The table's layout of a refresh, computed once and purely (memtop.table_view): order,
trends, heat and suspects, read the same by the table and the header."""

from __future__ import annotations

from ui_fakes import FakeSource, filled_history

from memtop.history import History, Suspect
from memtop.model import Query, Row
from memtop.table_view import heat_level, suspect_order, table_view


def test_rows_keep_the_agents_order_with_ranks_trends_and_heat() -> None:
    source = FakeSource()
    history = filled_history(source, Query(), 10)
    sample = source.sample(Query(), 11)
    history.add(sample)
    view = table_view(sample, history)
    assert [shown.row for shown in view.rows] == list(sample.rows)
    assert [shown.rank for shown in view.rows] == list(range(1, len(sample.rows) + 1))
    first = view.rows[0]
    assert first.trend == history.trend(first.row.key) and len(first.trend) == 11
    assert first.heat == heat_level(first.row.size, sample.traced_current)


def test_suspects_first_puts_steady_growers_ahead_and_counts_them() -> None:
    source = FakeSource()
    history = filled_history(source, Query(), 30)
    sample = source.sample(Query(), 31)
    history.add(sample)
    suspects = history.suspects()
    assert suspects
    view = table_view(sample, history, suspects_first=True)
    count = view.suspect_count
    assert count == sum(1 for row in sample.rows if row.key in suspects)
    assert all(shown.suspect is not None for shown in view.rows[:count])
    assert all(shown.suspect is None for shown in view.rows[count:])


def test_a_first_refresh_has_no_suspects() -> None:
    sample = FakeSource().sample(Query(), 1)
    history = History()
    history.add(sample)
    view = table_view(sample, history, suspects_first=True)
    assert view.suspect_count == 0 and [s.row for s in view.rows] == list(sample.rows)


def test_heat_is_the_rows_share_of_traced_memory() -> None:
    assert heat_level(30, 100) == "hot"
    assert heat_level(10, 100) == "warm"
    assert heat_level(1, 100) == ""
    assert heat_level(1, 0) == ""


def test_suspects_are_ordered_by_rate_times_confidence() -> None:
    def row(name: str) -> Row:
        return Row(name, name, 1, 100, 1, 0, 0, "", ())

    rows = [row("a"), row("fast-unsure"), row("b"), row("slow-sure")]
    suspects = {"fast-unsure": Suspect(1000.0, 0.2, 10), "slow-sure": Suspect(500.0, 0.9, 10)}
    assert [r.key for r in suspect_order(rows, suspects)] == ["slow-sure", "fast-unsure", "a", "b"]
