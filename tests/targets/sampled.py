"""Runs memtop's byte sampler in this interpreter and prints what it saw as one JSON line.

usage: sampled.py ROOT MODE [ARGS...]   (ROOT: the memtop checkout to import the agent from)

Modes:
  selftest                 load (layout self-test included) and say why not when refused
  layout-fault             load with a simulated wrong frame layout
  accuracy ROUNDS RATE     per round: tracemalloc(1) then the sampler (seed = round), allocate
                           at the marked lines, compare both per line
  interplay                the tracemalloc start/stop orders; liveness after each step
  stress CYCLES            8 threads allocate while the sampler and tracemalloc start and
                           stop in rotating orders; a fork in the middle; exits sampling
"""

import asyncio
import faulthandler
import json
import os
import random
import sys
import threading
import time
import tracemalloc
import warnings

faulthandler.enable()
# Forking with threads running is the point of the stress mode.
warnings.filterwarnings("ignore", category=DeprecationWarning)
sys.path.insert(0, sys.argv[1])
from memtop.agent import bytesampler  # noqa: E402

MODE = sys.argv[2]
KEEP = []


def make_text(n):
    return ["text-%07d" % i + "t" * 60 for i in range(n)]  # LINE: text


def make_buffers(n):
    return [bytearray(700) for _ in range(n)]  # LINE: buffers


def make_blobs(n):
    return [bytes(40000) for _ in range(n)]  # LINE: blobs


def per_line(sampler):
    """{lineno: (size, size_error)} of this file, from the sampler."""
    rows = bytesampler.rows(sampler.table(), "lineno", limit=1000)
    return {
        row["key"][1]: (row["size"], row["size_error"], row["count"], row["count_error"])
        for row in rows
        if row["key"][0] == __file__
    }


def truth_per_line():
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, __file__)])
    return {
        stat.traceback[0].lineno: (stat.size, stat.count) for stat in snapshot.statistics("lineno")
    }


def accuracy(rounds, rate):
    sampler = bytesampler.load()
    out = []
    lines = {
        make_text.__code__.co_firstlineno + 1: "text",
        make_buffers.__code__.co_firstlineno + 1: "buffers",
        make_blobs.__code__.co_firstlineno + 1: "blobs",
    }
    for seed in range(1, rounds + 1):
        tracemalloc.start(1)
        sampler.start(rate, seed=seed)
        KEEP.append(make_text(30000))
        KEEP.append(make_buffers(4000))
        KEEP.append(make_blobs(75))
        seen = per_line(sampler)
        truth = truth_per_line()
        sampler.stop()
        tracemalloc.stop()
        for lineno, name in lines.items():
            size, size_error, count, count_error = seen.get(lineno, (0, 0, 0, 0))
            out.append(
                {
                    "seed": seed,
                    "line": name,
                    "truth": truth[lineno][0],
                    "truth_count": truth[lineno][1],
                    "size": size,
                    "size_error": size_error,
                    "count": count,
                    "count_error": count_error,
                }
            )
        del KEEP[:]
    return out


def allocators():
    """The MEM and OBJ allocators as PyMem_GetAllocator reports them (ctx and functions)."""
    import ctypes

    get = ctypes.pythonapi.PyMem_GetAllocator
    get.restype = None
    found = []
    for domain in (1, 2):
        fields = (ctypes.c_void_p * 5)()
        get(domain, fields)
        found.append(list(fields))
    return found


def interplay():
    sampler = bytesampler.load()
    steps = []
    original = allocators()

    def note(what):
        before = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
        KEEP.append(bytearray(5000))
        after = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
        traced = None if before is None else after - before >= 5000
        steps.append([what, sampler.is_live(), traced])

    orders = {
        "S T T.stop S.stop": "S+ T+ T- S-",
        "T S T.stop": "T+ S+ T- S-",
        "S T S.stop T.stop": "S+ T+ S- T- S+ S-",
        "T S S.stop T.stop": "T+ S+ S- T-",
    }
    for name, order in orders.items():
        steps.append([name])
        for step in order.split():
            if step == "S+":
                sampler.start(64 * 1024)
            elif step == "S-":
                if not sampler.ensure_live():
                    steps.append(["re-hooked"])
                sampler.stop()
            elif step == "T+":
                tracemalloc.start()
            else:
                tracemalloc.stop()
            note(step)
    restored = allocators() == original
    # Orders that leave the sampler on top when it stops must not use up hook contexts.
    for _ in range(100):
        tracemalloc.start()
        sampler.start(65536)
        sampler.stop()
        tracemalloc.stop()
        sampler.start(65536)
        tracemalloc.start()
        tracemalloc.stop()
        sampler.stop()
    sampler.start(65536)
    hooks = sampler.table().hooks
    sampler.stop()
    sampler.start(65536)
    hooked = allocators() != original
    sampler.stop()
    return {
        "steps": steps,
        "gaps": sampler.gaps,
        "hooks": hooks,
        "restored": restored,
        "hooked": hooked,
        "restored_again": allocators() == original,
    }


