"""Programs that are several processes: `memtop ps --tree` shows the structure."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Plain, memtop_cli, wait_state


def test_ps_tree_puts_pool_workers_under_their_parent(plain: Plain, short_tmp: Path) -> None:
    import sys

    proc, state = plain.start(sys.executable, "pool.py", "2")
    workers = wait_state(state, lambda s: len(s.get("workers", [])) == 2)["workers"]
    listed = json.loads(memtop_cli("ps", "--tree", "--json").stdout)
    mine = [row for row in listed if row["pid"] in (proc.pid, *workers)]
    assert mine[0]["pid"] == proc.pid
    top = mine[0]["depth"]  # the test runner above it is a Python process too
    assert {row["pid"]: row["depth"] for row in mine} == {
        proc.pid: top,
        **{worker: top + 1 for worker in workers},
    }
    assert all(row["ppid"] == proc.pid for row in mine[1:])
    text = memtop_cli("ps", "--tree", env={**os.environ, "COLUMNS": "300"}).stdout.splitlines()
    at = next(i for i, line in enumerate(text) if line.split()[0] == str(proc.pid))
    below = text[at + 1 : at + 3]
    assert {int(line.split()[0]) for line in below} == set(workers)
    assert all("└─ " in line for line in below)
