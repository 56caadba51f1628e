"""Stops or restarts tracemalloc on request, as a program with its own tracing might.

argv: STATE COMMANDS

COMMANDS is a file the test appends lines to; each new line is carried out once:
  restart:N   tracemalloc.stop(), then tracemalloc.start(N)
  stop        tracemalloc.stop()
The state lists the commands done, and (as every target's) whether tracing is on.
"""

import sys
import time
import tracemalloc

from _state import report

state_path, commands_path = sys.argv[1], sys.argv[2]
done = []
counter = 0
while True:
    counter += 1
    try:
        with open(commands_path) as f:
            lines = f.read().split()
    except FileNotFoundError:
        lines = []
    for command in lines[len(done) :]:
        tracemalloc.stop()
        if command.startswith("restart:"):
            tracemalloc.start(int(command.split(":")[1]))
        done.append(command)
    report(state_path, counter=counter, done=done)
    time.sleep(0.05)