def grow(n):
    data = bytearray()
    for _ in range(n):
        data.extend(b"g" * 1000)  # LINE: grow
    return data


def caller():
    return make_buffers(3000)  # LINE: caller


def lifecycle():
    """Drop on free and realloc, code objects released on stop, the three groupings."""
    sampler = bytesampler.load()
    out = {}
    namespace = {}
    exec(
        compile("def made(n):\n    return [bytes(500) for _ in range(n)]\n", "made.py", "exec"),
        namespace,
    )
    code = namespace["made"].__code__
    refs_before = sys.getrefcount(code)
    sampler.start(4096, seed=3)
    kept = namespace["made"](4000)
    table = sampler.table()
    out["made_size"] = sum(
        size for tb, (size, _) in table.by_traceback.items() if tb[0][0] == "made.py"
    )
    out["refs_held"] = sys.getrefcount(code) - refs_before
    del kept
    table = sampler.table()
    out["made_after_free"] = sum(
        size for tb, (size, _) in table.by_traceback.items() if tb[0][0] == "made.py"
    )
    out["compacted"] = sampler.compact()
    out["refs_after_compact"] = sys.getrefcount(code) - refs_before
    grown = grow(2000)
    line = grow.__code__.co_firstlineno + 3
    rows = {r["key"]: r for r in bytesampler.rows(sampler.table(), "lineno", limit=500)}
    out["grow"] = [
        len(grown),
        rows.get((__file__, line), {"size": 0})["size"],
        rows.get((__file__, line), {"size_error": 0})["size_error"],
    ]
    del grown
    rows = {r["key"]: r for r in bytesampler.rows(sampler.table(), "lineno", limit=500)}
    out["grow_after_free"] = rows.get((__file__, line), {"size": 0})["size"]
    KEEP.append(caller())
    table = sampler.table()
    for group_by, cumulative in (("lineno", True), ("filename", False), ("traceback", False)):
        rows = bytesampler.rows(table, group_by, cumulative, limit=1000)
        out[group_by + ("-cumulative" if cumulative else "")] = [
            [
                r["key"] if group_by != "traceback" else None,
                r["size"],
                r["size_error"],
                r["traceback"],
            ]
            for r in rows
            if (
                r["key"][0]
                if group_by == "lineno"
                else r["key"]
                if group_by == "filename"
                else r["key"][0][0]
            )
            == __file__
        ]
    buffers_key = (__file__, make_buffers.__code__.co_firstlineno + 1)
    out["panel"] = bytesampler.tracebacks(table, "lineno", False, buffers_key)
    out["released"] = sampler.stop()
    out["refs_after_stop"] = sys.getrefcount(code) - refs_before
    return out


def subinterpreters():
    """Refused while an interpreter with its own GIL exists; a legacy one (sharing the
    GIL) is fine, and its threads allocating concurrently are left alone."""
    sampler = bytesampler.load()
    try:
        import _interpreters as interpreters
    except ImportError:
        import _xxsubinterpreters as interpreters
    out = {}
    isolated = interpreters.create()
    try:
        sampler.start(65536)
        out["isolated"] = "started"
        sampler.stop()
    except bytesampler.Unavailable as exc:
        out["isolated"] = str(exc)
    interpreters.destroy(isolated)
    if sys.version_info >= (3, 13):
        legacy = interpreters.create("legacy")
        sampler.start(4096)
        code = "x = [bytes(300) for _ in range(20000)]\nfor _ in range(50): y = [str(i) for i in x]"
        t = threading.Thread(target=interpreters.exec, args=(legacy, code))
        t.start()
        KEEP.append(make_buffers(3000))
        t.join()
        out["legacy_live"] = sampler.is_live()
        out["legacy_samples"] = sampler.table().live_samples
        sampler.stop()
        interpreters.destroy(legacy)
    return out


