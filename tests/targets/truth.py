"""Programs whose memory truth is known, for the verdict.

argv: STATE MODE
  python    a global list keeps Python objects: traced memory grows (# LINE: python_leak)
  native    C memory from malloc is touched and never freed: untraced memory grows
  fragment  many small objects, then two of every three freed (a checkerboard): traced
            falls, RSS stays
  steady    allocates and frees in a loop, keeping nothing (reports "warm" after 20 s,
            once the allocator has settled)
Each runs for at most two minutes, then idles (tests stop it long before).
"""

import ctypes
import sys
import time

from _state import report

STATE, MODE = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
kept = []
native = []
report(STATE, mode=MODE)

if MODE == "fragment":
    many = [b"x" * 90 + str(i).encode() for i in range(600000)]
    time.sleep(4.0)
    del many[::3], many[::2]  # two of every three gone: every pool keeps a survivor
    report(STATE, mode=MODE, freed=True)

deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    if MODE == "python":
        kept.extend({"n": i, "text": "item %d" % i} for i in range(400))  # LINE: python_leak
    elif MODE == "native":
        block = libc.malloc(1 << 17)
        libc.memset(block, 1, 1 << 17)
        native.append(block)
    elif MODE == "steady":
        scratch = [{"n": i} for i in range(4000)]
        del scratch
        if time.monotonic() > deadline - 100:
            report(STATE, mode=MODE, warm=True)
    time.sleep(0.05)
