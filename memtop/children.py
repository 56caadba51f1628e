"""The Python children of watched parents (`--children` of `memtop PID` and `memtop export`),
attached as they appear. A process is known by its pid and start time: a pid outlives its
process, and the next process started, whoever's it is, may get it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import psutil

from memtop.attach import procfs
from memtop.errors import MemtopError
from memtop.source import LiveSource

MAX_ADOPTED_PER_REFRESH = 2  # attaching takes a while: new children join a few at a time


class Children:
    """The children of `parents` not attached yet, attached through `attach_member`; `note`
    says which could not be and which parent ended."""

    def __init__(
        self,
        parents: Iterable[int],
        attach_member: Callable[[int], LiveSource],
        note: Callable[[str], None],
        gone: Iterable[tuple[int, int]] = (),
    ) -> None:
        """`gone`: children, as (pid, start time), that are not to be attached."""
        # Children are looked for only while a parent's pid names the process it named at
        # first: afterwards it may name another program, with a family of its own.
        self.parents = {pid: start_of(pid) for pid in parents}
        self.attach_member = attach_member
        self.note = note
        self._starts: dict[int, int | None] = {}  # the processes watched
        self._gone: set[tuple[int, int | None]] = set(gone)  # ended, or refused

    def watching(self, pid: int) -> None:
        """`pid`, attached by the caller, is watched: not one to attach."""
        self._starts[pid] = start_of(pid)

    def left(self, pid: int) -> None:
        """`pid` is watched no more (it ended): never attached again, though a new process
        given its pid may be."""
        self._gone.add((pid, self._starts.pop(pid, None)))

    def adopt(self, limit: int = MAX_ADOPTED_PER_REFRESH) -> dict[int, LiveSource]:
        """Up to `limit` attempts at attaching the children not watched yet, oldest pid
        first; the attached ones are watched from now on, the others never tried again."""
        adopted: dict[int, LiveSource] = {}
        try:
            self._adopt(limit, adopted)
        except BaseException:  # interrupted: what was attached is not left behind
            for member in adopted.values():
                member.close()
            raise
        return adopted

    def _adopt(self, limit: int, adopted: dict[int, LiveSource]) -> None:
        tried = 0
        for parent, parent_start in list(self.parents.items()):
            if parent_start is None or start_of(parent) != parent_start:
                del self.parents[parent]
                self.note(f"pid {parent} ended: its new children are not looked for any more")
                continue
            for pid, start in python_children(parent, parent_start, self._known):
                if tried >= limit:
                    return
                if pid in self._starts:
                    continue  # a watched process ended and left its pid: dropped once seen
                tried += 1
                try:
                    adopted[pid] = attach_child(self.attach_member, pid, start)
                except MemtopError as exc:
                    self._gone.add((pid, start))
                    self.note(f"new child {pid} not attached: {exc.message}")
                    continue
                self._starts[pid] = start

    def _known(self, pid: int, start: int) -> bool:
        """Watched, ended or refused: not looked at again."""
        return self._starts.get(pid) == start or (pid, start) in self._gone


def start_of(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None once it is gone."""
    try:
        return procfs.start_time(pid)
    except (OSError, ValueError, IndexError):
        return None


def attach_child(attach_member: Callable[[int], LiveSource], pid: int, start: int) -> LiveSource:
    """Attach the child found as `pid` started at `start`. MemtopError when it has ended
    since: its pid names another process by now, or none."""
    if start_of(pid) != start:
        raise MemtopError("it ended (its pid names another process now, or none)")
    member = attach_member(pid)
    # Still that process now: then it held the pid all along, and the attach reached it.
    if start_of(pid) != start:
        member.close()  # perhaps another program's agent: detached again
        raise MemtopError("it ended while memtop attached (its pid names another process now)")
    return member


def children_of(parent: int, known: Iterable[int] = ()) -> list[int]:
    """The living descendants of `parent` that run CPython, oldest first; `known` ones are
    left out without a look (telling CPython reads the process's memory map)."""
    skip = set(known)
    return [pid for pid, _ in python_children(parent, None, lambda pid, _: pid in skip)]


def python_children(
    parent: int, parent_start: int | None, known: Callable[[int, int], bool]
) -> list[tuple[int, int]]:
    """The living descendants that run CPython, as (pid, start time), oldest pid first, of
    `parent` while it is the process started at `parent_start` (any, when None): none
    once it has ended, when its pid may name another process. `known(pid, start)` ones
    are left out without a look (telling CPython reads the process's memory map)."""
    from memtop.attach.pyversion import detect_python

    try:
        found = psutil.Process(parent).children(recursive=True)
    except psutil.Error:
        return []
    if parent_start is not None and start_of(parent) != parent_start:
        return []  # the list may be another process's family
    children = []
    for child in sorted(found, key=lambda p: p.pid):
        start = start_of(child.pid)
        if start is None or known(child.pid, start):
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE or detect_python(child.pid) is None:
                continue
        except (psutil.Error, OSError, ValueError):
            continue
        children.append((child.pid, start))
    return children
