"""The top table's columns, cells and lines: pure functions of a row, no widgets.

Cells are rich Text built as plain text (target text can never be read as markup), so two
refreshes can be compared cell by cell and only changed rows drawn again.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from rich.color import Color
from rich.console import Console
from rich.style import Style
from rich.text import Text
from textual.renderables.sparkline import Sparkline

from memtop.formatting import fit, format_count, format_size, location, short_path
from memtop.history import format_rate
from memtop.model import Frame, Query
from memtop.table_view import ViewRow
from memtop.ui.suspects import MARK

NARROW_BELOW = 110  # terminal columns under which the table drops columns
TREND_WIDTH = 8


@dataclass(frozen=True)
class Column:
    """One table column; width None takes whatever the others leave."""

    key: str
    label: str
    width: int | None
    right: bool = True


def columns_for(
    query: Query,
    narrow: bool,
    suspects_first: bool = False,
    group: bool = False,
    sampled: bool = False,
) -> tuple[Column, ...]:
    """The columns for a sort order; narrow terminals keep the essential ones. Sorted by
    suspects, the growth rate takes the place of the average block size. A group's merged
    table says in how many processes each row is (PROCS); sampled estimates carry their
    95 % half-width (±SIZE) next to the size."""
    columns = _columns(query, narrow, suspects_first)
    if sampled:
        columns = (*columns[:2], Column("size_error", "±SIZE", 11), *columns[2:])
    if not group:
        return columns
    return (*columns[:-2], Column("procs", "PROCS", 5), *columns[-2:])


def _columns(query: Query, narrow: bool, suspects_first: bool) -> tuple[Column, ...]:
    rank_width = max(2, len(str(query.limit))) + len(MARK)
    # "growth" ranks by signed Δsize (largest growth first); the others as named.
    sorted_by = "size_diff" if query.sort == "growth" else query.sort
    if suspects_first:
        sorted_by = "rate"
    names = ("size", "size_diff", "count", "count_diff", "rate")
    arrow = {k: "▼" if sorted_by == k else "" for k in names}
    size = Column("size", "SIZE" + arrow["size"], 10)
    size_diff = Column("size_diff", "ΔSIZE" + arrow["size_diff"], 11)
    count = Column("count", "COUNT" + arrow["count"], 7)
    count_diff = Column("count_diff", "ΔCOUNT" + arrow["count_diff"], 8)
    where = Column("where", _where_label(query), None, right=False)
    rank = Column("rank", "#", rank_width)
    if narrow:
        trend = Column("trend", "TREND", TREND_WIDTH - 2, right=False)
        counts = count_diff if query.sort == "count_diff" else count
        return (rank, size, size_diff, counts, trend, where)
    trend = Column("trend", "TREND", TREND_WIDTH, right=False)
    if suspects_first:
        rate = Column("rate", "RATE/MIN" + arrow["rate"], 11)
        return (rank, size, size_diff, count, count_diff, rate, trend, where)
    return (rank, size, size_diff, count, count_diff, Column("avg", "AVG", 9), trend, where)


def _where_label(query: Query) -> str:
    if query.group_by == "traceback":
        return "TRACEBACK (allocating frame ← callers)"
    if query.group_by == "filename":
        return "FILE"
    return "LOCATION  SOURCE"


_CONSOLE = Console(width=200, color_system="truecolor", file=io.StringIO())


@lru_cache(maxsize=1024)
def trend_text(values: tuple[float, ...], width: int, low: Color, high: Color) -> Text:
    """A row's recent sizes drawn by Textual's sparkline renderable, as Text (cached:
    most rows look the same from one refresh to the next; callers must not modify it)."""
    sparkline = Sparkline(list(values), width=width, min_color=low, max_color=high)
    text = Text()
    for segment in _CONSOLE.render(sparkline, _CONSOLE.options):
        if segment.text != "\n":
            text.append(segment.text, segment.style)
    return text


def trend_values(sizes: tuple[int, ...]) -> tuple[float, ...]:
    """What a row's trend draws: nothing before two points; flat when it barely moved.

    Textual's sparkline scales min..max, which would blow a 0.1 % wobble up to full
    height; a calm screen shows such a row flat."""
    if len(sizes) < 2:
        return ()
    low, high = min(sizes), max(sizes)
    if high - low <= max(1024, high // 100):
        return (0.0, 0.0)
    return tuple(float(s) for s in sizes)


def row_cells(
    columns: tuple[Column, ...],
    shown: ViewRow,
    group_by: str,
    styles: Mapping[str, Style],
    cwd: str | None,
    where_width: int,
) -> tuple[Text, ...]:
    """The cells of one row, in column order; a suspect's rank carries the mark."""
    row, rank, suspect = shown.row, shown.rank, shown.suspect
    heat = styles.get(shown.heat, "")
    cells: list[Text] = []
    for column in columns:
        key = column.key
        if key == "rank":
            cells.append(rank_cell(rank, suspect is not None, styles))
        elif key == "size":
            cells.append(Text(format_size(row.size), style=heat, justify="right"))
        elif key == "size_error":
            cells.append(
                Text(f"±{format_size(row.size_error)}", style=styles["dim"], justify="right")
            )
        elif key == "size_diff":
            cells.append(signed_cell(format_size(row.size_diff, True), row.size_diff, styles))
        elif key == "count":
            cells.append(Text(format_count(row.count), justify="right"))
        elif key == "count_diff":
            cells.append(signed_cell(format_count(row.count_diff, True), row.count_diff, styles))
        elif key == "procs":
            cells.append(Text(str(len(row.procs)) if row.procs else "", justify="right"))
        elif key == "avg":
            cells.append(Text(format_size(row.average), style=styles["dim"], justify="right"))
        elif key == "rate":
            rate = format_rate(suspect.rate).replace("/min", "") if suspect else ""
            cells.append(Text(rate, style=styles["suspect"], justify="right"))
        elif key == "trend":
            cells.append(
                trend_text(
                    trend_values(shown.trend),
                    column.width or TREND_WIDTH,
                    styles["trend-low"].color or Color.parse("grey50"),
                    styles["trend-high"].color or Color.parse("white"),
                )
            )
        else:
            frames = row.traceback if group_by == "traceback" else ()
            where = where_cell(
                row.filename,
                row.lineno,
                row.source,
                frames,
                where_width,
                (styles["location"], styles["source"], styles["dim"]),
                cwd,
            )
            cells.append(where)
    return tuple(cells)


