"""What the agent's shared history (memtop/agent/timeline.py) costs the program in traced
memory once it is full, and what a viewer's `history` reply weighs on the wire.

Scenarios: a steady program (the same 100 top rows at every table), a churning one (half
of the rows new at every table) and the worst case (every row new at every table), each
over 4 groupings, 200 tables and 2,000 memory points, with real keys (paths, line numbers)
built as the agent builds them. Prints a table.

    python benchmarks/bench_history.py
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memtop.agent import timeline  # noqa: E402

KIB = 1024
TABLES = 200
GROUPINGS = 4
# The program's filenames exist already (its code objects hold them): built once.
PATHS = [f"/srv/app/package/module_{n:04d}.py" for n in range(TABLES * 100 + 100)]


class Read:
    def __init__(self, number: int) -> None:
        self.id = number
        self.time = time.time()


def rows_for(number: int, new_share: float) -> list[tuple]:
    """100 rows of one table; `new_share` of them at lines never seen before."""
    rows = []
    fresh = int(100 * new_share)
    for n in range(100):
        path = PATHS[number * 100 + n] if n < fresh else PATHS[n]
        rows.append(((path, 1000 + n), 4096 * (100 - n) + number, 0, 1, 0, None))
    return rows


def measure(new_share: float) -> tuple[float, float, int]:
    """(KiB held when full, KiB growth over the last half, bytes of one history reply)."""
    keeper = timeline.Timeline()
    keeper.begin(since=time.time())
    totals = {
        "tracing": True,
        "traced_current": 10**8,
        "tracemalloc_memory": 10**7,
        "memtop_traced": 10**5,
        "memtop_residue": 10**6,
    }
    start = tracemalloc.get_traced_memory()[0]
    half = 0
    for number in range(1, TABLES + 1):
        for grouping in range(GROUPINGS):
            config = ("lineno", False, (), (f"g{grouping}",))
            rows = rows_for(number, new_share)
            keeper.record_rows(config, Read(number), rows)
            del rows
        for step in range(10):
            keeper.record_point(totals, 2 * 10**8, now=time.time() + number * 10 + step)
        if number == TABLES // 2:
            half = tracemalloc.get_traced_memory()[0]
    full = tracemalloc.get_traced_memory()[0]
    wire = len(json.dumps(keeper.reply(("lineno", False, (), ("g0",)))))
    return (full - start) / KIB, (full - half) / KIB, wire


def main() -> None:
    tracemalloc.start(1)
    print(f"{'program':<12} {'history held':>14} {'growth, 2nd half':>17} {'history reply':>14}")
    for name, share in (("steady", 0.0), ("churning", 0.5), ("worst case", 1.0)):
        held, growth, wire = measure(share)
        print(f"{name:<12} {held:>10.0f} KiB {growth:>13.0f} KiB {wire / KIB:>10.0f} KiB")
    tracemalloc.stop()


if __name__ == "__main__":
    main()
