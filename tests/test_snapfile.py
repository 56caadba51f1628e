"""Saved snapshots: what `memtop view` shows equals tracemalloc's own statistics and
compare_to(), the tracemalloc format round-trips, and hostile files are refused cleanly."""

from __future__ import annotations

import _tracemalloc
import gzip
import json
import os
import pickle
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import TARGETS, Targets, marked_lines, memtop_cli, state_of, wait_state

from memtop import snapfile
from memtop.agent import collector
from memtop.filesource import FileSource
from memtop.model import Query
from memtop.snapfile import SnapshotFileError

AGENT = tracemalloc.Filter(False, collector._AGENT_DIR + "/*", all_frames=True)
CASES = [
    ("lineno", False),
    ("lineno", True),
    ("filename", False),
    ("filename", True),
    ("traceback", False),
]


def workload() -> list[object]:
    return [
        [str(i) * 3 for i in range(400)],
        [bytes(100 + i % 9) for i in range(300)],
        {i: (i, i) for i in range(200)},
    ]


@pytest.fixture
def tracing() -> Iterator[None]:
    tracemalloc.start(6)
    try:
        yield
    finally:
        tracemalloc.stop()


def saved(tmp_path: Path, name: str, traces: Sequence[Any]) -> tuple[str, tracemalloc.Snapshot]:
    """Write traces through memtop's file format and return the path, with the stdlib's
    snapshot of the very same traces."""
    stdlib = tracemalloc.Snapshot(traces, 6).filter_traces([AGENT])
    own = [t for t in traces if not any(collector.is_agent_file(f) for f, _ in t[2])]
    path = str(tmp_path / name)
    snapfile.save(snapfile.from_raw_traces(own, {"nframe": 6, "time": 1.0}), path)
    return path, stdlib


def key_of(stat, group_by: str) -> tuple:
    frames = [(f.filename, f.lineno) for f in stat.traceback]
    if group_by == "filename":
        return (frames[0][0], None)
    if group_by == "lineno":
        return frames[0]
    return tuple(frames)


def row_key(row, group_by: str) -> tuple:
    if group_by == "traceback":
        return tuple((f.filename, f.lineno) for f in row.traceback)
    return (row.filename, row.lineno)


@pytest.mark.parametrize(("group_by", "cumulative"), CASES)
def test_saved_file_shows_the_stdlib_statistics(
    tmp_path: Path, tracing, group_by: str, cumulative: bool
) -> None:
    keep = workload()
    path, stdlib = saved(tmp_path, "now.memtop", _tracemalloc._get_traces())
    source = FileSource(snapfile.load(path), path)
    sample = source.refresh(Query(group_by=group_by, cumulative=cumulative, limit=500), 0)
    expected = [
        (key_of(s, group_by), s.size, s.count) for s in stdlib.statistics(group_by, cumulative)
    ][:500]
    assert [(row_key(r, group_by), r.size, r.count) for r in sample.rows] == expected
    del keep


@pytest.mark.parametrize(("group_by", "cumulative"), CASES)
def test_diff_of_two_files_is_compare_to(
    tmp_path: Path, tracing, group_by: str, cumulative: bool
) -> None:
    first = workload()
    old_path, old = saved(tmp_path, "old.memtop", _tracemalloc._get_traces())
    second = workload()
    del first[0], second[0]  # the strings line vanishes, the others grow
    new_path, new = saved(tmp_path, "new.memtop", _tracemalloc._get_traces())
    source = FileSource(snapfile.load(new_path), new_path, snapfile.load(old_path), old_path)
    sample = source.refresh(
        Query(group_by=group_by, cumulative=cumulative, sort="size_diff", limit=500), 0
    )
    expected = [
        (key_of(s, group_by), s.size, s.size_diff, s.count, s.count_diff)
        for s in new.compare_to(old, group_by, cumulative)
    ][:500]
    assert [
        (row_key(r, group_by), r.size, r.size_diff, r.count, r.count_diff) for r in sample.rows
    ] == expected
    assert any(r.size_diff > 0 for r in sample.rows)
    if group_by != "filename":  # one file holds all of it, and it only grows
        assert any(r.size_diff < 0 for r in sample.rows)
    del first, second


