"""Checks before attaching, reading /proc and binaries only: nothing runs in the target."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from memtop.agent import rundir
from memtop.attach import procfs
from memtop.attach.container import Container, container_of
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
    container: Container | None = None  # where it runs when not beside memtop

    @property
    def user(self) -> str:
        return user_name(self.uid)

    @property
    def own_pid(self) -> int:
        """The pid the process knows itself by (in its container's PID namespace): the
        pid in the names of its run dir's files."""
        return self.container.pid_inside if self.container else self.pid

    @property
    def own_uid(self) -> int:
        """The uid the process knows itself by (in its container's user namespace)."""
        return self.container.uid_inside if self.container else self.uid

    def root(self) -> rundir.ProcessRoot | None:
        """Where its paths start when it has a mount namespace of its own (close it), else
        None: its paths are memtop's. AttachError when it ended."""
        if self.container is None or not self.container.other_mounts:
            return None
        try:
            return rundir.ProcessRoot(self.pid, self.start)
        except PermissionError:
            from memtop.attach.diagnose import ptrace_refused

            raise AttachError(
                f"cannot reach the files of pid {self.pid} in its container (/proc/{self.pid}"
                f"/root needs the right to trace it): {ptrace_refused(self)}"
            ) from None
        except (OSError, rundir.RunDirError):
            raise AttachError(f"process {self.pid} exited") from None


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
    try:
        container = container_of(pid, status.uid, status.gid)
    except FileNotFoundError:
        raise AttachError(f"process {pid} exited") from None
    except OSError as exc:
        raise AttachError(
            f"cannot tell which container pid {pid} runs in: {exc.strerror or exc}"
        ) from None
    me = os.geteuid()
    if me != 0 and status.uid != me:
        raise AttachError(
            f"pid {pid} runs as {user_name(status.uid)}; run memtop as that user or as root"
        )
    try:
        python = detect_python(pid, contained=container is not None and container.other_mounts)
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
        container,
    )


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")
