"""Watches a family of processes with memtop.group.GroupSource (argument `group`) or
memtop export (`export`) while pids are handed to other programs on purpose; prints what
was taken in, as one JSON object.

Run as root as pid 1 of a new pid namespace (`unshare --pid --fork --mount-proc`): there
nothing else starts processes, and writing N to /proc/sys/kernel/ns_last_pid makes N + 1
the next pid.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from conftest import free_port

from memtop.attach.chain import attach
from memtop.attach.pyversion import detect_python
from memtop.fleet.export_command import run_export
from memtop.group import GroupSource
from memtop.model import Query
from memtop.source import LiveSource

T = TypeVar("T")
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
    """Start `argv` as process `pid` (a pid no process has now)."""

    def end(proc: subprocess.Popen) -> None:
        proc.kill()
        proc.wait()

    return as_pid(pid, lambda: subprocess.Popen(argv, **kwargs), lambda proc: proc.pid, end)


def as_pid(
    pid: int, start: Callable[[], T], pid_of: Callable[[T], int], end: Callable[[T], None]
) -> T:
    """What `start` started as process `pid` (a pid no process has now). A thread started
    meanwhile takes a pid too: then the process started is ended, and the pid asked for
    again once that thread has ended."""
    deadline = time.monotonic() + 30
    while True:
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        started = start()
        if pid_of(started) == pid:
            return started
        end(started)
        holder = _status(pid)
        if time.monotonic() > deadline:
            raise SystemExit(f"wanted pid {pid}, got {pid_of(started)}; {pid} is {holder}")
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


def watch_group() -> dict[str, Any]:
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
    return {
        "first": first,
        "second": second,
        "other": other.pid,
        "its_child": its_child,
        "after_swap": after_swap,
        "after_parent": after_parent,
        "notes": notes,
    }


class Family:
    """A FAMILY program: starts a napping Python child on request."""

    def __init__(self, proc: subprocess.Popen) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.stdin, self.stdout = proc.stdin, proc.stdout
        self.pid = proc.pid

    @classmethod
    def start(cls, pid: int | None = None) -> Family:
        argv = [sys.executable, "-c", FAMILY]
        pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        if pid is None:
            return cls(subprocess.Popen(argv, text=True, **pipes))
        return cls(start_as(pid, argv, text=True, **pipes))

    def spawn(self) -> int:
        self.stdin.write("\n")
        self.stdin.flush()
        child = int(self.stdout.readline())
        wait_for(lambda: runs_python(child), f"child {child} to run Python")
        return child

    def spawn_as(self, pid: int) -> int:
        """A new child as process `pid` (a pid no process has now)."""

        def end(child: int) -> None:
            os.kill(child, signal.SIGKILL)
            wait_for(lambda: gone(child), f"child {child} to be reaped")

        return as_pid(pid, self.spawn, lambda child: child, end)


def watch_export() -> dict[str, Any]:
    """`memtop export FAMILY OTHER --children` run in this process (its attach function
    hands a child's pid to a stranger on the way), the families changed from a thread."""
    family, other = Family.start(), Family.start()
    wait_for(lambda: runs_python(family.pid) and runs_python(other.pid), "the families")
    first, second = family.spawn(), family.spawn()
    strangers: list[subprocess.Popen] = []

    def adopt(pid: int) -> LiveSource:
        # Export found both children; before the first is attached the second ends and
        # its pid goes to a program of no relation to the family.
        if pid == first and not strangers:
            os.kill(second, signal.SIGKILL)
            wait_for(lambda: gone(second), "the second child to be reaped")
            strangers.append(start_as(second, [sys.executable, "-c", NAP]))
            wait_for(lambda: runs_python(second), "the stranger to start")
        return attach_member(pid)

    err = io.StringIO()
    port = free_port()
    seen: dict[str, Any] = {
        "family": family.pid, "other": other.pid, "first": first, "second": second
    }  # fmt: skip

    def served() -> list[int]:
        """The pids /metrics serves now."""
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            return []
        return sorted(int(pid) for pid in re.findall(r'^memtop_rss_bytes\{pid="(\d+)"', text, re.M))

    def settled(*left: int) -> list[int] | None:
        """What /metrics serves once it serves every living process export attached, but
        `left`."""
        attached = {int(pid) for pid in re.findall(r"attached to pid (\d+)", err.getvalue())}
        pids = served()
        living = {pid for pid in attached - set(left) if not gone(pid)}
        return pids if living <= set(pids) else None

    def change_families() -> None:
        try:
            seen["after_swap"] = wait_for(lambda: first in served() and settled(), "children")
            # The first child ends; the family's next child is given its pid.
            os.kill(first, signal.SIGKILL)
            wait_for(lambda: first not in served(), "the first child to drop out")
            family.spawn_as(first)
            seen["reborn"] = wait_for(lambda: first in served() and settled(), f"pid {first} again")
            # The parent ends and its pid goes to another program, with a Python child.
            family.proc.kill()
            family.proc.wait()
            wait_for(lambda: family.pid not in served(), "the parent to drop out")
            impostor = Family.start(family.pid)
            strangers.append(impostor.proc)
            seen["its_child"] = impostor.spawn()
            # Children are looked for parent by parent, at each refresh: once a child of
            # OTHER born later is attached, the other program's child was passed over.
            seen["later"] = later = other.spawn()
            seen["after_parent"] = wait_for(
                lambda: later in served() and settled(family.pid), "the later child"
            )
        except BaseException as exc:
            seen["failed"] = repr(exc)
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # export stops as on Ctrl-C

    thread = threading.Thread(target=change_families)
    thread.start()
    try:
        seen["code"] = run_export(
            [family.pid, other.pid],
            f"127.0.0.1:{port}",
            Query(),
            top=5,
            interval=0.3,
            keep_agent=False,
            attach_member=adopt,
            err=err,
            children=True,
        )
    finally:
        thread.join()
    seen["err"] = err.getvalue()
    return seen


if __name__ == "__main__":
    print(json.dumps(watch_export() if sys.argv[1:] == ["export"] else watch_group()))
