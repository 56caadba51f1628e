"""An idle program that reports what it holds once CPython's caches are set aside: the
allocated blocks after a collection and after clearing the type attribute cache, and its
atexit callback slots. For tests of what repeated attaches leave behind.

The type cache (4096 entries) keeps a reference to the name of each attribute looked up
through it, and C code looks names up with temporary strings: those stay alive until
their entry is reused, so the raw block count climbs for a while under any activity, the
program's own too, and then levels off. Clearing it first counts only what is really kept.

argv: STATE
"""

import atexit
import gc
import sys
import time

from _state import report

STATE = sys.argv[1]
counter = 0
while True:
    counter += 1
    gc.collect()
    getattr(sys, "_clear_internal_caches", sys._clear_type_cache)()
    report(
        STATE,
        counter=counter,
        settled_blocks=sys.getallocatedblocks(),
        atexit_callbacks=atexit._ncallbacks(),
    )
    time.sleep(0.05)
