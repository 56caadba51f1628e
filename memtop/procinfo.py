"""What the viewer reads about the target from outside: RSS, USS, command line (psutil)."""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class ProcMemory:
    """Resident and unique set sizes in bytes; None where the OS would not tell."""

    rss: int | None
    uss: int | None


class ProcInfo:
    """psutil view of one process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self._proc: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self._proc = None
        self._uss_ok = True

    def memory(self) -> ProcMemory:
        """RSS and (when permitted) USS; both None once the process is gone."""
        proc = self._proc
        if proc is None:
            return ProcMemory(None, None)
        try:
            rss = int(proc.memory_info().rss)
        except psutil.Error:
            return ProcMemory(None, None)
        uss = None
        if self._uss_ok:
            try:
                uss = int(proc.memory_full_info().uss)
            except (psutil.Error, AttributeError):
                self._uss_ok = False  # not permitted or not supported: stop asking
        return ProcMemory(rss, uss)

    def cmdline(self) -> str:
        """The command line as one string ('' when unreadable)."""
        if self._proc is None:
            return ""
        try:
            return " ".join(self._proc.cmdline())
        except psutil.Error:
            return ""

    def create_time(self) -> float | None:
        """When the process started (epoch seconds), or None."""
        if self._proc is None:
            return None
        try:
            return float(self._proc.create_time())
        except psutil.Error:
            return None

    def alive(self) -> bool:
        """True while the process exists and is not a zombie."""
        if self._proc is None:
            return False
        try:
            return self._proc.is_running() and self._proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
