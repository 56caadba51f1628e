"""Time and peak RSS of `memtop view -b` and `memtop convert` on hostile snapshot files.

Usage: python benchmarks/bench_hostile_files.py

Each case runs the real command line in a child and reads its own peak RSS from wait4().
Every case must end with exit code 0 or 1 (a message, no traceback) well under the
limits README states (a few seconds, 300 MB).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def header(**counts: int) -> str:
    return json.dumps({"format": "memtop-snapshot", "version": 1, "meta": {}, "counts": counts})


def write(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", compresslevel=6) as f:
        for line in lines:
            f.write(line + "\n")
    return path


def cases(directory: Path) -> dict[str, Path]:
    frames = json.dumps({"frames": [["a.py", 1]] * 1000})
    return {
        "2^48 blocks declared": write(
            directory / "blocks.memtop",
            [
                header(frames=1, tracebacks=1, entries=1, sources=0),
                '{"frames": [["a.py", 1]]}',
                '{"tracebacks": [[0]]}',
                '{"entries": [[0, 64, 281474976710656]]}',
            ],
        ),
        "compression bomb (75 MiB)": write(
            directory / "bomb.memtop",
            [header(frames=49_000_000, tracebacks=0, entries=0, sources=0), *[frames] * 7000],
        ),
        "1 M tiny lines": write(
            directory / "tiny.memtop",
            [
                header(frames=49_000_000, tracebacks=0, entries=0, sources=0),
                *['{"frames": [["a.py", 1]]}'] * 1_000_000,
            ],
        ),
        "50 M of everything declared": write(
            directory / "claims.memtop",
            [header(frames=50_000_000, tracebacks=50_000_000, entries=50_000_000, sources=0)],
        ),
    }


def run(args: list[str], cwd: Path) -> tuple[int, float, int]:
    started = time.monotonic()
    pid = os.spawnv(
        os.P_NOWAIT,
        sys.executable,
        [sys.executable, "-c", "import sys, memtop.cli; sys.exit(memtop.cli.main())", *args],
    )
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), time.monotonic() - started, usage.ru_maxrss // 1024


def main() -> None:
    directory = Path(tempfile.mkdtemp(prefix="mbench-", dir="/tmp"))
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1), os.dup(2)
    print(f"{'file':<30} {'KiB':>7} {'command':<12} {'exit':>4} {'seconds':>8} {'RSS MiB':>8}")
    for name, path in cases(directory).items():
        for command, args in (
            ("view -b", ["view", str(path), "-b"]),
            ("convert", ["convert", str(path), str(directory / "out.pickle")]),
        ):
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            try:
                code, seconds, rss = run(args, directory)
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
            size = path.stat().st_size // 1024
            print(f"{name:<30} {size:>7} {command:<12} {code:>4} {seconds:>8.2f} {rss:>8}")


if __name__ == "__main__":
    main()
