"""A multiprocessing pool: the parent and WORKERS forked workers, each of which keeps
allocating at a known line (# LINE: worker_leak) for a while, then idles. The parent
reports the workers' pids.

argv: STATE WORKERS
"""

import multiprocessing
import os
import sys
import time

from _state import report

STATE, WORKERS = sys.argv[1], int(sys.argv[2])
KEPT = []


def work(seconds, parent):
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if os.getppid() != parent:
            os._exit(0)  # the parent is gone (killed by the test): so is the worker
        KEPT.append(bytes(512))  # LINE: worker_leak
        time.sleep(0.01)
    return os.getpid()


def pid_of(_):
    time.sleep(0.2)
    return os.getpid()


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    with multiprocessing.Pool(WORKERS) as pool:
        workers = sorted(set(pool.map(pid_of, range(WORKERS * 4), chunksize=1)))
        pool.starmap_async(work, [(3600, os.getpid())] * WORKERS, chunksize=1)
        counter = 0
        while True:
            counter += 1
            report(STATE, counter=counter, workers=workers)
            time.sleep(0.1)
