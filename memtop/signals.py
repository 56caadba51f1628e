"""What memtop does when it is told to go away by a signal rather than by a key.

SIGTERM (`kill`, `timeout`, a service manager) quits as `q` does: the program memtop
started is stopped, an attached agent is detached. SIGHUP (the terminal or SSH session went
away) leaves the agent serving, as `Q` does, so `memtop PID` later resumes it with its
history. Both arrive as KeyboardInterrupt, so every view's usual exit path runs.
"""

from __future__ import annotations

import os
import signal
import termios
from types import FrameType


class _State:
    hung_up = False
    terminal_fds: tuple[int, ...] = ()  # stdout/stderr when they were a terminal


def install() -> None:
    """Route SIGTERM and SIGHUP into memtop's ordinary exit path."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _hang_up)
    # Known now: once the terminal has hung up, isatty() on it fails too (EIO).
    _State.terminal_fds = tuple(fd for fd in (1, 2) if os.isatty(fd))


def hung_up() -> bool:
    """True once SIGHUP arrived: the agent should be left serving."""
    return _State.hung_up


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _hang_up(signum: int, frame: FrameType | None) -> None:
    _State.hung_up = True
    # The kernel follows a hang-up with SIGCONT. The TUI's driver answers SIGCONT by
    # taking the terminal again from its event loop, which is closing by then: an
    # error instead of exit status 130. Nothing is left to resume.
    signal.signal(signal.SIGCONT, signal.SIG_DFL)
    # A terminal that hung up fails every write (EIO), and nobody would read it. Whatever
    # still writes there (memtop's last words, the TUI's driver, the final flush at exit)
    # writes to /dev/null instead. A `kill -HUP` with the terminal still there, and output
    # redirected to a file or pipe, are left alone.
    gone = [fd for fd in _State.terminal_fds if not _answers(fd)]
    if gone:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for fd in gone:
                os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    raise KeyboardInterrupt


def _answers(fd: int) -> bool:
    """Whether the terminal on `fd` is still there (a hung-up one fails with EIO)."""
    try:
        termios.tcgetattr(fd)
    except (OSError, termios.error):
        return False
    return True
