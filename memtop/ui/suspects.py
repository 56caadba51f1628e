"""Leak suspects in the top table: their mark, and what the status line says about the
selected one (which rows, in what order: memtop.table_view)."""

from __future__ import annotations

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


def suspect_note(row: Row, suspect: Suspect, cwd: str | None = None) -> Text:
    """'▲ suspect app/cache.py:42: +7.0 MiB/min, steady over 30 tables (confidence 90%)'."""
    where = location(row.filename, row.lineno, 48, cwd)
    return Text.assemble(
        (f"{MARK} suspect ", "bold"),
        where,
        f": {format_rate(suspect.rate)} over {suspect.points} tables",
        f" (confidence {suspect.confidence:.0%})",
    )
