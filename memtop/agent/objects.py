"""Objects the garbage collector knows, by type; where instances of a type were
allocated; and what keeps one of them alive.

gc sees container objects only (instances, dicts, lists, tuples, sets, functions...):
strings, bytes and numbers show up through the tracemalloc rows instead. These walks run
on request only, never on every refresh, and they hold references to target objects only
while they run: every list is emptied before the answer is returned, so memtop never keeps
alive what it was asked to look at.
"""

import gc
import sys
import time
import tracemalloc

from . import safeview

MAX_TYPES = 200
MAX_SAMPLE = 1000


type_name = safeview.type_name


def count_types():
    """({type name: (count, shallow bytes)}, names whose size is the object's own struct
    because their class defines __sizeof__) over every object the gc tracks."""
    objects = gc.get_objects()
    try:
        # Group the objects themselves (no object is created per object: each would be
        # traced), then size each group with C-level loops. Keyed by id: a metaclass may
        # define __hash__ and __eq__, and the agent never calls them.
        groups = {}
        get = groups.get
        for obj in objects:
            kind = type(obj)
            members = get(id(kind))
            if members is None:
                groups[id(kind)] = [kind, obj]
            else:
                members.append(obj)
        del objects[:]
        totals = {}
        not_shown = set()
        for members in groups.values():
            kind = members[0]
            name = type_name(kind)
            if safeview.sizeof_is_builtin(kind):
                size = sum(map(sys.getsizeof, members[1:]))
            else:
                # The program's __sizeof__ is not called: count the object's own struct.
                size = sum(map(safeview.shallow_size, members[1:]))
                not_shown.add(name)
            count, old = totals.get(name, (0, 0))
            totals[name] = (count + len(members) - 1, old + size)
            del members[:]
        groups.clear()
        return totals, not_shown
    finally:
        del objects[:]


def rank_types(current, baseline, limit):
    """Rows sorted by growth since `baseline` (then by size): (name, count, size, dcount,
    dsize)."""
    rows = []
    for name, (count, size) in current.items():
        old = baseline.get(name, (0, 0)) if baseline is not None else (count, size)
        rows.append((name, count, size, count - old[0], size - old[1]))
    if baseline is not None:
        for name, (count, size) in baseline.items():
            if name not in current:
                rows.append((name, 0, 0, -count, -size))
    rows.sort(key=lambda r: (r[4], r[3], r[2]), reverse=True)
    return rows[:limit], len(rows)


def instances(name, limit):
    """Up to `limit` objects whose type is called `name`, the newest first."""
    verdicts = {}  # id(type) -> bool; the walk keeps every type alive meanwhile

    def named(obj):
        kind = type(obj)
        verdict = verdicts.get(id(kind))
        if verdict is None:
            verdict = verdicts[id(kind)] = type_name(kind) == name
        return verdict

    return _find(named, limit)


def allocation_sites(name, sample, limit):
    """Where instances of `name` were allocated: (traceback, count) of a bounded sample,
    plus how many were sampled and how many tracemalloc did not see."""
    objects = instances(name, sample)
    try:
        sites = {}
        untraced = 0
        for obj in objects:
            tb = tracemalloc.get_object_traceback(obj) if tracemalloc.is_tracing() else None
            if tb is None:
                untraced += 1
                continue
            key = tuple((frame.filename, frame.lineno) for frame in tb)  # oldest first
            sites[key] = sites.get(key, 0) + 1
        ranked = sorted(sites.items(), key=lambda item: item[1], reverse=True)[:limit]
        return ranked, len(objects), untraced
    finally:
        del objects[:]


def objects_allocated_at(filename, lineno, limit):
    """Up to `limit` gc-tracked objects whose allocating frame is filename:lineno."""
    if not tracemalloc.is_tracing():
        return []

    def allocated_there(obj):
        tb = tracemalloc.get_object_traceback(obj)
        return tb is not None and tb[-1].filename == filename and tb[-1].lineno == lineno

    return _find(allocated_there, limit)


def _find(matches, limit):
    """Up to `limit` gc-tracked objects for which `matches` is true, newest first."""
    found = []
    objects = gc.get_objects()
    try:
        for obj in reversed(objects):  # the most recently tracked objects first
            if matches(obj):
                found.append(obj)
                if len(found) >= limit:
                    break
    finally:
        del objects[:]
    return found


class Deadline:
    """A time limit for a walk."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def passed(self):
        return time.monotonic() > self.end
