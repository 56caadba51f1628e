"""Builds a heap of about BLOCKS live small objects from 64 sites, then waits to be
stopped; bench_refresh.py starts it with memtop's agent and times the agent's refreshes.

argv: READY_FILE BLOCKS WORKDIR
"""

import importlib
import os
import sys
import time

SITES = 64
SITE_SOURCE = "def site_{i}(n, tag):\n    return [(tag, None) for _ in range(n)]\n\n"


def main(argv):
    ready, blocks, workdir = argv[0], int(argv[1]), argv[2]
    path = os.path.join(workdir, "refresh_sites_%d.py" % os.getpid())
    with open(path, "w") as f:
        f.write("".join(SITE_SOURCE.format(i=i) for i in range(SITES)))
    sys.path.insert(0, workdir)
    sites = importlib.import_module(os.path.basename(path)[:-3])
    # Zipf-like sizes, so that the top rows differ as in a real heap.
    weights = [1.0 / (i + 1) for i in range(SITES)]
    scale = blocks / sum(weights)
    started = time.perf_counter()
    heap = [getattr(sites, "site_%d" % i)(int(w * scale), "x") for i, w in enumerate(weights)]
    built = time.perf_counter() - started
    with open(ready + ".tmp", "w") as f:
        f.write("%d %.1f\n" % (sum(len(part) for part in heap), built))
    os.replace(ready + ".tmp", ready)
    while True:
        time.sleep(1.0)


if __name__ == "__main__":
    main(sys.argv[1:])
