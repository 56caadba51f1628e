"""Leak suspects in the top table: which rows, in what order, and what the status line says
about the selected one. Pure functions over the model's rows and suspects, no widgets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text

from memtop.formatting import SUSPECT_MARK, location
from memtop.history import Suspect, format_rate
from memtop.model import Row

MARK = SUSPECT_MARK  # beside the rank of a suspect row (the verdict's mark for growth)

# What the help screen says makes a row a suspect (model.judge_growth).
RULE = (
    "its size rose steadily over at least 5 of its recent tables (most steps up, few down, "
    "close to a straight line), not in one jump; a one-off spike is not a suspect"
)


def weight(suspect: Suspect) -> float:
    """How strongly a row is suspected: its growth rate scaled by the confidence."""
    return suspect.rate * suspect.confidence


def suspect_order(rows: Sequence[Row], suspects: Mapping[str, Suspect]) -> tuple[Row, ...]:
    """Suspect rows by rate × confidence, then the others in their order (the agent's)."""
    flagged = [row for row in rows if row.key in suspects]
    flagged.sort(key=lambda row: (-weight(suspects[row.key]), row.key))
    return (*flagged, *(row for row in rows if row.key not in suspects))


def suspect_note(row: Row, suspect: Suspect, cwd: str | None = None) -> Text:
    """'▲ suspect app/cache.py:42: +7.0 MiB/min, steady over 30 tables (confidence 90%)'."""
    where = location(row.filename, row.lineno, 48, cwd)
    return Text.assemble(
        (f"{MARK} suspect ", "bold"),
        where,
        f": {format_rate(suspect.rate)} over {suspect.points} tables",
        f" (confidence {suspect.confidence:.0%})",
    )
