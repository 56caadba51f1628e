"""How a program ended, in words and as memtop's exit status (DESIGN.md §7)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from memtop.ending import Ending


@pytest.mark.parametrize(
    ("ending", "words", "status"),
    [
        (Ending(code=0), "exited with code 0", 0),
        (Ending(code=7), "exited with code 7", 7),
        (Ending(signal=9), "killed by SIGKILL", 137),
        (Ending(signal=11), "killed by SIGSEGV", 139),
        (Ending(signal=77), "killed by signal 77", 205),
        (Ending(), "exited (its exit code is unknown", 3),
    ],
)
def test_words_and_exit_status(ending: Ending, words: str, status: int) -> None:
    assert str(ending).startswith(words)
    assert ending.exit_status == status


@pytest.mark.parametrize(
    ("code", "expected"),
    [("raise SystemExit(7)", Ending(code=7)), ("import os; os.abort()", Ending(signal=6))],
)
def test_from_a_real_wait_status(code: str, expected: Ending) -> None:
    proc = subprocess.Popen([sys.executable, "-c", code])
    _, status = os.waitpid(proc.pid, 0)
    proc.returncode = 0  # reaped above
    assert Ending.from_wait_status(status) == expected


def test_from_a_popen_return_code() -> None:
    assert Ending.from_returncode(-signal.SIGTERM) == Ending(signal=15)
    assert Ending.from_returncode(3) == Ending(code=3)
