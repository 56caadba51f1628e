"""Reports ready, then ends after DELAY seconds in the way MODE names.

argv: STATE MODE DELAY, MODE one of: code (exit status 3), sigterm, sigkill, os_exit.
"""

import os
import signal
import sys
import time

from _state import report

path, mode, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
report(path)
time.sleep(delay)
report(path, exiting=time.time())
if mode == "code":
    sys.exit(3)
elif mode == "sigterm":
    os.kill(os.getpid(), signal.SIGTERM)
elif mode == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "os_exit":
    os._exit(4)
time.sleep(60)
