"""A whole snapshot of the traces, for `memtop snapshot` and the viewer's save key.

Traces are reduced to (traceback, size) -> count, which keeps every trace's size (so a
saved file can be turned back into tracemalloc's own format) while staying compact: a
million traces usually share a few thousand distinct sizes per traceback. Domains are not
kept (tracemalloc's statistics ignore them too). The result is cut into parts small
enough for the protocol's reply limit; the viewer fetches them one by one.

In sampled mode the snapshot holds the sampler's estimates: per traceback its estimated
count of blocks of the average size (the remainder on one block, so sizes add up), and
the header says so (`mode`, `sample_rate`).
"""

import time
import tracemalloc

from . import collector, footprint

PART_ITEMS = 100000
MAX_SOURCES = 5000


def build(sources, sampled=None):
    """The parts of a snapshot of the current traces (or of `sampled`, a sample of the
    byte sampler): a list of dicts, the first one carrying the header."""
    started = time.thread_time()
    if sampled is not None:
        sizes_by_tb = _estimated_sizes(sampled.by_traceback)
    else:
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
        if isinstance(sizes, dict):
            counts = sizes
        else:
            counts = {}
            for size in sizes:
                counts[size] = counts.get(size, 0) + 1
        size = 0
        for block, count in counts.items():
            entries.append([tb_index, block, count])
            size += block * count
            total_count += count
        total_size += size
        weight[tb[0]] = weight.get(tb[0], 0) + size
    sizes_by_tb.clear()
    footprint.release_free_memory()
    frame_list = [[filename, lineno] for (filename, lineno) in frames]
    heaviest = sorted(weight, key=weight.get, reverse=True)[:MAX_SOURCES]
    lookup = sources.lookup(heaviest)
    source_list = [[frames[frame], text] for frame, text in lookup.items() if text]
    tracing = sampled is None and tracemalloc.is_tracing()
    header = {
        "time": time.time(),
        "nframe": tracemalloc.get_traceback_limit() if tracing else 0,
        "traced_current": tracemalloc.get_traced_memory()[0] if tracing else total_size,
        "traced_peak": tracemalloc.get_traced_memory()[1] if tracing else total_size,
        "tracemalloc_memory": (
            tracemalloc.get_tracemalloc_memory() if sampled is None else sampled.sampled.table_bytes
        ),
        "mode": "exact" if sampled is None else "sampled",
        "sample_rate": None if sampled is None else int(sampled.sampled.rate),
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
    if sampled is not None:
        header["nframe"] = max((len(tb) for tb in tracebacks), default=0)
    header["parts"] = len(parts)
    header["cost_ms"] = round((time.thread_time() - started) * 1000.0, 3)
    return parts


def _estimated_sizes(by_traceback):
    """{traceback: {block size: count}} from estimates: `count` blocks of the average
    size, the remainder of the size on one of them."""
    out = {}
    for tb, (size, count) in by_traceback.items():
        count = max(1, count)
        average, rest = divmod(size, count)
        blocks = {average: count - 1} if count > 1 else {}
        blocks[average + rest] = blocks.get(average + rest, 0) + 1
        out[tb] = blocks
    return out
