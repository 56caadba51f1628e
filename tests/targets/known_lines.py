"""Allocates at known lines (marked `# LINE: name`), then reports what stdlib tracemalloc
says about those lines in this very process, for comparison with memtop's rows."""

import sys
import tracemalloc

from _state import serve_forever

KEEP = []


def make_records(n):
    return [{"id": i, "name": "record-%06d" % i} for i in range(n)]  # LINE: records


def make_buffers(n):
    return [bytearray(1000) for _ in range(n)]  # LINE: buffers


def nested(depth, n):
    if depth == 0:
        return make_buffers(n)  # LINE: nested_call
    return nested(depth - 1, n)  # LINE: recursion


KEEP.append(make_records(2000))  # LINE: keep_records
KEEP.append(make_buffers(300))  # LINE: keep_buffers
KEEP.append(nested(2, 100))  # LINE: keep_nested

expected = {}
if tracemalloc.is_tracing():
    snapshot = tracemalloc.take_snapshot()
    mine = snapshot.filter_traces([tracemalloc.Filter(True, __file__)])
    for stat in mine.statistics("lineno"):
        frame = stat.traceback[0]
        expected["%s:%d" % (frame.filename, frame.lineno)] = [stat.size, stat.count]
    del snapshot, mine

serve_forever(sys.argv[1], expected=expected, file=__file__)