def rank_cell(rank: int, suspect: bool, styles: Mapping[str, Style]) -> Text:
    """The rank, with the suspect mark in front of it."""
    if suspect:
        return Text.assemble((MARK, styles["suspect"]), (str(rank), styles["dim"]), justify="right")
    return Text(str(rank), style=styles["dim"], justify="right")


def signed_cell(text: str, value: int, styles: Mapping[str, Style]) -> Text:
    """A change: growth styled 'growth', shrinking 'shrink', none 'dim'."""
    style = styles["growth"] if value > 0 else styles["shrink"] if value < 0 else styles["dim"]
    return Text(text, style=style, justify="right")


@lru_cache(maxsize=2048)
def where_cell(
    filename: str,
    lineno: int | None,
    source: str,
    frames: tuple[Frame, ...],
    width: int,
    styles: tuple[Style, Style, Style],
    cwd: str | None,
) -> Text:
    """Location then source line, or with `frames` (traceback rows) the allocating frame
    then its callers; cut to `width`. Cached: callers must not modify the result."""
    location_style, source_style, dim = styles
    width = max(8, width)
    if frames:
        newest_first = frames[::-1]
        head = location(newest_first[0].filename, newest_first[0].lineno, min(width, 40), cwd)
        text = Text(head, style=location_style, no_wrap=True, overflow="ellipsis")
        for frame in newest_first[1:]:
            if text.cell_len >= width:
                break
            caller = short_path(frame.filename, 24, cwd)
            text.append(f" ← {caller}:{frame.lineno}", style=dim)
    else:
        head = location(filename, lineno, min(width, 48), cwd)
        text = Text(head, style=location_style, no_wrap=True, overflow="ellipsis")
        room = width - len(head) - 2
        if source and room >= 8:
            text.append("  ")
            text.append(fit(source.strip(), room), style=source_style)
    text.truncate(width, overflow="ellipsis")
    return text


def line_text(columns: tuple[Column, ...], cells: tuple[Text, ...], where_width: int) -> Text:
    """One table line: every cell fitted to its column, one space either side."""
    line = Text(no_wrap=True, end="")
    for column, cell in zip(columns, cells, strict=True):
        width = column.width or where_width
        piece = cell.copy()
        if piece.cell_len > width:
            piece.truncate(width, overflow="ellipsis")
        elif column.right:
            piece.pad_left(width - piece.cell_len)
        else:
            piece.pad_right(width - piece.cell_len)
        line.append(" ")
        line.append_text(piece)
        line.append(" ")
    return line


def header_cells(columns: tuple[Column, ...]) -> tuple[Text, ...]:
    """The column labels."""
    return tuple(Text(column.label) for column in columns)
