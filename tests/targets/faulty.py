"""Breaks the agent on purpose: sampling raises MemoryError (or RuntimeError), and any
exception hook that fires records itself in the state file."""

import sys
import threading

from _state import serve_forever

hooks_called = []
sys.unraisablehook = lambda unraisable: hooks_called.append("unraisablehook")
threading.excepthook = lambda args: hooks_called.append("threading.excepthook")
sys.excepthook = lambda *exc: hooks_called.append("excepthook")

collector = sys.modules["_memtop_agent.collector"]
error = MemoryError if sys.argv[2] == "memory" else RuntimeError


def broken_take_sample(sample_id, read=None):
    raise error("fault injected by the test")


collector.take_sample = broken_take_sample
serve_forever(sys.argv[1], hooks=hooks_called)
