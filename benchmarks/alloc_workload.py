"""Allocation-heavy loop, timed from inside the process it runs in.

argv: RESULT ITERATIONS RESIDENT NFRAME DEPTH

Holds RESIDENT small objects for the whole run (so a memtop refresh has a heap to read),
then builds and drops small dicts, lists, tuples and strings ITERATIONS times, DEPTH
frames deep (real programs allocate under deep stacks, and tracemalloc's cost grows with
the frames it records, up to NFRAME). NFRAME > 0
starts tracemalloc here with that depth; 0 leaves tracing as the launcher set it (off,
memtop's agent, or memray). Writes {"seconds", "loop_start", "loop_end", ...} as JSON to
RESULT: only the loop is timed, never interpreter start-up or the resident heap.
"""

import collections
import json
import os
import sys
import time
import tracemalloc

# Records stay alive for a while, as in a real program, but memory stays bounded.
WINDOW = 1000


def build_resident(count):
    """COUNT live one-block objects (2-tuples) from one line."""
    tag = "resident"
    return [(tag, None) for _ in range(count)]


def churn(iterations):
    """The timed work: about seven small allocations per turn, most freed soon after."""
    window = collections.deque(maxlen=WINDOW)
    for i in range(iterations):
        record = {"id": i, "name": str(i), "tags": [i, i + 1], "pair": (i, -i)}
        window.append(record)
    return len(window)


def at_depth(depth, work, *args):
    """Call `work(*args)` with about `depth` Python frames on the stack."""
    if depth <= 1:
        return work(*args)
    return at_depth(depth - 1, work, *args)


def write_result(path, result):
    """Write atomically: the benchmark never reads half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, path)


def main(argv):
    """Run the loop once and report its wall time."""
    result_path = argv[0]
    iterations, resident, nframe, depth = (int(arg) for arg in argv[1:5])
    if nframe > 0:
        tracemalloc.start(nframe)
    held = build_resident(resident)
    loop_start = time.time()
    started = time.perf_counter()
    at_depth(depth, churn, iterations)
    seconds = time.perf_counter() - started
    loop_end = time.time()
    write_result(
        result_path,
        {
            "seconds": seconds,
            "loop_start": loop_start,
            "loop_end": loop_end,
            "tracing": tracemalloc.is_tracing(),
            "nframe": tracemalloc.get_traceback_limit() if tracemalloc.is_tracing() else 0,
            "resident": len(held),
            "depth": depth,
        },
    )


if __name__ == "__main__":
    main(sys.argv[1:])
