"""Reports ready, then ends as HOW says once the file GO exists (the test creates it after
memtop has shown a refresh, so the end is always seen by a watching memtop).

argv: STATE HOW GO, HOW one of: exit0, exit7, sigkill, sigsegv.
"""

import os
import signal
import sys
import time

from _state import report

path, how, go = sys.argv[1], sys.argv[2], sys.argv[3]
kept = [bytearray(1000) for _ in range(100)]
report(path)
while not os.path.exists(go):
    if len(kept) < 5000:
        kept.append(bytearray(1000))  # a row at this line for a viewer that attached
    time.sleep(0.02)
if how == "exit0":
    sys.exit(0)
if how == "exit7":
    sys.exit(7)
if how == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)
if how == "sigsegv":
    os.kill(os.getpid(), signal.SIGSEGV)
time.sleep(60)
