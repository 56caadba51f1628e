"""A program with Python signal handlers, to be attached to while signals rain on it.

SIGUSR1 (as a "reopen logs" handler would be), SIGUSR2, SIGINT and SIGALRM are counted by
Python handlers; the counts are in the state under `signals`. faulthandler is on, so a
crash leaves a trace in the log.

argv: STATE KIND
  sleeping   main thread: report, sleep 0.05 s
  parked     like `sleeping`, plus a worker that waits in time.sleep (a parked thread)
  itimer     like `sleeping`, with an interval timer firing SIGALRM every 10 ms
  slow       main thread: report, sleep 5 s (a queued pending call waits that long)
"""

import faulthandler
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


def nap():
    while True:
        time.sleep(0.05)


faulthandler.enable()
for name in COUNTED:
    signal.signal(getattr(signal, name), count)
if KIND == "parked":
    threading.Thread(target=nap, daemon=True).start()
elif KIND == "itimer":
    signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
elif KIND not in ("sleeping", "slow"):
    sys.exit("unknown kind %r" % KIND)
interval = 5.0 if KIND == "slow" else 0.05
counter = 0
while True:
    counter += 1
    report(STATE, counter=counter, kind=KIND, signals=COUNTS)
    time.sleep(interval)
