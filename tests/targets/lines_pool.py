"""Forked workers that keep blocks of given sizes at known lines (# LINE: a … e), each
worker its own sizes; the parent reports the workers' pids and what tracemalloc holds at
those lines in each of them. Run it with `-X tracemalloc` (the workers inherit tracing).

argv: STATE SIZES   (SIZES: a JSON list with one {line name: bytes} per worker)
"""

import json
import os
import sys
import time
import tracemalloc

from _state import report

STATE, SIZES = sys.argv[1], json.loads(sys.argv[2])
KEPT = []


def keep(name, size):
    if name == "a":
        KEPT.append(bytearray(size))  # LINE: a
    elif name == "b":
        KEPT.append(bytearray(size))  # LINE: b
    elif name == "c":
        KEPT.append(bytearray(size))  # LINE: c
    elif name == "d":
        KEPT.append(bytearray(size))  # LINE: d
    elif name == "e":
        KEPT.append(bytearray(size))  # LINE: e


def held():
    """{line name: bytes tracemalloc holds there} in this process."""
    with open(__file__) as f:
        names = {
            number: text.split("# LINE: ", 1)[1].strip()
            for number, text in enumerate(f, 1)
            if "# LINE: " in text
        }
    found = {}
    for stat in tracemalloc.take_snapshot().statistics("lineno"):
        frame = stat.traceback[0]
        if frame.filename == __file__ and frame.lineno in names:
            found[names[frame.lineno]] = stat.size
    return found


def work(sizes, parent, out):
    for name, size in sorted(sizes.items()):
        keep(name, size)
    os.write(out, (json.dumps(held()) + "\n").encode())
    os.close(out)
    while os.getppid() == parent:
        time.sleep(0.05)
    os._exit(0)  # the parent is gone (killed by the test): so is the worker


if __name__ == "__main__":
    answers = {}
    for sizes in SIZES:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            work(sizes, os.getppid(), write_end)
        os.close(write_end)
        answers[pid] = read_end
    held_by = {}
    for pid, read_end in answers.items():
        with os.fdopen(read_end) as f:
            held_by[str(pid)] = json.loads(f.readline())
    while True:
        report(STATE, workers=list(answers), held=held_by)
        time.sleep(0.5)