def test_tracemalloc_format_round_trips(tmp_path: Path, tracing) -> None:
    keep = workload()
    path, _ = saved(tmp_path, "a.memtop", _tracemalloc._get_traces())
    pickled = str(tmp_path / "a.pickle")
    done = memtop_cli("convert", path, pickled, "--to", "tracemalloc")
    assert done.returncode == 0, done.stderr
    assert sorted(snapfile.load(pickled, trust_pickle=True).entries) == sorted(
        snapfile.load(path).entries
    )
    back = str(tmp_path / "b.memtop")
    assert memtop_cli("convert", pickled, back, "--to", "memtop", "--trust-pickle").returncode == 0
    assert sorted(snapfile.load(back).entries) == sorted(snapfile.load(path).entries)
    del keep


def test_live_snapshot_matches_what_the_program_reports(targets: Targets, tmp_path: Path) -> None:
    program, state = targets.start("known_lines.py")
    wait_state(state)
    path = str(tmp_path / "live.memtop")
    done = memtop_cli("snapshot", str(program.pid), "-o", path)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr  # memtop run traces from the start
    shown = memtop_cli("view", path, "--json", "-l", "500")
    assert shown.returncode == 0, shown.stderr
    rows = {row["key"]: row for row in json.loads(shown.stdout)["rows"]}
    expected = state_of(state)["expected"]
    lines = marked_lines(TARGETS / "known_lines.py")
    for name in ("records", "buffers"):
        key = f"{state_of(state)['file']}:{lines[name]}"
        assert [rows[key]["size"], rows[key]["count"]] == expected[key]
        assert rows[key]["source"]  # source lines travel in the file
    assert json.loads(shown.stdout)["pid"] == program.pid
    assert targets.connect(program).request("ping")  # a reused agent is left serving


# --- hostile files ---------------------------------------------------------------------


def write_gz(path: Path, lines: list) -> str:
    with gzip.open(path, "wt") as out:
        for line in lines:
            out.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return str(path)


HEADER: dict[str, Any] = {
    "format": "memtop-snapshot",
    "version": 1,
    "meta": {},
    "counts": {"frames": 1, "tracebacks": 1, "entries": 1, "sources": 0},
}
GOOD = [HEADER, {"frames": [["a.py", 1]]}, {"tracebacks": [[0]]}, {"entries": [[0, 10, 2]]}]


def with_header(**changes) -> list:
    return [{**HEADER, **changes}, *GOOD[1:]]


def test_a_well_formed_small_file_loads(tmp_path: Path) -> None:
    loaded = snapfile.load(write_gz(tmp_path / "ok.memtop", GOOD))
    assert loaded.entries == [((("a.py", 1),), 10, 2)]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (with_header(version=99), r"written by a newer memtop \(format version 99"),
        (with_header(version="1"), "no valid format version"),
        (with_header(format="something-else"), "not a memtop snapshot"),
        ([HEADER, {"frames": [["a.py", 1]]}, {"tracebacks": [[0]]}], "truncated: its header"),
        (
            [
                HEADER,
                {"frames": [["a.py", "one"]]},
                {"tracebacks": [[0]]},
                {"entries": [[0, 1, 1]]},
            ],
            "a frame is not",
        ),
        (
            [HEADER, {"frames": [["a.py", 1]]}, {"tracebacks": [[5]]}, {"entries": [[0, 1, 1]]}],
            "a traceback is not",
        ),
        ([HEADER, *GOOD[1:3], {"entries": [[0, -5, 1]]}], "an entry is not"),
        ([HEADER, *GOOD[1:3], {"entries": [[0, 1, 2**60]]}], "an entry is not"),
        ([HEADER, *GOOD[1:3], {"entries": [[0, 1, True]]}], "an entry is not"),
        (with_header(counts={**HEADER["counts"], "entries": 10**12}), "not a valid number"),
        ([HEADER, *GOOD[1:], {"entries": [[0, 1, 1]]}], "more entries than its header says"),
        ([HEADER, {"rows": []}], "unknown record"),
        ([HEADER, "[1, 2]"], "not a single table chunk"),
        ([HEADER, "{not json"], "corrupt"),
        (["[" * 100000 + "]" * 100000], "corrupt"),
        ([{"format": "memtop-snapshot", "version": 1}], "lacks meta or counts"),
    ],
)
def test_hostile_files_are_refused_with_the_reason(
    tmp_path: Path, lines: list, message: str
) -> None:
    with pytest.raises(SnapshotFileError, match=message):
        snapfile.load(write_gz(tmp_path / "bad.memtop", lines))


