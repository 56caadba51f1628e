"""What the header and status line say: pure functions of the model, no Textual.

Every string that came from the target goes through terminal.clean_text and ends up in
a rich Text as plain text, never as markup.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.text import Text

from memtop.model import Query, TableInfo

SORT_NAMES = {
    "size": "size",
    "size_diff": "Δsize",
    "count": "count",
    "count_diff": "Δcount",
    "growth": "growth",
    "suspects": "suspects",
}


def format_uptime(seconds: float) -> str:
    """'<1m', '12m', '3h05m', '2d04h': to the minute, like top, so the header is not
    redrawn every second."""
    minutes = max(0, int(seconds)) // 60
    if minutes < 1:
        return "<1m"
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m"


def format_interval(seconds: float) -> str:
    """'1 s', '0.5 s', '2 min'."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def clock_time(epoch: float) -> str:
    """Local wall-clock time of day."""
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def taken_time(epoch: float) -> str:
    """Local date and time of day, for when a saved snapshot was taken."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def grouping_text(query: Query) -> str:
    """'lineno', 'filename cumulative', ..."""
    return query.group_by + (" cumulative" if query.cumulative else "")


def table_age(table: TableInfo, interval: float) -> tuple[str, str]:
    """('table 8 s old', 'next in 3 s (5% budget)') when the duty-cycle budget held the
    table back, else ('', ''). The first part must always be shown; the second may go."""
    if table.age < 1.5 * max(1.0, interval) and table.next_in < interval:
        return "", ""
    return (
        f"table {table.age:.0f} s old",
        f"next in {table.next_in:.0f} s ({table.budget:.0%} budget)",
    )


def fit_parts(parts: Sequence[tuple[Text, int]], width: int, separator: str = " · ") -> Text:
    """Join parts with separators, dropping the lowest-priority ones (then cropping) to fit.

    `parts` are (text, priority) in display order; higher priority stays longer."""
    kept = list(parts)
    while len(kept) > 1 and _joined_length(kept, separator) > width:
        lowest = min(range(len(kept)), key=lambda i: (kept[i][1], -i))
        del kept[lowest]
    line = Text(separator, style="dim").join(text for text, _ in kept)
    if line.cell_len > width:
        line.truncate(max(0, width), overflow="ellipsis")
    return line


def _joined_length(parts: Sequence[tuple[Text, int]], separator: str) -> int:
    return sum(text.cell_len for text, _ in parts) + len(separator) * (len(parts) - 1)
