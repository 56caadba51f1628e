"""What the top table shows of one refresh, computed once: the rows in display order,
each with its rank, trend, heat and leak-suspect reading. Pure: the table widget and the
header only draw it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from memtop.history import History, Suspect
from memtop.model import Refresh, Row

HOT_SHARE = 0.25  # a row holding this share of traced memory is "hot"
WARM_SHARE = 0.05


@dataclass(frozen=True)
class ViewRow:
    """One row as shown: everything its cells are drawn from besides the columns."""

    rank: int
    row: Row
    trend: tuple[int, ...]  # recent sizes, oldest first
    heat: str  # "hot", "warm" or ""
    suspect: Suspect | None


@dataclass(frozen=True)
class TableView:
    """One refresh as the table shows it."""

    sample: Refresh
    rows: tuple[ViewRow, ...]
    suspects: Mapping[str, Suspect]  # every suspect of the history, by row key
    suspects_first: bool = False

    @property
    def suspect_count(self) -> int:
        """How many of the rows shown are leak suspects."""
        return sum(1 for shown in self.rows if shown.suspect is not None)

    @property
    def grouped_processes(self) -> bool:
        """A group's merged table: its rows say which processes hold them."""
        return bool(self.sample.processes) and any(shown.row.procs for shown in self.rows)


def table_view(sample: Refresh, history: History, suspects_first: bool = False) -> TableView:
    """The rows of `sample` in display order (with `suspects_first`, steady growers lead,
    by rate × confidence), read against `history`."""
    suspects = history.suspects()
    rows = suspect_order(sample.rows, suspects) if suspects_first else sample.rows
    shown = tuple(
        ViewRow(
            rank,
            row,
            history.trend(row.key),
            heat_level(row.size, sample.traced_current),
            suspects.get(row.key),
        )
        for rank, row in enumerate(rows, 1)
    )
    return TableView(sample, shown, suspects, suspects_first)


def heat_level(size: int, traced: int) -> str:
    """'hot', 'warm' or '' by the row's share of all traced memory."""
    share = size / traced if traced > 0 else 0.0
    return "hot" if share >= HOT_SHARE else "warm" if share >= WARM_SHARE else ""


def weight(suspect: Suspect) -> float:
    """How strongly a row is suspected: its growth rate scaled by the confidence."""
    return suspect.rate * suspect.confidence


def suspect_order(rows: Sequence[Row], suspects: Mapping[str, Suspect]) -> tuple[Row, ...]:
    """Suspect rows by rate × confidence, then the others in their order (the agent's)."""
    flagged = [row for row in rows if row.key in suspects]
    flagged.sort(key=lambda row: (-weight(suspects[row.key]), row.key))
    return (*flagged, *(row for row in rows if row.key not in suspects))