def test_truncated_compressed_file(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "full.memtop", [*GOOD, {"sources": []}] * 1)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapshotFileError, match="truncated or corrupt"):
        snapfile.load(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a memtop snapshot"),
        (b"hello", "not a memtop snapshot"),
        (b"\x1f\x8b", "truncated or corrupt"),
    ],
)
def test_not_a_snapshot_at_all(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "odd"
    path.write_bytes(content)
    with pytest.raises(SnapshotFileError, match=message):
        snapfile.load(str(path))


def test_over_long_lines_are_refused_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapfile, "MAX_LINE", 1000)
    path = write_gz(tmp_path / "long.memtop", [HEADER, {"frames": [["x" * 2000, 1]]}])
    with pytest.raises(SnapshotFileError, match="longer than"):
        snapfile.load(path)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_is_never_opened_without_the_flag(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(_Payload(str(marker))))
    refused = memtop_cli("view", str(path), "--json")
    assert refused.returncode == 1
    assert "is a pickle" in refused.stderr and "--trust-pickle" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not marker.exists()
    # With the flag it is the user's call: the warning is printed, and a pickle that is not
    # a tracemalloc snapshot is still refused after loading.
    trusted = memtop_cli("view", str(path), "--json", "--trust-pickle")
    assert "can run any code" in trusted.stderr and trusted.returncode == 1


def test_view_of_a_bad_file_exits_1_with_a_message(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "bad.memtop", with_header(version=99))
    result = memtop_cli("view", path)
    assert result.returncode == 1
    assert "newer memtop" in result.stderr and "Traceback" not in result.stderr


