"""Forks once the trigger file exists; the child reports its state, lingers, then exits.

argv: STATE TRIGGER CHILD_STATE CHILD_LINGER_SECONDS [multiprocessing]
"""

import os
import sys
import time

from _state import report

state_path, trigger, child_state, linger = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
use_mp = len(sys.argv) > 5 and sys.argv[5] == "multiprocessing"


def child_main(path, seconds):
    report(path)
    time.sleep(seconds)


counter = 0
forked = False
while True:
    counter += 1
    if not forked and os.path.exists(trigger):
        forked = True
        if use_mp:
            import multiprocessing

            ctx = multiprocessing.get_context("fork")
            proc = ctx.Process(target=child_main, args=(child_state, linger))
            proc.start()
        else:
            pid = os.fork()
            if pid == 0:
                child_main(child_state, linger)
                os._exit(0)
    report(state_path, counter=counter, forked=forked)
    time.sleep(0.05)
