"""Watches a family of processes with memtop.group.GroupSource while pids are handed to
other programs on purpose; prints what the group took in, as one JSON object.

Run as root as pid 1 of a new pid namespace (`unshare --pid --fork --mount-proc`): there
nothing else starts processes, and writing N to /proc/sys/kernel/ns_last_pid makes N + 1
the next pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from memtop.attach.chain import attach
from memtop.attach.pyversion import detect_python
from memtop.group import GroupSource
from memtop.model import Query
from memtop.source import LiveSource

NAP = "import time\nwhile True: time.sleep(0.05)"
# Starts a napping Python child for each line on stdin and prints its pid; children that
# end are reaped at once (SIGCHLD ignored), so their pids are free again. Ends at EOF.
FAMILY = f"""
import select, signal, subprocess, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
kids = []
while True:
    if select.select([sys.stdin], [], [], 0.05)[0]:
        if not sys.stdin.readline():
            break  # the driver is gone
        kids.append(subprocess.Popen([sys.executable, "-c", {NAP!r}]))
        print(kids[-1].pid, flush=True)
"""


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def runs_python(pid: int) -> bool:
    try:
        return detect_python(pid) is not None
    except (OSError, ValueError):
        return False


def gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


def start_as(pid: int, argv: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start `argv` as process `pid` (a pid no process has now). A thread started meanwhile
    takes a pid too: then the pid is asked for again once that thread has ended."""
    deadline = time.monotonic() + 30
    while True:
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        proc = subprocess.Popen(argv, **kwargs)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
        holder = _status(pid)
        if time.monotonic() > deadline:
            raise SystemExit(f"wanted pid {pid}, got {proc.pid}; {pid} is {holder}")
        print(f"pid {pid} taken meanwhile by {holder}", file=sys.stderr)
        wait_for(lambda: gone(pid), f"pid {pid} to be free again")


def _status(pid: int) -> str:
    """Who holds `pid` (its name and thread group), for a message."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = [line.split(None, 1) for line in f if line.startswith(("Name:", "Tgid:"))]
    except OSError:
        return "gone again"
    return " ".join(value.strip() for _, value in fields)


def attach_member(pid: int) -> LiveSource:
    attached = attach(pid, "auto", 4, 30.0, False)
    return LiveSource(attached.client, pid, attached.how, token=attached.token)


def main() -> None:
    python = sys.executable
    other = subprocess.Popen([python, "-c", NAP])  # keeps the group going without the family
    family = subprocess.Popen(
        [python, "-c", FAMILY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    stdin, stdout = family.stdin, family.stdout
    assert stdin is not None and stdout is not None

    def spawn() -> int:
        stdin.write("\n")
        stdin.flush()
        return int(stdout.readline())

    wait_for(lambda: runs_python(family.pid) and runs_python(other.pid), "the family to start")
    strangers: list[subprocess.Popen] = []
    first = second = 0

    def adopt(pid: int) -> LiveSource:
        # Found both children; before the first is attached the second ends and its pid
        # goes to a program of no relation to the family.
        if pid == first and not strangers:
            os.kill(second, signal.SIGKILL)
            wait_for(lambda: gone(second), "the second child to be reaped")
            strangers.append(start_as(second, [python, "-c", NAP]))
            wait_for(lambda: runs_python(second), "the stranger to start")
        return attach_member(pid)

    notes: list[str] = []
    group = GroupSource(
        {pid: attach_member(pid) for pid in (family.pid, other.pid)},
        adopt,
        notes.append,
        parent=family.pid,
    )
    query = Query()
    try:
        group.refresh(query, 0.5)
        first, second = spawn(), spawn()
        wait_for(lambda: runs_python(first) and runs_python(second), "both children")
        after_swap = sorted(p.pid for p in group.refresh(query, 0.5).processes)

        # The parent ends and its pid goes to another program, with a Python child.
        family.kill()
        family.wait()
        wait_for(
            lambda: family.pid not in {p.pid for p in group.refresh(query, 0.5).processes},
            "the parent to drop out",
        )
        impostor = start_as(
            family.pid, [python, "-c", FAMILY], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        strangers.append(impostor)
        assert impostor.stdin is not None and impostor.stdout is not None
        impostor.stdin.write(b"\n")
        impostor.stdin.flush()
        its_child = int(impostor.stdout.readline())
        wait_for(lambda: runs_python(its_child), "the other program's child")
        for _ in range(3):  # a new child is attached on the refresh that finds it
            after_parent = sorted(p.pid for p in group.refresh(query, 0.5).processes)
    finally:
        group.close()
    print(
        json.dumps(
            {
                "first": first,
                "second": second,
                "other": other.pid,
                "its_child": its_child,
                "after_swap": after_swap,
                "after_parent": after_parent,
                "notes": notes,
            }
        )
    )


if __name__ == "__main__":
    main()