def test_record_keeps_every_refresh(tmp_path: Path) -> None:
    record = tmp_path / "rec.jsonl"
    result = memtop_cli(
        "run",
        "--batch",
        "-n",
        "3",
        "-i",
        "0.3",
        "--record",
        str(record),
        str(TARGETS / "idle.py"),
        str(tmp_path / "s.json"),
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert {"rss", "uss", "traced_current", "traced_peak", "rows", "verdict"} <= set(line)


def _tracemalloc_pickle(path: Path) -> int:
    """A real tracemalloc pickle (Snapshot.dump); returns its traced total."""
    code = (
        "import tracemalloc, sys; tracemalloc.start(3); "
        "keep = [bytes(1000) for _ in range(500)]; "
        "s = tracemalloc.take_snapshot(); s.dump(sys.argv[1]); "
        "print(sum(t.size for t in s.traces))"
    )
    return int(subprocess.check_output([sys.executable, "-c", code, str(path)], text=True))


def test_convert_picks_the_format_from_the_output_name(tmp_path: Path) -> None:
    """To a .memtop name memtop's format (so view reads it without --trust-pickle); to any
    other name tracemalloc's, unless --to says otherwise."""
    pickled = tmp_path / "in.pickle"
    _tracemalloc_pickle(pickled)
    done = memtop_cli("convert", str(pickled), str(tmp_path / "out.memtop"), "--trust-pickle")
    assert done.returncode == 0 and "memtop format" in done.stderr, done.stderr
    assert (tmp_path / "out.memtop").read_bytes()[:2] == b"\x1f\x8b"
    viewed = memtop_cli("view", str(tmp_path / "out.memtop"), "-b")
    assert viewed.returncode == 0, viewed.stderr
    back = memtop_cli("convert", str(tmp_path / "out.memtop"), str(tmp_path / "back.snap"))
    assert back.returncode == 0 and (tmp_path / "back.snap").read_bytes()[:1] == b"\x80"
    pprof = memtop_cli("convert", str(tmp_path / "out.memtop"), str(tmp_path / "heap.pb.gz"))
    assert pprof.returncode == 0 and "pprof format" in pprof.stderr, pprof.stderr
    forced = tmp_path / "forced.snap"
    done = memtop_cli("convert", str(tmp_path / "out.memtop"), str(forced), "--to", "memtop")
    assert done.returncode == 0 and forced.read_bytes()[:2] == b"\x1f\x8b"


def test_view_of_an_imported_pickle_says_what_it_does_not_know(tmp_path: Path) -> None:
    pickled = tmp_path / "in.pickle"
    total = _tracemalloc_pickle(pickled)
    text = memtop_cli("view", str(pickled), "--trust-pickle", "-b")
    assert text.returncode == 0, text.stderr
    head = "\n".join(text.stdout.splitlines()[:3])
    assert "file in.pickle - pid unknown - python unknown" in head
    assert "taken at an unknown time; not recorded in the file: pid, Python version" in head
    assert "imported from tracemalloc" in head
    assert "pid 0" not in head and "python ?" not in head and "s ago" not in head
    line = json.loads(memtop_cli("view", str(pickled), "--trust-pickle", "--json").stdout)
    assert line["pid"] is None and line["time"] is None and line["table"]["age"] is None
    assert line["traced_current"] == total  # known: the sum of the traces


async def test_the_header_of_an_imported_pickle_says_unknown(tmp_path: Path) -> None:
    from memtop.ui.app import MemtopApp
    from memtop.ui.header_bar import HeaderBar
    from memtop.ui.verdict_line import VerdictLine

    pickled = tmp_path / "in.pickle"
    _tracemalloc_pickle(pickled)
    source = FileSource(snapfile.load(str(pickled), trust_pickle=True), str(pickled))
    app = MemtopApp(source, Query(), 1.0)
    async with app.run_test(size=(140, 40)) as pilot:
        deadline = time.monotonic() + 20
        while app.sample is None:
            assert time.monotonic() < deadline, "the file's table never showed"
            await pilot.pause(0.05)
        first = app.query_one(HeaderBar).target_line(140).plain
        assert "time unknown · pid unknown · python unknown" in first, first
        verdict = "\n".join(t.plain for t in app.query_one(VerdictLine)._texts)
        assert "not in the file: pid, Python version, time taken, RSS, traced peak" in verdict
        await pilot.press("q")


def test_deep_tracebacks_and_a_long_version_save_and_load(tmp_path: Path) -> None:
    """tracemalloc allows 65535 frames and a program sets its own sys.version: memtop
    reads back what it saved (the text cut), never refusing its own file."""
    deep = tuple((f"m{i}.py", i + 1) for i in range(1500))
    meta = {"python": "3.12" + "x" * 10_000, "nframe": 1500, "time": 1.0}
    path = str(tmp_path / "deep.memtop")
    snapfile.save(snapfile.SavedSnapshot(meta, [(deep, 64, 3)]), path)
    loaded = snapfile.load(path)
    assert loaded.entries == [(deep, 64, 3)]
    assert loaded.meta["python"] == ("3.12" + "x" * 10_000)[:4096]
