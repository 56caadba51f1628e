"""A target in a container: another mount namespace (its files start at its own root),
maybe another PID namespace (its pid there differs) and user namespace (its uids there
differ). memtop works from the host: it reaches the target's files from the target's
root directory (`rundir.ProcessRoot`, walked without following symlinks), names files
with the pid the target knows itself by, and leaves nothing behind when it is done.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from memtop.agent import rundir


@dataclass(frozen=True)
class Container:
    """Where a contained process runs, as seen from memtop."""

    pid_inside: int  # its pid in its own PID namespace (the last of NSpid)
    uid_inside: int  # its uid and gid in its own user namespace
    gid_inside: int
    namespaces: tuple[str, ...]  # of "mount", "PID", "user": those that are not memtop's
    pid_namespace: str  # "pid:[inode]"

    @property
    def other_mounts(self) -> bool:
        return "mount" in self.namespaces


NAMESPACES = (("mnt", "mount"), ("pid", "PID"), ("user", "user"))


def other_namespaces(pid: int) -> list[str]:
    """The namespaces, of those an attach goes through (files, pids, uids), in which `pid`
    is not where memtop is: e.g. ["mount", "PID", "user"], or []."""
    found = []
    for kind, name in NAMESPACES:
        try:
            theirs = os.stat(f"/proc/{pid}/ns/{kind}")
            mine = os.stat(f"/proc/self/ns/{kind}")
        except OSError:
            continue  # not readable: the checks that follow say why
        if (theirs.st_dev, theirs.st_ino) != (mine.st_dev, mine.st_ino):
            found.append(name)
    return found


def container_of(pid: int, uid: int, gid: int) -> Container | None:
    """The container `pid` (of host `uid`:`gid`) runs in, or None when it runs beside
    memtop (same mount and PID namespace). Raises OSError when /proc cannot tell."""
    elsewhere = other_namespaces(pid)
    if "mount" not in elsewhere and "PID" not in elsewhere:
        return None
    inside = pid_inside(pid)
    uid_inside = rundir.inside_id(pid, "uid_map", uid)
    gid_inside = rundir.inside_id(pid, "gid_map", gid)
    return Container(
        pid_inside=inside,
        uid_inside=uid if uid_inside is None else uid_inside,
        gid_inside=gid if gid_inside is None else gid_inside,
        namespaces=tuple(elsewhere),
        pid_namespace=os.readlink(f"/proc/{pid}/ns/pid"),
    )


def pid_inside(pid: int) -> int:
    """`pid`'s pid in its own PID namespace (the last field of NSpid)."""
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as status:
        for line in status:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return pid


def host_pids(pid_namespace: str) -> dict[int, int]:
    """{pid inside: pid here} of every process in the PID namespace `pid_namespace`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != pid_namespace:
                continue
            found[pid_inside(int(entry))] = int(entry)
        except (OSError, ValueError):
            continue
    return found


Alive = Callable[[int, int], bool]


def alive_inside(pid_namespace: str) -> Alive:
    """A liveness check for file names that carry pids of `pid_namespace`."""
    mapping = host_pids(pid_namespace)

    def alive(pid: int, start: int) -> bool:
        host = mapping.get(pid)
        if host is None:
            return False
        try:
            return rundir.process_start_time(host) == start
        except (OSError, ValueError, IndexError):
            return False

    return alive


# A container runtime's id in a cgroup path: Docker (/docker/<id>, docker-<id>.scope),
# containerd (cri-containerd-<id>.scope), CRI-O (crio-<id>.scope), Podman (libpod-<id>).
_RUNTIME_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?:\.scope)?(?:/|$)")


def container_id(cgroup: str) -> str | None:
    """The short (12 hex digits) id of the container a process's cgroups name, from the
    text of /proc/PID/cgroup; None when they name none."""
    for line in cgroup.splitlines():
        path = line.split(":", 2)[-1]
        match = _RUNTIME_ID.search(path)
        if match:
            return match.group(1)[:12]
    return None


def read_container_id(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            return container_id(f.read(64 * 1024))
    except OSError:
        return None
