"""Facts about a process read from /proc, without running anything in it."""

from __future__ import annotations

import os
import platform
import pwd
from dataclasses import dataclass

from memtop.agent import rundir

# Syscall numbers of the calls a parked main thread is usually blocked in.
_SYSCALLS = {
    "x86_64": {
        0: "read",
        7: "poll",
        23: "select",
        35: "nanosleep",
        43: "accept",
        45: "recvfrom",
        47: "recvmsg",
        61: "wait4",
        202: "futex",
        230: "clock_nanosleep",
        232: "epoll_wait",
        270: "pselect6",
        271: "ppoll",
        281: "epoll_pwait",
        288: "accept4",
        441: "epoll_pwait2",
    },
    "aarch64": {
        63: "read",
        73: "ppoll",
        72: "pselect6",
        98: "futex",
        101: "nanosleep",
        115: "clock_nanosleep",
        202: "accept",
        207: "recvfrom",
        212: "recvmsg",
        242: "accept4",
        260: "wait4",
        22: "epoll_pwait",
    },
}
# What Python code usually sits in each: said in the message about a blocked main thread.
_PYTHON_HINTS = {
    "clock_nanosleep": "time.sleep",
    "nanosleep": "time.sleep",
    "futex": "a lock, Thread.join() or queue.get()",
    "select": "select()/selectors",
    "pselect6": "select()/selectors",
    "poll": "a poll/selectors loop",
    "ppoll": "a poll loop",
    "epoll_wait": "an event loop (asyncio, selectors)",
    "epoll_pwait": "an event loop",
    "epoll_pwait2": "an event loop",
    "read": "a blocking read",
    "recvfrom": "a socket read",
    "recvmsg": "a socket read",
    "accept": "a socket accept()",
    "accept4": "a socket accept()",
    "wait4": "waiting for a child process",
}


@dataclass(frozen=True)
class ProcStatus:
    """The fields of /proc/PID/status memtop needs."""

    name: str
    state: str  # R S D Z T t ...
    tracer_pid: int
    uid: int  # effective uid
    gid: int
    cap_eff: int


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def proc_path(pid: int, *parts: str) -> str:
    return os.path.join("/proc", str(pid), *parts)


def read_status(pid: int) -> ProcStatus:
    """Parse /proc/PID/status; raises FileNotFoundError when the process is gone."""
    fields: dict[str, str] = {}
    with open(proc_path(pid, "status")) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return ProcStatus(
        name=fields.get("Name", ""),
        state=fields.get("State", "?")[:1],
        tracer_pid=int(fields.get("TracerPid", "0")),
        uid=int(fields.get("Uid", "0 0").split()[1]),
        gid=int(fields.get("Gid", "0 0").split()[1]),
        cap_eff=int(fields.get("CapEff", "0"), 16),
    )


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat memtop needs."""

    state: str
    start: int  # clock ticks since boot
    exit_status: int | None  # wait status of a zombie (Linux 3.5+), else 0 or None


def read_stat(pid: int) -> ProcStat:
    """Parse /proc/PID/stat; raises FileNotFoundError when the process is gone."""
    with open(proc_path(pid, "stat"), "rb") as f:
        data = f.read()
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    exit_status = int(fields[49]) if len(fields) > 49 else None
    return ProcStat(fields[0].decode(), int(fields[19]), exit_status)


def start_time(pid: int) -> int:
    """Start time in clock ticks since boot (tells a reused pid apart)."""
    return rundir.process_start_time(pid)


def read_environ(pid: int) -> dict[str, str]:
    """The process's initial environment ({} when unreadable)."""
    try:
        with open(proc_path(pid, "environ"), "rb") as f:
            data = f.read()
    except OSError:
        return {}
    env = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return env


def read_cmdline(pid: int) -> list[str]:
    try:
        with open(proc_path(pid, "cmdline"), "rb") as f:
            data = f.read()
    except OSError:
        return []
    return [a.decode("utf-8", "surrogateescape") for a in data.split(b"\0") if a]


def mapped_files(pid: int) -> list[str]:
    """Paths of the files mapped into the process (raises PermissionError if not ours)."""
    paths = []
    with open(proc_path(pid, "maps")) as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                path = parts[5].rstrip("\n")
                if path not in paths:
                    paths.append(path)
    return paths


def mapped_file_links(pid: int) -> dict[str, str]:
    """{path as the process's map names it: /proc/PID/map_files link of its first mapping}.
    The link opens the very file mapped, wherever it lives (a container's files are not at
    their paths here); opening it needs root."""
    links: dict[str, str] = {}
    with open(proc_path(pid, "maps")) as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                links.setdefault(parts[5].rstrip("\n"), proc_path(pid, "map_files", parts[0]))
    return links


def exe_path(pid: int) -> str:
    """Where /proc/PID/exe points ('' when unreadable)."""
    try:
        return os.readlink(proc_path(pid, "exe"))
    except OSError:
        return ""


def yama_scope() -> int | None:
    """kernel.yama.ptrace_scope, or None on kernels without Yama."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


CAP_SYS_PTRACE = 19


def seccomp_filtered() -> bool:
    """Whether memtop runs under a seccomp filter (mode 2), as in most containers."""
    try:
        with open(proc_path(os.getpid(), "status")) as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    return line.split()[1] == "2"
    except (OSError, IndexError):
        pass
    return False


def have_cap_sys_ptrace() -> bool:
    return bool(read_status(os.getpid()).cap_eff & (1 << CAP_SYS_PTRACE))


@dataclass(frozen=True)
class ThreadWait:
    """What a thread is doing right now, from /proc (no ptrace)."""

    syscall: str | None  # name of the syscall it is blocked in, None when running
    wchan: str
    cpu_ns: int

    def describe(self) -> str:
        """'clock_nanosleep (time.sleep)' style wording."""
        if self.syscall is None:
            return "running"
        hint = _PYTHON_HINTS.get(self.syscall)
        return f"{self.syscall} ({hint})" if hint else self.syscall


def thread_wait(pid: int, tid: int | None = None) -> ThreadWait | None:
    """The main thread's (or `tid`'s) current syscall, kernel wait channel and CPU time."""
    task = proc_path(pid, "task", str(tid or pid))
    try:
        with open(os.path.join(task, "syscall")) as f:
            first = f.read().split()
        with open(os.path.join(task, "wchan")) as f:
            wchan = f.read().strip()
        with open(os.path.join(task, "schedstat")) as f:
            cpu_ns = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    syscall = None
    if first and first[0] not in ("running", "-1"):
        number = int(first[0])
        syscall = _SYSCALLS.get(platform.machine(), {}).get(number, f"syscall {number}")
    return ThreadWait(syscall, wchan, cpu_ns)
