"""The program under abuse: objects allocated at FILES distinct files, then a loop of small
allocations that reports its turn count, the time and its RSS to a state file.

argv: STATE FILES
"""

import json
import os
import sys
import time

STATE, FILES = sys.argv[1], int(sys.argv[2])
HELD = []
for index in range(FILES):
    code = compile("HELD.append([index, str(index)])", f"/srv/app/mod{index:05d}.py", "exec")
    exec(code, {"HELD": HELD, "index": index})


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


turns = 0
reported = time.monotonic()
while True:
    for _ in range(2000):
        turns += 1
        scratch = [turns, turns + 1, str(turns)]
    now = time.monotonic()
    if now - reported >= 0.1:
        reported = now
        tmp = STATE + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"turns": turns, "time": now, "rss": rss()}, f)
        os.replace(tmp, STATE)
