"""Allocates at known lines (marked `# LINE: name`), then reports what stdlib tracemalloc
says about those lines in this very process, for comparison with memtop's rows.

The lines allocate only objects that never pass through a CPython free list (bytes,
bytearray, str; lists and dicts come from free lists and take their memory's trace with
them when reused), and the program does nothing after reporting, so its numbers stay true
while memtop reads them.
"""

import gc
import sys
import time
import tracemalloc

from _state import report

KEEP = []


def make_records(n):
    return ["record-%06d" % i + "x" * 40 for i in range(n)]  # LINE: records


def make_buffers(n):
    return [bytearray(1000) for _ in range(n)]  # LINE: buffers


def nested(depth, n):
    if depth == 0:
        return make_buffers(n)  # LINE: nested_call
    return nested(depth - 1, n)  # LINE: recursion


KEEP.append(make_records(2000))  # LINE: keep_records
KEEP.append(make_buffers(300))  # LINE: keep_buffers
KEEP.append(nested(2, 100))  # LINE: keep_nested


def own_statistics():
    """What stdlib tracemalloc says about this file's lines, right now."""
    snapshot = tracemalloc.take_snapshot()
    mine = snapshot.filter_traces([tracemalloc.Filter(True, __file__)])
    return {
        "%s:%d" % (stat.traceback[0].filename, stat.traceback[0].lineno): [stat.size, stat.count]
        for stat in mine.statistics("lineno")
    }


expected = {}
if tracemalloc.is_tracing():
    gc.collect()
    expected = own_statistics()

report(sys.argv[1], expected=expected, file=__file__, ready_time=time.time())
while True:
    time.sleep(3600)
