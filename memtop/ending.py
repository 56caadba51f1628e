"""How a watched program ended, in words and as memtop's own exit status (DESIGN.md §7).

The program's own exit code when it exited, 128 + N when signal N killed it (as shells
do), and EXIT_TARGET_GONE (3) when memtop cannot know: only a process's parent can read
its exit status once it has been reaped, so an attached program that is not memtop's
child usually ends without one.
"""

from __future__ import annotations

import signal as signals
from dataclasses import dataclass

from memtop.errors import EXIT_TARGET_GONE

UNKNOWN = "exited (its exit code is unknown: only its parent process can read it)"


@dataclass(frozen=True)
class Ending:
    """The end of a program: an exit code, a signal, or neither when it is unknown."""

    code: int | None = None
    signal: int | None = None
    words: str = UNKNOWN  # what to say when neither is known

    @classmethod
    def from_returncode(cls, returncode: int) -> Ending:
        """From a Popen return code (-N: killed by signal N)."""
        return cls(signal=-returncode) if returncode < 0 else cls(code=returncode)

    @classmethod
    def from_wait_status(cls, status: int) -> Ending:
        """From a raw wait status, as /proc/PID/stat shows a zombie's."""
        if status & 0x7F:
            return cls(signal=status & 0x7F)
        return cls(code=(status >> 8) & 0xFF)

    @property
    def known(self) -> bool:
        return self.code is not None or self.signal is not None

    @property
    def exit_status(self) -> int:
        """What memtop exits with after watching the program end this way."""
        if self.signal is not None:
            return 128 + self.signal
        if self.code is not None:
            return self.code
        return EXIT_TARGET_GONE

    def __str__(self) -> str:
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        if self.code is not None:
            return f"exited with code {self.code}"
        return self.words


def signal_name(number: int) -> str:
    """SIGKILL for 9; 'signal 77' for a number with no name."""
    try:
        return signals.Signals(number).name
    except ValueError:
        return f"signal {number}"
