"""Holds N small objects from one line, optionally growing by M per loop turn.

argv: STATE N [GROW_PER_TURN]
"""

import sys
import time

from _state import report

held = [("item", i) for i in range(int(sys.argv[2]))]  # LINE: held
grow = int(sys.argv[3]) if len(sys.argv) > 3 else 0
grown = []
counter = 0
while True:
    counter += 1
    if grow:
        grown.extend(("more", i) for i in range(grow))  # LINE: grown
    report(sys.argv[1], counter=counter)
    time.sleep(0.05)