def gen(n):
    for i in range(n):
        yield [i] * 3


async def coro(n):
    total = 0
    for i in range(n):
        total += len({"k": i, "v": str(i)})
        await asyncio.sleep(0)
    return total


def deep(depth, fn):
    return fn() if depth == 0 else deep(depth - 1, fn)


PROGRESS = [0]


def churn(stop, rng):
    big = bytearray()
    while not stop.is_set():
        PROGRESS[0] += 1
        kind = rng.randrange(6)
        if kind == 0:
            deep(rng.randrange(40), lambda: [str(i) for i in range(200)])
        elif kind == 1:
            deep(rng.randrange(40), lambda: {i: [i] for i in range(100)})
        elif kind == 2:
            sum(len(x) for x in gen(200))
        elif kind == 3:
            asyncio.run(coro(20))
        elif kind == 4:
            try:
                deep(rng.randrange(20), lambda: {}["missing"])
            except KeyError:
                pass
        else:
            big.extend(b"x" * rng.randrange(1, 200000))
            if len(big) > 4000000:
                big = bytearray()


def stress(cycles):
    sampler = bytesampler.load()
    sys.setswitchinterval(0.0005)
    stop = threading.Event()
    threads = [
        threading.Thread(target=churn, args=(stop, random.Random(i)), daemon=True) for i in range(8)
    ]
    for t in threads:
        t.start()
    rng = random.Random(0)
    forked = None
    for cycle in range(cycles):
        # Let the threads allocate between cycles (they run while this thread waits).
        mark = PROGRESS[0] + 16
        while PROGRESS[0] < mark:
            time.sleep(0.001)
        rate = rng.choice([4096, 65536, 524288])
        order = cycle % 6
        if order == 0:
            sampler.start(rate)
            mark = PROGRESS[0] + 16
            while PROGRESS[0] < mark:
                time.sleep(0.001)
            sampler.table()
            sampler.compact()
            sampler.table()
            sampler.stop()
        elif order == 1:
            sampler.start(rate)
            tracemalloc.start(4)
            sampler.table()
            tracemalloc.stop()
            sampler.stop()
        elif order == 2:
            tracemalloc.start(1)
            sampler.start(rate)
            tracemalloc.take_snapshot()
            tracemalloc.stop()
            sampler.ensure_live()
            sampler.table()
            sampler.stop()
        elif order == 3:
            sampler.start(rate)
            tracemalloc.start(16)
            sampler.stop()
            sampler.stop()
            tracemalloc.stop()
        elif order == 4:
            tracemalloc.start(1)
            sampler.start(rate)
            sampler.table()
            sampler.stop()
            tracemalloc.stop()
        else:
            sampler.start(rate)
            sampler.table()
            sampler.stop()
            sampler.start(rate)
            sampler.stop()
        if cycle == cycles // 2 and hasattr(os, "fork"):
            sampler.start(rate)
            forked = os.fork()
            if forked == 0:
                os._exit(0 if not sampler.running and not sampler.is_live() else 7)
            sampler.stop()
    if forked:
        _, status = os.waitpid(forked, 0)
        if status != 0:
            return {"error": "fork child status %d" % status}
    sampler.start(4096)
    table = sampler.table()
    # Exit with the sampler running and the threads still allocating.
    return {"cycles": cycles, "live_samples": table.live_samples, "walk_errors": table.walk_errors}


def main():
    if MODE in ("selftest", "layout-fault"):
        try:
            bytesampler.load(_layout_fault=MODE == "layout-fault")
        except bytesampler.Unavailable as exc:
            return {"ok": False, "reason": str(exc)}
        return {"ok": True, "version": list(sys.version_info[:3])}
    if MODE == "accuracy":
        return {"rows": accuracy(int(sys.argv[3]), float(sys.argv[4]))}
    if MODE == "lifecycle":
        return lifecycle()
    if MODE == "subinterpreters":
        return subinterpreters()
    if MODE == "interplay":
        return interplay()
    if MODE == "stress":
        return stress(int(sys.argv[3]))
    raise SystemExit("unknown mode %r" % MODE)


print(json.dumps(main()), flush=True)
