"""Builds a heap of N live small objects, then times, in this process, what one refresh
costs it: the `_get_traces()` floor, memtop's agent, and the stdlib snapshot API.

argv: RESULT BLOCKS REPEATS WORKDIR

Meant to run under `memtop.attach.runner.start_program` (the agent traces with nframe 4 and
serves the same heap over its socket once the in-process numbers are written); run
directly, it starts tracemalloc itself. Measurements run round-robin, so slow drift of
the machine hits every column alike. Results go to RESULT as JSON; then the process
waits to be stopped.
"""

import _tracemalloc
import gc
import importlib
import json
import os
import sys
import time
import tracemalloc
import types

NFRAME = 4
SITES = 64
GROUPS = ("lineno", "traceback")
# One allocating line per site; the two callers below double the distinct tracebacks.
SITE_SOURCE = "def site_{i}(n, tag):\n    return [(tag, None) for _ in range(n)]\n\n"


def agent_module(name):
    """The agent's module as the launcher loaded it (the code that serves the socket)."""
    loaded = sys.modules.get("_memtop_agent." + name)
    return loaded if loaded is not None else importlib.import_module("memtop.agent." + name)


def write_sites(workdir):
    """Write and import a module with SITES allocation sites, so rows have real source."""
    path = os.path.join(workdir, "heap_sites.py")
    with open(path, "w") as f:
        f.write("".join(SITE_SOURCE.format(i=i) for i in range(SITES)))
    sys.path.insert(0, workdir)
    return importlib.import_module("heap_sites")


def via_loader(site, n):
    """First of two call paths into every site."""
    return site(n, "loader")


def via_worker(site, n):
    """Second call path into every site."""
    return site(n, "worker")


def build_heap(sites, blocks):
    """About `blocks` live 2-tuples (one traced block each) spread Zipf-like over the
    sites, so the top rows differ in size as in a real heap."""
    weights = [1.0 / (i + 1) for i in range(SITES)]
    scale = blocks / sum(weights)
    heap = []
    for i, weight in enumerate(weights):
        site = getattr(sites, f"site_{i}")
        n = int(weight * scale)
        heap.append(via_loader(site, n // 2))
        heap.append(via_worker(site, n - n // 2))
    return heap


def timed(work):
    """Seconds `work()` takes from a collected GC state (every column starts alike)."""
    gc.collect()
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def measure_floor():
    """(call seconds, call + free seconds) of `_get_traces()`: what any reader pays."""
    gc.collect()
    started = time.perf_counter()
    traces = _tracemalloc._get_traces()
    called = time.perf_counter()
    del traces
    return called - started, time.perf_counter() - started


def stdlib_refresh(group_by):
    """One refresh through the public API: snapshot, statistics, both freed."""
    snapshot = tracemalloc.take_snapshot()
    stats = snapshot.statistics(group_by)
    del stats, snapshot


class AgentRefresh:
    """The agent's `top` command on a private sampler, as the serving thread runs it."""

    def __init__(self):
        sampler = agent_module("sampler")
        commands = agent_module("commands")
        sources = agent_module("sources")
        # budget 1 and no minimum interval: every request reads the trace table afresh.
        stand_in = types.SimpleNamespace(
            sampler=sampler.Sampler(budget=1.0, min_interval=0.0),
            sources=sources.SourceLines(),
        )
        self.sampler = stand_in.sampler
        self.commands = commands.Commands(stand_in)
        self.client = commands.ClientState()
        self.collector = agent_module("collector")
        self.pause_ms = {group_by: [] for group_by in GROUPS}

    def wait_for_budget(self):
        """Sleep until the sampler allows a fresh sample (never inside a timed region).

        Even at budget 1 the sampler can ask for a short wait: the cost it charges for a
        sample may exceed the time that has passed since the sample started."""
        time.sleep(self.sampler.next_allowed_in())

    def top(self, group_by):
        """One `top` request (limit 50, fresh sample); remembers the reported pause."""
        args = {"group_by": group_by, "limit": 50, "max_age": 0.0}
        result = self.commands.cmd_top(args, self.client)
        if not result["sample"]["fresh"]:
            raise RuntimeError("the agent served a cached sample")
        self.pause_ms[group_by].append(result["sample"]["pause_ms"])

    def sample_only(self):
        """`take_sample()` alone, its result freed."""
        sample = self.collector.take_sample(0)
        del sample


def run_measurements(repeats):
    """Every column `repeats` times, round-robin; returns {column: [seconds, ...]}."""
    agent = AgentRefresh()
    for group_by in GROUPS:
        agent.wait_for_budget()
        agent.top(group_by)  # warm-up: source lines cached, a previous grouping to diff
    agent.pause_ms = {group_by: [] for group_by in GROUPS}
    columns = {"floor_call": [], "floor": [], "agent_sample": []}
    for group_by in GROUPS:
        columns["agent_top_" + group_by] = []
        columns["stdlib_" + group_by] = []
    for _ in range(repeats):
        call, total = measure_floor()
        columns["floor_call"].append(call)
        columns["floor"].append(total)
        columns["agent_sample"].append(timed(agent.sample_only))
        for group_by in GROUPS:
            agent.wait_for_budget()
            columns["agent_top_" + group_by].append(timed(lambda g=group_by: agent.top(g)))
            columns["stdlib_" + group_by].append(timed(lambda g=group_by: stdlib_refresh(g)))
    return columns, agent.pause_ms


def write_result(path, result):
    """Write atomically: the benchmark never reads half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, path)


def main(argv):
    """Build the heap, measure, report, then keep the heap alive for socket requests."""
    result_path, blocks, repeats, workdir = argv[0], int(argv[1]), int(argv[2]), argv[3]
    if not tracemalloc.is_tracing():
        tracemalloc.start(NFRAME)
    started = time.perf_counter()
    heap = build_heap(write_sites(workdir), blocks)
    built_in = time.perf_counter() - started
    traced_blocks = len(_tracemalloc._get_traces())
    columns, pause_ms = run_measurements(repeats)
    write_result(
        result_path,
        {
            "python": sys.version.split()[0],
            "nframe": tracemalloc.get_traceback_limit(),
            "traced_blocks": traced_blocks,
            "heap_lists": len(heap),
            "build_seconds": built_in,
            "columns": columns,
            "pause_ms": pause_ms,
        },
    )
    while True:
        time.sleep(1.0)


if __name__ == "__main__":
    main(sys.argv[1:])
