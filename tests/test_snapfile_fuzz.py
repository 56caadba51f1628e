"""Hostile snapshot files: 320 seeded mutations of a valid file, each opened as `memtop view`
(text and JSON) and `memtop convert` (to each format) do, end in a result or a clear error,
in bounded time and memory; a sample goes through the real command line."""

from __future__ import annotations

import gzip
import html
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT
from snapfuzz import mutate, seed_lines

from memtop.errors import MemtopError
from memtop.filesource import FileSource
from memtop.model import Query
from memtop.snapfile import load
from memtop.ui.app import MemtopApp

FILES = 320
MiB = 1024 * 1024
RSS_LIMIT = 300 * MiB


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz")
    for seed in range(FILES):
        (directory / f"f{seed:03d}.memtop").write_bytes(mutate(random.Random(seed)))
    return directory


def run_measured(args: list[str], cwd: Path, timeout: float = 20.0) -> tuple[int, str, int]:
    """Run `python -m memtop ARGS`; (exit code, stderr, its own peak RSS in bytes). The
    run is killed, and the test fails, after `timeout` seconds."""
    err_path = cwd / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memtop", *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=err
        )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode != -signal.SIGKILL, f"memtop {args} ran longer than {timeout} s"
    return proc.returncode, err_path.read_text(), usage.ru_maxrss * 1024


def test_the_seed_file_itself_loads(tmp_path: Path) -> None:
    path = tmp_path / "seed.memtop"
    path.write_bytes(gzip.compress(("\n".join(seed_lines()) + "\n").encode()))
    assert len(load(str(path)).entries) == 30


def test_every_fuzzed_file_ends_cleanly_in_bounded_time_and_memory(fuzzed: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "snapfuzz.py"), str(fuzzed)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert not report["failures"], next(iter(report["failures"].values()))
    assert report["slowest"][0] < 10.0, report["slowest"]  # a hang guard; timings: benchmarks/
    assert report["peak_rss"] < RSS_LIMIT


def test_a_sample_through_the_real_command_line(fuzzed: Path) -> None:
    """Every 40th file: view -b, view --json, convert to two formats: exit 0 or 1, a
    message and no traceback."""
    for path in sorted(fuzzed.glob("f*.memtop"))[::40]:
        for args in (
            ["view", str(path), "-b"],
            ["view", str(path), "--json"],
            ["convert", str(path), str(fuzzed / "converted.pickle")],
            ["convert", str(path), str(fuzzed / "converted.memtop")],
        ):
            code, err, rss = run_measured(args, fuzzed)
            assert code in (0, 1), (args, err)
            assert rss < RSS_LIMIT, (args, rss)
            assert "Traceback" not in err, (args, err)
            assert code == 0 or err.startswith("memtop: "), (args, err)


def gz_lines(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", compresslevel=9) as f:
        for line in lines:
            f.write(line + "\n")
    return path


def header(**counts: int) -> str:
    return json.dumps({"format": "memtop-snapshot", "version": 1, "meta": {}, "counts": counts})


def test_a_huge_block_count_is_refused_by_convert_within_bounds(tmp_path: Path) -> None:
    """A 200-byte file declaring 2**48 blocks of one traceback: tracemalloc's format would
    need one record per block. convert refuses it, without allocating for the count."""
    path = gz_lines(
        tmp_path / "many.memtop",
        [
            header(frames=1, tracebacks=1, entries=1, sources=0),
            '{"frames": [["a.py", 1]]}',
            '{"tracebacks": [[0]]}',
            '{"entries": [[0, 64, 281474976710656]]}',
        ],
    )
    code, err, rss = run_measured(["convert", str(path), str(tmp_path / "out.pickle")], tmp_path)
    assert code == 1 and "one record per block" in err and "Traceback" not in err, err
    assert rss < RSS_LIMIT
    code, err, rss = run_measured(["view", str(path), "-b"], tmp_path)
    assert code == 0 and rss < RSS_LIMIT, err


def test_a_compressed_bomb_is_refused_within_bounds(tmp_path: Path) -> None:
    """7,000 valid lines of 1,000 frames (75 MiB) compress to a few hundred KiB: refused
    by the expansion ratio before it costs memory or minutes."""
    line = json.dumps({"frames": [["a.py", 1]] * 1000})
    path = gz_lines(
        tmp_path / "bomb.memtop",
        [header(frames=49_000_000, tracebacks=0, entries=0, sources=0), *[line] * 7_000],
    )
    assert path.stat().st_size < 1 * MiB
    code, err, rss = run_measured(["view", str(path), "-b"], tmp_path, timeout=20)
    assert code == 1 and "expands to more than" in err and "Traceback" not in err, err
    assert rss < RSS_LIMIT


def test_declared_counts_cost_nothing(tmp_path: Path) -> None:
    """A header announcing 50 M of everything over a one-frame body: a clear
    'truncated' error, memory of an empty file."""
    path = gz_lines(
        tmp_path / "claims.memtop",
        [
            header(frames=50_000_000, tracebacks=50_000_000, entries=50_000_000, sources=0),
            '{"frames": [["a.py", 1]]}',
        ],
    )
    code, err, rss = run_measured(["convert", str(path), str(tmp_path / "o.memtop")], tmp_path)
    assert code == 1 and "truncated" in err and "Traceback" not in err, err
    assert rss < 150 * MiB


def test_millions_of_tiny_lines_are_refused_early(tmp_path: Path) -> None:
    """200,000 one-frame lines (the shape of '1 GiB of short lines'): refused at the line
    limit, after a fraction of them."""
    line = '{"frames": [["a.py", 1]]}'
    path = gz_lines(
        tmp_path / "tiny.memtop",
        [header(frames=49_000_000, tracebacks=0, entries=0, sources=0), *[line] * 200_000],
    )
    code, err, rss = run_measured(["view", str(path), "--json"], tmp_path, timeout=20)
    assert code == 1 and "more than 10000 lines" in err and "Traceback" not in err, err
    assert rss < RSS_LIMIT


async def test_the_live_view_shows_loadable_fuzzed_files_inertly(fuzzed: Path) -> None:
    """The first 5 fuzzed files that load (edge values, attacking text) in the TUI: a
    table, a traceback panel, and nothing raw on screen."""
    shown = 0
    for path in sorted(fuzzed.glob("f*.memtop")):
        try:
            snapshot = load(str(path))
        except MemtopError:
            continue
        app = MemtopApp(FileSource(snapshot, str(path)), Query(), 1.0)
        async with app.run_test(size=(100, 30)) as pilot:
            deadline = time.monotonic() + 10
            while app.sample is None:
                assert time.monotonic() < deadline, f"{path.name}: no table"
                await pilot.pause(0.02)
            await pilot.press("enter")
            await pilot.pause()
            runs = re.findall(r"<text [^>]*>([^<]*)</text>", app.export_screenshot())
            screen = html.unescape("".join(runs))
            assert not [c for c in "\x1b\x07\x9b\u202e" if c in screen], path.name
            await pilot.press("escape", "q")
        shown += 1
        if shown == 5:
            break
    assert shown == 5
