"""What memtop does when it is told to go away by a signal rather than by a key.

SIGTERM (`kill`, `timeout`, a service manager) quits as `q` does: the program memtop
started is stopped, an attached agent is detached. SIGHUP (the terminal or SSH session went
away) leaves the agent serving, as `Q` does, so `memtop PID` later resumes it with its
history. Both arrive as KeyboardInterrupt, so every view's usual exit path runs.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


class _State:
    hung_up = False


def install() -> None:
    """Route SIGTERM and SIGHUP into memtop's ordinary exit path."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _hang_up)


def hung_up() -> bool:
    """True once SIGHUP arrived: the agent should be left serving."""
    return _State.hung_up


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _hang_up(signum: int, frame: FrameType | None) -> None:
    _State.hung_up = True
    # The terminal is gone: writing to it fails (EIO), and nobody would read it.
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            gone = stream is not None and stream.isatty()
        except (OSError, ValueError):
            gone = True
        if gone:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - for the rest of the run
    raise KeyboardInterrupt
