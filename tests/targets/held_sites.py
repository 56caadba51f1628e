"""Holds a known number of bytes at six known lines, reports them, then idles.

argv: STATE [ring]
With `ring`, it then keeps allocating 8 MB/s at one more line into a ring of 10000 slots
(40 MB live at most), so that an attach made at any time sees that line grow.
The lines allocate only bytes objects (no free list, no container growth there: the
lists are made beforehand), so the exact size held at each is BLOCKS * sys.getsizeof of
one block, whatever the tracer.
"""

import sys
import time

from _state import report

BLOCKS = 500
SIZE = 4000
HELD = [[None] * BLOCKS for _ in range(6)]

for i in range(BLOCKS):
    HELD[0][i] = bytes(SIZE)  # LINE: site0
for i in range(BLOCKS):
    HELD[1][i] = bytes(SIZE)  # LINE: site1
for i in range(BLOCKS):
    HELD[2][i] = bytes(SIZE)  # LINE: site2
for i in range(BLOCKS):
    HELD[3][i] = bytes(SIZE)  # LINE: site3
for i in range(BLOCKS):
    HELD[4][i] = bytes(SIZE)  # LINE: site4
for i in range(BLOCKS):
    HELD[5][i] = bytes(SIZE)  # LINE: site5

report(
    sys.argv[1],
    file=__file__,
    truth=BLOCKS * sys.getsizeof(HELD[0][0]),
    blocks=BLOCKS,
    ready_time=time.time(),
)
RING = [None] * 10000
turn = 0
while len(sys.argv) > 2 and sys.argv[2] == "ring":
    for _ in range(100):
        RING[turn % 10000] = bytes(SIZE)  # LINE: ring
        turn += 1
    time.sleep(0.05)
while True:
    time.sleep(3600)
