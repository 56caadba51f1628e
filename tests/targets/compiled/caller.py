"""Holds 4 MB allocated by one call: into the C extension allocmod (argv MODE "compiled",
built by the test beside this file or in the directory named by argv DIR), or by a Python
comprehension ("python"). Then idles, reporting.

argv: STATE MODE [DIR]
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from _state import report

STATE, MODE = sys.argv[1], sys.argv[2]
if MODE == "compiled":
    sys.path.insert(0, sys.argv[3])
    import allocmod

    KEPT = allocmod.hold(4000, 1000)  # LINE: compiled_call
else:
    KEPT = [bytes(1000) for _ in range(4000)]  # LINE: python_call

counter = 0
while True:
    counter += 1
    report(STATE, counter=counter)
    time.sleep(0.1)
