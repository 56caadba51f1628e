"""A program running for a while, its heap estimated by the byte sampler and traced exactly
by tracemalloc at once; prints JSON. Runs in any CPython 3.9+.

usage: accuracy_worker.py ROOT RATE SEED CHECKPOINT_SECONDS...

Twelve sites keep objects at paced rates (1 MB/s for the first, each next one 0.6 times
the previous: 1 MB/s down to 3.6 KB/s), amid a churn of short-lived objects, in ticks of
0.1 s, so the heap at each checkpoint is about the same however loaded the machine is.
tracemalloc(1) runs below the sampler (started first) as the exact reference. At each
checkpoint: per site of the exact top 10, the exact size, the estimate and its 95 %
half-width.
"""

import json
import sys
import time
import tracemalloc

sys.path.insert(0, sys.argv[1])
from memtop.agent import bytesampler

RATE, SEED = int(sys.argv[2]), int(sys.argv[3])
CHECKPOINTS = [float(a) for a in sys.argv[4:]]
TICK = 0.1


def s0(n):
    return [bytes(180) for _ in range(n)]


def s1(n):
    return [{"id": i, "name": "n%d" % i} for i in range(n)]


def s2(n):
    return [[i, i + 1, i + 2, i + 3] for i in range(n)]


def s3(n):
    return ["payload-%08d" % i * 3 for i in range(n)]


def s4(n):
    return [(i, str(i)) for i in range(n)]


def s5(n):
    return [bytearray(300) for _ in range(n)]


def s6(n):
    return [{"k": [i] * 6} for i in range(n)]


def s7(n):
    return [bytes(90) for _ in range(n)]


def s8(n):
    return [set((i, i + 1)) for i in range(n)]


def s9(n):
    return [[None] * 20 for _ in range(n)]


def s10(n):
    return [bytes(500) for _ in range(n)]


def s11(n):
    return [frozenset((i,)) for i in range(n)]


SITES = [s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11]


def churn(n):
    for i in range(n):
        d = {"a": [i, i], "b": str(i) * 3}
        del d


def per_object(fn):
    """Bytes one object of `fn` costs, measured by tracemalloc."""
    tracemalloc.start(1)
    before = tracemalloc.get_traced_memory()[0]
    kept = fn(2000)
    size = (tracemalloc.get_traced_memory()[0] - before) / 2000.0
    del kept
    tracemalloc.stop()
    return size


def main():
    sizes = [per_object(fn) for fn in SITES]
    # objects per tick: 1 MB/s for the first site, 0.6x for each next one
    quota = [1e6 * (0.6**k) * TICK / sizes[k] for k in range(len(SITES))]
    owed = [0.0] * len(SITES)
    sampler = bytesampler.load()
    tracemalloc.start(1)
    sampler.start(RATE, seed=SEED)
    keys = {(__file__, fn.__code__.co_firstlineno + 1): fn.__name__ for fn in SITES}
    kept = [[] for _ in SITES]
    out = {"python": "%d.%d.%d" % sys.version_info[:3], "rate": RATE, "checkpoints": []}
    started = time.monotonic()
    tick = 0
    pending = list(CHECKPOINTS)
    while pending:
        for k, fn in enumerate(SITES):
            owed[k] += quota[k]
            n = int(owed[k])
            owed[k] -= n
            if n:
                kept[k].append(fn(n))
        churn(300)
        tick += 1
        elapsed = tick * TICK
        if elapsed >= pending[0] - 1e-9:
            pending.pop(0)
            rows = {r["key"]: r for r in bytesampler.rows(sampler.table(), limit=1000)}
            stats = tracemalloc.take_snapshot().statistics("lineno")
            exact = {(s.traceback[0].filename, s.traceback[0].lineno): s.size for s in stats}
            top = sorted(keys, key=lambda key: -exact.get(key, 0))[:10]
            out["checkpoints"].append(
                {
                    "seconds": elapsed,
                    "wall": time.monotonic() - started,
                    "sites": [
                        {
                            "site": keys[key],
                            "exact": exact.get(key, 0),
                            "estimate": rows.get(key, {"size": 0})["size"],
                            "half_width": rows.get(key, {"size_error": 0})["size_error"],
                        }
                        for key in top
                    ],
                }
            )
        delay = started + tick * TICK - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    sampler.stop()
    tracemalloc.stop()
    print(json.dumps(out))


main()
