"""Measures the native byte sampler inside one interpreter (any CPython 3.9+); prints JSON.

usage: sampled_worker.py ROOT ROUNDS ITERATIONS BLOCKS

Overhead: an allocation-saturated loop 20 frames deep, timed with time.thread_time, each
round running every configuration back to back, so a round's ratios share the machine's
load; the bare hook and the default rate also with 46 MB kept alive through the loop (live
samples: every free is looked up in the sampled set). Accuracy: five sites keeping 8, 4,
2, 1 and 0.5 MB, sampled with tracemalloc(1) running below the sampler as the exact
reference. Refresh: BLOCKS live one-block objects from 50 sites, read by the sampler and by
tracemalloc.
"""

import ctypes
import json
import statistics
import sys
import time
import tracemalloc

sys.path.insert(0, sys.argv[1])
from memtop.agent import bytesampler

ROUNDS, ITERATIONS, BLOCKS = (int(a) for a in sys.argv[2:5])
RATES = [64 * 1024, 256 * 1024, 1024 * 1024]
BARE = 1e15  # the hook installed, never sampling


def churn(n):
    keep = None
    for i in range(n):
        lst = [i, i, i]
        d = {"a": i, "b": lst}
        s = str(i) + "x"
        keep = (s, d)
    return keep


def at_depth(depth, fn, *args):
    return fn(*args) if depth <= 1 else at_depth(depth - 1, fn, *args)


def timed(setup, teardown):
    setup()
    started = time.thread_time()
    at_depth(20, churn, ITERATIONS)
    elapsed = time.thread_time() - started
    teardown()
    return elapsed


DEFAULT_RATE = 256 * 1024
BARE_HELD = "bare hook, 46 MB live"
DEFAULT_HELD = "R=256K, 46 MB live"
HELD = []


def hold(sampler, rate):
    sampler.start(rate)
    HELD.append([bytes(200) for _ in range(200000)])


def release(sampler):
    del HELD[:]
    sampler.stop()


def overhead(sampler):
    configs = [("untraced", lambda: None, lambda: None)]
    for rate in [BARE, *RATES]:
        configs.append((rate, lambda r=rate: sampler.start(r), sampler.stop))
    # The same two with 46 MB allocated (and so sampled) before the loop and alive through
    # it: with live samples, every free looks its address up in the sampled set.
    for name, rate in ((BARE_HELD, BARE), (DEFAULT_HELD, DEFAULT_RATE)):
        configs.append((name, lambda r=rate: hold(sampler, r), lambda: release(sampler)))
    for nframe in (1, 4):
        configs.append(
            ("tracemalloc(%d)" % nframe, lambda n=nframe: tracemalloc.start(n), tracemalloc.stop)
        )
    ratios = {name: [] for name, _, _ in configs[1:]}
    over_hook = {rate: [] for rate in [*RATES, DEFAULT_HELD]}
    base_ns = []
    for _ in range(ROUNDS):
        times = {name: timed(setup, teardown) for name, setup, teardown in configs}
        base_ns.append(times["untraced"] / ITERATIONS * 1e9)
        for name in ratios:
            ratios[name].append(times[name] / times["untraced"])
        for rate in RATES:
            over_hook[rate].append(times[rate] / times[BARE])
        over_hook[DEFAULT_HELD].append(times[DEFAULT_HELD] / times[BARE_HELD])
    return {
        "untraced_ns": statistics.median(base_ns),
        "ratios": {str(k): statistics.median(v) for k, v in ratios.items()},
        "spread": {str(k): [min(v), max(v)] for k, v in ratios.items()},
        # the sampler's own cost above the hook's: median of per-round ratios
        "over_hook": {str(k): statistics.median(v) for k, v in over_hook.items()},
    }


SITE_BYTES = [8, 4, 2, 1, 0.5]
SEEDS = (1, 2, 3, 4, 5)


def site_a(n):
    return [bytes(200) for _ in range(n)]


def site_b(n):
    return [bytes(200) for _ in range(n)]


def site_c(n):
    return [bytes(200) for _ in range(n)]


def site_d(n):
    return [bytes(200) for _ in range(n)]


def site_e(n):
    return [bytes(200) for _ in range(n)]


SITES = [site_a, site_b, site_c, site_d, site_e]


def accuracy(sampler):
    out = {}
    for rate in RATES:
        errors = {}
        for seed in SEEDS:
            tracemalloc.start(1)
            sampler.start(rate, seed=seed)
            kept = [fn(int(mb * 1e6 / 233)) for fn, mb in zip(SITES, SITE_BYTES)]
            rows = {r["key"]: r for r in bytesampler.rows(sampler.table(), limit=500)}
            stats = tracemalloc.take_snapshot().statistics("lineno")
            sampler.stop()
            tracemalloc.stop()
            exact = {(s.traceback[0].filename, s.traceback[0].lineno): s.size for s in stats}
            for fn, mb in zip(SITES, SITE_BYTES):
                key = (__file__, fn.__code__.co_firstlineno + 1)
                est = rows.get(key, {"size": 0})["size"]
                errors.setdefault(mb, []).append((est - exact[key]) / exact[key])
            del kept
        out[str(rate)] = {
            str(mb): (sum(e * e for e in v) / len(v)) ** 0.5 for mb, v in errors.items()
        }
    return out


def make_heap(blocks):
    per_site = blocks // 50
    sites = []
    for i in range(50):
        code = compile(
            "def site(n):\n    return [object() for _ in range(n)]\n", "site%d.py" % i, "exec"
        )
        ns = {}
        exec(code, ns)
        sites.append(ns["site"](per_site))
    return sites


def refresh(sampler):
    out = {}
    for rate in RATES:
        sampler.start(rate, seed=7)
        heap = make_heap(BLOCKS)
        buf = (ctypes.c_uint64 * (1 << 20))()
        lib = sampler._lib
        started = time.perf_counter()
        for _ in range(100):
            lib.mts_snapshot(buf, 1 << 20)
        c_us = (time.perf_counter() - started) / 100 * 1e6
        started = time.perf_counter()
        table = sampler.table()
        bytesampler.rows(table, "lineno", limit=50)
        py_ms = (time.perf_counter() - started) * 1e3
        # The next refresh finds every line resolved already.
        started = time.perf_counter()
        bytesampler.rows(sampler.table(), "lineno", limit=50)
        py_again_ms = (time.perf_counter() - started) * 1e3
        out[str(rate)] = {
            "c_us": c_us,
            "py_ms": py_ms,
            "py_again_ms": py_again_ms,
            "live_samples": table.live_samples,
            "estimated_mb": table.size / 1e6,
        }
        sampler.stop()
        del heap
    tracemalloc.start(1)
    heap = make_heap(BLOCKS)
    import _tracemalloc

    started = time.perf_counter()
    traces = _tracemalloc._get_traces()
    out["tracemalloc_get_traces_ms"] = (time.perf_counter() - started) * 1e3
    out["tracemalloc_traces"] = len(traces)
    del traces, heap
    tracemalloc.stop()
    return out


def main():
    sampler = bytesampler.load()
    result = {"python": "%d.%d.%d" % sys.version_info[:3]}
    result["overhead"] = overhead(sampler)
    result["accuracy"] = accuracy(sampler)
    result["refresh"] = refresh(sampler)
    print(json.dumps(result))


main()
