"""A leaking loop for bench_footprint.py: the same number of iterations in every run.

    python footprint_target.py STATE ITERATIONS MODE
MODE: alone (tracemalloc only), reader (tracemalloc and a thread reading the whole trace
table every second, as a naive tool would), agent (memtop's agent starts tracing),
agent+ctypes (the same, in a program that imported ctypes: libffi is loaded).
It waits for STATE.go, leaks one object in ten, writes {"rss": ...} to STATE, then waits
for STATE.after and writes {"rss_after": ...} (the viewer has detached by then).
"""

import json
import os
import sys
import threading
import time
import tracemalloc


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def wait_for(path):
    while not os.path.exists(path):
        time.sleep(0.05)


def reader(stop):
    import _tracemalloc

    while not stop.is_set():
        stop.wait(1.0)
        traces = _tracemalloc._get_traces()
        del traces


def main():
    state, iterations, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "agent+ctypes":
        import ctypes  # noqa: F401 - what the agent looks for before it trims
    if mode in ("alone", "reader"):
        tracemalloc.start(4)
    stop = threading.Event()
    if mode == "reader":
        threading.Thread(target=reader, args=(stop,), daemon=True).start()
    wait_for(state + ".go")
    kept = []
    started = time.monotonic()
    for i in range(iterations):
        item = {"k": i, "v": str(i) * 3}
        if i % 10 == 0:
            kept.append(item)
    seconds = time.monotonic() - started
    stop.set()
    time.sleep(1.5)
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    with open(state + ".tmp", "w") as f:
        json.dump({"rss": rss(), "traced": traced, "seconds": seconds}, f)
    os.replace(state + ".tmp", state)
    wait_for(state + ".after")
    time.sleep(1.0)
    with open(state + ".tmp", "w") as f:
        json.dump({"rss_after": rss()}, f)
    os.replace(state + ".tmp", state)
    time.sleep(60)


main()
