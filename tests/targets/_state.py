"""Shared by test targets: report the process's own state to a JSON file.

The file appearing is the target's "ready" signal; tests read it instead of sleeping.
"""

import gc
import json
import os
import sys
import time
import tracemalloc


def socket_fds():
    """Number of open socket fds in this process."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + name).startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def state(**extra):
    """This process as the tests see it."""
    gc.collect()  # count live blocks, not garbage that a collection would free anyway
    # And not names the type attribute cache keeps alive until their entry is reused
    # (see settled.py): the raw count climbs under any activity, then levels off.
    getattr(sys, "_clear_internal_caches", sys._clear_type_cache)()
    data = {
        "pid": os.getpid(),
        "time": time.time(),
        "tracing": tracemalloc.is_tracing(),
        "nframe": tracemalloc.get_traceback_limit() if tracemalloc.is_tracing() else 0,
        "threads": len(os.listdir("/proc/self/task")),
        "fds": len(os.listdir("/proc/self/fd")),
        "socket_fds": socket_fds(),
        "allocated_blocks": sys.getallocatedblocks(),
        "agent_loaded": "_memtop_agent" in sys.modules,
    }
    data.update(extra)
    return data


def report(path, **extra):
    """Write the state atomically (readers never see half a file)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(state(**extra), f)
    os.replace(tmp, path)


def serve_forever(path, interval=0.05, **extra):
    """Report every `interval` seconds, counting loop turns, until killed."""
    counter = 0
    while True:
        counter += 1
        report(path, counter=counter, **extra)
        time.sleep(interval)
