"""`memtop ps`: the Python processes memtop could attach to, and which have an agent."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from memtop.agent import rundir
from memtop.attach import container
from memtop.attach.container import other_namespaces, pid_inside
from memtop.attach.procfs import read_environ
from memtop.attach.pyversion import detect_python


@dataclass(frozen=True)
class PythonProcess:
    """One row of `memtop ps`."""

    pid: int
    python: str
    rss: int
    user: str
    agent: bool  # a memtop agent serves in it
    command: str
    ppid: int = 0  # its parent process
    # In another container: {"pid_inside": its pid there, "namespace": "pid:[inode]"},
    # and "id" (12 hex digits) when its cgroups name a container runtime's id.
    container: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def python_processes(all_users: bool = False) -> list[PythonProcess]:
    """CPython processes of this user (every user's when `all_users`), biggest RSS first."""
    me = os.geteuid()
    found = []
    for proc in psutil.process_iter(
        ["pid", "ppid", "uids", "gids", "username", "cmdline", "memory_info"]
    ):
        info = proc.info
        if info["pid"] == os.getpid() or info["uids"] is None:
            continue
        if not all_users and info["uids"].effective != me:
            continue
        try:
            python = detect_python(info["pid"], contained="mount" in other_namespaces(info["pid"]))
        except (OSError, ValueError):
            continue
        if python is None:
            continue
        rss = info["memory_info"].rss if info["memory_info"] else 0
        found.append(
            PythonProcess(
                pid=info["pid"],
                python=python.label,
                rss=rss,
                user=info["username"] or "",
                agent=agent_serving(info["pid"], info["uids"].effective, info["gids"].effective),
                command=" ".join(info["cmdline"] or []),
                ppid=info["ppid"] or 0,
                container=container_of(info["pid"]),
            )
        )
    return sorted(found, key=lambda p: p.rss, reverse=True)


def container_of(pid: int) -> dict[str, Any] | None:
    """Where `pid` runs when its PID or mount namespace is not memtop's: its pid inside
    (the last of NSpid) and the namespace; None when it runs beside memtop."""
    elsewhere = other_namespaces(pid)
    if "mount" not in elsewhere and "PID" not in elsewhere:
        return None
    inside = pid
    try:
        inside = pid_inside(pid)
        namespace = os.readlink(f"/proc/{pid}/ns/pid")
    except (OSError, ValueError):
        namespace = "?"
    found: dict[str, Any] = {"pid_inside": inside, "namespace": namespace}
    runtime_id = container.read_container_id(pid)
    if runtime_id is not None:
        found["id"] = runtime_id
    return found


def as_tree(processes: list[PythonProcess]) -> list[tuple[int, PythonProcess]]:
    """(depth, process) in tree order: each process under its nearest listed ancestor (a
    gunicorn master above its workers, a pool's parent above the pool), siblings by RSS."""
    listed = {p.pid: p for p in processes}
    parent_of: dict[int, int] = {}
    for process in processes:
        ancestor = process.ppid
        seen = 0
        while ancestor > 1 and ancestor not in listed and seen < 64:
            ancestor = _parent(ancestor)
            seen += 1
        parent_of[process.pid] = ancestor if ancestor in listed else 0
    children: dict[int, list[PythonProcess]] = {}
    for process in processes:
        children.setdefault(parent_of[process.pid], []).append(process)
    ordered: list[tuple[int, PythonProcess]] = []

    def visit(pid: int, depth: int) -> None:
        for child in sorted(children.get(pid, []), key=lambda p: p.rss, reverse=True):
            ordered.append((depth, child))
            if depth < 32:
                visit(child.pid, depth + 1)

    visit(0, 0)
    return ordered


def _parent(pid: int) -> int:
    try:
        return int(psutil.Process(pid).ppid())
    except psutil.Error:
        return 0


def agent_serving(pid: int, uid: int, gid: int) -> bool:
    """True when the process's agent socket accepts connections (rundir.listening, as an
    attach asks it: as root, in the run dir of the process's user; in a container, from
    the process's own root)."""
    try:
        start = rundir.process_start_time(pid)
        box = container.container_of(pid, uid, gid)
        root = rundir.ProcessRoot(pid, start) if box and box.other_mounts else None
    except (OSError, ValueError, rundir.RunDirError):
        return False
    try:
        own_pid, own_uid = (box.pid_inside, box.uid_inside) if box else (pid, uid)
        path = rundir.default_run_dir(own_uid, read_environ(pid), root, uid)
        with rundir.open_run_dir(path, uid, root=root) as run_dir:
            return rundir.listening(run_dir, rundir.socket_name(own_pid, start))
    except (rundir.RunDirError, OSError):
        return False
    finally:
        if root is not None:
            root.close()
