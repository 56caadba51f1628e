"""A program with Python signal handlers, to be attached to while signals rain on it.

SIGUSR1 (as a "reopen logs" handler would be), SIGUSR2, SIGINT and SIGALRM are counted by
Python handlers; the counts are in the state under `signals`. faulthandler is on, so a
crash leaves a trace in the log.

argv: STATE KIND
  sleeping   main thread: report, sleep 0.05 s
  parked     like `sleeping`, plus a worker that waits in time.sleep (a parked thread)
  itimer     like `sleeping`, with an interval timer firing SIGALRM every 10 ms
  slow       main thread: report, sleep 5 s (a queued pending call waits that long)
  hog        a worker parked in a sleep of an hour; when the file STATE.hog appears, the
             main thread removes it and holds the GIL for seconds in C code (a regex)
"""

import faulthandler
import os
import re
import signal
import sys
import threading
import time

from _state import report

STATE, KIND = sys.argv[1], sys.argv[2]
COUNTED = ("SIGUSR1", "SIGUSR2", "SIGINT", "SIGALRM")
COUNTS = dict.fromkeys(COUNTED, 0)


def count(signum, frame):
    COUNTS[signal.Signals(signum).name] += 1


def nap(seconds):
    while True:
        time.sleep(seconds)


faulthandler.enable()
for name in COUNTED:
    signal.signal(getattr(signal, name), count)
if KIND in ("parked", "hog"):
    # The hog's worker must stay parked while the GIL is held: it never wakes up.
    nap_seconds = 3600 if KIND == "hog" else 0.05
    threading.Thread(target=nap, args=(nap_seconds,), daemon=True).start()
elif KIND == "itimer":
    signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
elif KIND not in ("sleeping", "slow", "hog"):
    sys.exit("unknown kind %r" % KIND)
interval = 5.0 if KIND == "slow" else 0.05
counter = 0
while True:
    counter += 1
    report(STATE, counter=counter, kind=KIND, signals=COUNTS)
    if KIND == "hog" and os.path.exists(STATE + ".hog"):
        os.unlink(STATE + ".hog")
        re.match(r"(a+)+$", "a" * 26 + "b")  # the regex engine never releases the GIL
    time.sleep(interval)
