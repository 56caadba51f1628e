"""Row identity said once (memtop.agent.rowkeys): the agent's grouping, its tracebacks of a
row, the wire form of a key, the viewer's row names and a saved file's rows all agree."""

from __future__ import annotations

from typing import Any

import pytest

from memtop.agent import collector, rowkeys
from memtop.filesource import FileSource
from memtop.model import Query, row_from_reply, row_ident, wire_key
from memtop.snapfile import SavedSnapshot

# Raw tracebacks, most recent frame first; no frame repeats within one.
TRACES: dict[Any, tuple[int, int]] = {
    (("/app/cache.py", 42), ("/app/main.py", 10)): (1000, 10),
    (("/app/cache.py", 42), ("/app/jobs.py", 7)): (500, 5),
    (("/app/cache.py", 50), ("/app/main.py", 10)): (300, 3),
    (("/app/db.py", 3), ("/app/jobs.py", 7)): (200, 2),
}
CASES = [
    ("lineno", False),
    ("lineno", True),
    ("filename", False),
    ("filename", True),
    ("traceback", False),
]


@pytest.mark.parametrize(("group_by", "cumulative"), CASES)
def test_a_rows_tracebacks_are_exactly_those_grouped_under_its_key(
    group_by: str, cumulative: bool
) -> None:
    grouped = collector.group(TRACES, group_by, cumulative)
    for key, (size, count, _, _) in grouped.items():
        matching = [tb for tb in TRACES if rowkeys.matches(tb, group_by, cumulative, key)]
        assert sum(TRACES[tb][0] for tb in matching) == size
        assert sum(TRACES[tb][1] for tb in matching) == count
        found = collector.tracebacks_of(TRACES, group_by, cumulative, key, limit=100)
        assert {tb for tb, _, _ in found} == set(matching)


@pytest.mark.parametrize(("group_by", "cumulative"), CASES)
def test_a_key_goes_to_the_viewer_and_back_unchanged(group_by: str, cumulative: bool) -> None:
    grouped = collector.group(TRACES, group_by, cumulative)
    rows, _ = collector.rank(grouped, None, group_by, "size", 100)
    for key, size, size_diff, count, count_diff, tb in rows:
        wire = rowkeys.wire_row(group_by, key, size, size_diff, count, count_diff, tb, {})
        row = row_from_reply(group_by, wire)
        assert row_ident(group_by, row.filename, row.lineno, row.traceback) == key
        assert row.key == rowkeys.label(key, group_by)
        assert rowkeys.decode(wire_key(group_by, row), group_by) == key


@pytest.mark.parametrize(
    ("value", "group_by", "problem"),
    [
        ("../../etc/passwd", "lineno", "key must be an object"),
        ({"filename": 3, "lineno": 1}, "lineno", "key.filename"),
        ({"filename": "/a.py", "lineno": True}, "lineno", "key.lineno"),
        ({"filename": "/a.py", "lineno": "1"}, "lineno", "key.lineno"),
        ({"filename": None}, "filename", "key.filename"),
        ({"frames": []}, "traceback", "key.frames"),
        ({"frames": [["/a.py", 1]] * 1025}, "traceback", "key.frames"),
        ({"frames": [["/a.py"]]}, "traceback", "key.frames items"),
        ({"frames": [[1, 1]]}, "traceback", "key.frames items"),
    ],
)
def test_a_malformed_wire_key_is_refused_saying_what_is_wrong(
    value: Any, group_by: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem.replace(".", r"\.")):
        rowkeys.decode(value, group_by)


def test_cumulative_is_refused_for_whole_tracebacks_only() -> None:
    assert rowkeys.cumulative_error("traceback", True) is not None
    assert rowkeys.cumulative_error("traceback", False) is None
    for group_by in ("lineno", "filename"):
        assert rowkeys.cumulative_error(group_by, True) is None


def test_a_files_row_of_a_whole_file_shows_no_source_line_as_the_live_one() -> None:
    """A file row has no line: a file's view once showed the source of line 0 there, which
    the live view never does (sampled mode records code without a line number as 0)."""
    snapshot = SavedSnapshot({"time": 1.0, "nframe": 1})
    snapshot.entries.append(((("/app/gen.py", 0),), 64, 3))
    snapshot.sources[("/app/gen.py", 0)] = "yield from chunks"
    source = FileSource(snapshot, "/tmp/gen.memtop")
    (row,) = source.refresh(Query(group_by="filename"), 0).rows
    live = row_from_reply(
        "filename",
        rowkeys.wire_row(
            "filename", "/app/gen.py", 192, 0, 3, 0, (("/app/gen.py", 0),), snapshot.sources
        ),
    )
    assert row == live and row.source == "" and row.lineno is None
