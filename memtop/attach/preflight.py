"""Checks before attaching, reading /proc and binaries only: nothing runs in the target."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from memtop.attach import procfs
from memtop.attach.diagnose import ptrace_advice
from memtop.attach.procfs import user_name
from memtop.attach.pyversion import PythonInfo, detect_python
from memtop.errors import AttachError

MIN_VERSION = (3, 9)


@dataclass(frozen=True)
class Target:
    """A process memtop may attach to."""

    pid: int
    start: int
    uid: int
    gid: int
    name: str
    python: PythonInfo
    environ: dict[str, str] = field(default_factory=dict)
    cmdline: list[str] = field(default_factory=list)

    @property
    def user(self) -> str:
        return user_name(self.uid)


def preflight(pid: int) -> Target:
    """The target, or AttachError naming why memtop will not touch it."""
    if pid == os.getpid():
        raise AttachError("that is memtop itself")
    try:
        status = procfs.read_status(pid)
        start = procfs.start_time(pid)
    except (FileNotFoundError, ProcessLookupError):
        raise AttachError(f"no process with pid {pid}") from None
    except PermissionError:
        raise AttachError(f"cannot read /proc/{pid}: permission denied") from None
    if status.state == "Z":
        raise AttachError(f"process {pid} is a zombie: it has exited")
    if status.state == "T":
        raise AttachError(
            f"process {pid} is stopped (SIGSTOP or Ctrl-Z); resume it with `kill -CONT {pid}` "
            "and retry"
        )
    if status.tracer_pid or status.state == "t":
        tracer = status.tracer_pid
        what = procfs.read_status(tracer).name if tracer and _exists(tracer) else "a debugger"
        raise AttachError(
            f"process {pid} is already traced by pid {tracer} ({what}); detach it first"
        )
    elsewhere = other_namespaces(pid)
    if elsewhere:
        raise AttachError(
            f"pid {pid} runs in another container (its {' and '.join(elsewhere)} namespace "
            "is not memtop's): memtop does not attach across containers yet. Run memtop "
            "inside that container, where it needs only CPython (e.g. `kubectl exec -it POD "
            "-- sh -c 'pip install pymemtop && memtop ps'`, or `docker exec`)"
        )
    me = os.geteuid()
    if me != 0 and status.uid != me:
        raise AttachError(
            f"pid {pid} runs as {user_name(status.uid)}; run memtop as that user or as root"
        )
    try:
        python = detect_python(pid)
    except PermissionError:
        if me == 0 and not procfs.have_cap_sys_ptrace():
            raise AttachError(
                f"cannot read pid {pid}'s memory map: "
                + ptrace_advice(procfs.yama_scope(), True, False, pid)
            ) from None
        raise AttachError(
            f"pid {pid} is non-dumpable (setuid, or it called PR_SET_DUMPABLE 0): only root "
            "with CAP_SYS_PTRACE can attach; or start it with `memtop run`, or opt in with "
            "`memtop.agent.start()`"
        ) from None
    except FileNotFoundError:
        raise AttachError(f"process {pid} exited") from None
    if python is None:
        raise AttachError(f"pid {pid} ({status.name}) is not a CPython process")
    if python.version < MIN_VERSION:
        raise AttachError(
            f"pid {pid} runs CPython {python.label}; memtop attaches to CPython 3.9 and newer"
        )
    if python.free_threaded:
        raise AttachError(
            f"pid {pid} runs free-threaded CPython {python.label}, which memtop does not "
            "attach to yet; `memtop run` works for it"
        )
    return Target(
        pid,
        start,
        status.uid,
        status.gid,
        status.name,
        python,
        procfs.read_environ(pid),
        procfs.read_cmdline(pid),
    )


def other_namespaces(pid: int) -> list[str]:
    """The namespaces, of those an attach goes through (files and pids), in which `pid`
    is not where memtop is: ["mount", "PID"], or []."""
    found = []
    for kind, name in (("mnt", "mount"), ("pid", "PID")):
        try:
            theirs = os.stat(f"/proc/{pid}/ns/{kind}")
            mine = os.stat(f"/proc/self/ns/{kind}")
        except OSError:
            continue  # not readable: the checks that follow say why
        if (theirs.st_dev, theirs.st_ino) != (mine.st_dev, mine.st_ino):
            found.append(name)
    return found


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")
