"""A whole snapshot of the traces, for `memtop snapshot` and the viewer's save key.

Traces are reduced to (traceback, size) -> count, which keeps every trace's size (so a
saved file can be turned back into tracemalloc's own format) while staying compact: a
million traces usually share a few thousand distinct sizes per traceback. Domains are not
kept (tracemalloc's statistics ignore them too). The result is cut into parts small
enough for the protocol's reply limit; the viewer fetches them one by one.
"""

import time
import tracemalloc

from . import collector, footprint

PART_ITEMS = 100000
MAX_SOURCES = 5000


def build(sources):
    """The parts of a snapshot of the current traces: a list of dicts, the first one
    carrying the header."""
    started = time.thread_time()
    traces = collector.read_raw_traces()
    sizes_by_tb = collector._sizes_by_traceback(traces)
    del traces
    frames = {}
    tracebacks = []
    entries = []
    weight = {}
    total_size = total_count = 0
    for tb, sizes in sizes_by_tb.items():
        if any(collector.is_agent_file(frame[0]) for frame in tb):
            continue
        indices = []
        for frame in tb:
            index = frames.get(frame)
            if index is None:
                index = frames[frame] = len(frames)
            indices.append(index)
        tb_index = len(tracebacks)
        tracebacks.append(indices)
        counts = {}
        for size in sizes:
            counts[size] = counts.get(size, 0) + 1
        for size, count in counts.items():
            entries.append([tb_index, size, count])
        size = sum(sizes)
        total_size += size
        total_count += len(sizes)
        weight[tb[0]] = weight.get(tb[0], 0) + size
    sizes_by_tb.clear()
    footprint.release_free_memory()
    frame_list = [[filename, lineno] for (filename, lineno) in frames]
    heaviest = sorted(weight, key=weight.get, reverse=True)[:MAX_SOURCES]
    lookup = sources.lookup(heaviest)
    source_list = [[frames[frame], text] for frame, text in lookup.items() if text]
    header = {
        "time": time.time(),
        "nframe": tracemalloc.get_traceback_limit() if tracemalloc.is_tracing() else 0,
        "traced_current": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0,
        "traced_peak": tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else 0,
        "tracemalloc_memory": tracemalloc.get_tracemalloc_memory(),
        "traced_size": total_size,
        "traced_blocks": total_count,
        "counts": {
            "frames": len(frame_list),
            "tracebacks": len(tracebacks),
            "entries": len(entries),
            "sources": len(source_list),
        },
    }
    parts = [{"header": header}]
    for name, items in (
        ("frames", frame_list),
        ("tracebacks", tracebacks),
        ("entries", entries),
        ("sources", source_list),
    ):
        for start in range(0, len(items), PART_ITEMS):
            parts.append({name: items[start : start + PART_ITEMS]})
    header["parts"] = len(parts)
    header["cost_ms"] = round((time.thread_time() - started) * 1000.0, 3)
    return parts
