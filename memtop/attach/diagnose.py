"""Why an attach failed, worded with the fix (table §4.4 of the attach research)."""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING

from memtop.attach import procfs
from memtop.attach.procfs import user_name
from memtop.ending import Ending

if TYPE_CHECKING:
    from memtop.attach.preflight import Target


SECCOMP_ADVICE = (
    "memtop itself runs under a seccomp filter (a container's default profile) that "
    "refuses ptrace or process_vm_writev: run memtop's container unconfined (Kubernetes: "
    "`securityContext: {{seccompProfile: {{type: Unconfined}}}}`; Docker: `--security-opt "
    "seccomp=unconfined`), or run memtop on the host (`memtop {pid}` as root reaches into "
    "containers)"
)


def ptrace_advice(
    scope: int | None, root: bool, has_cap: bool, pid: int, seccomp: bool = False
) -> str:
    """What to do when the kernel refused ptrace (for remote_exec as for gdb). `seccomp`:
    memtop runs under a seccomp filter."""
    if scope == 3:
        return (
            "kernel.yama.ptrace_scope is 3: ptrace is disabled until reboot; start the program "
            "with `memtop run`, or opt in with `memtop.agent.start()`"
        )
    if root and not has_cap:
        return (
            "memtop runs as root but without CAP_SYS_PTRACE (a container?): run the container "
            "with `--cap-add=SYS_PTRACE` (Kubernetes: add `securityContext: {capabilities: "
            '{add: ["SYS_PTRACE"]}}` to memtop\'s container, or `kubectl debug --profile='
            "general`; older Docker also needs a seccomp profile that allows ptrace), or run "
            f"memtop on the host (`memtop {pid}` as root reaches into containers), or start "
            "the program with `memtop run`"
        )
    if seccomp:
        return SECCOMP_ADVICE.format(pid=pid)
    if scope == 1 and not root:
        return (
            "kernel.yama.ptrace_scope is 1: only a parent may attach to its children. Use "
            f"`sudo memtop attach {pid}`, start the program with `memtop run`, opt in with "
            "`memtop.agent.start()`, or (development machines only) "
            "`sudo sysctl kernel.yama.ptrace_scope=0`"
        )
    if scope == 2 and not root:
        return (
            "kernel.yama.ptrace_scope is 2: attaching needs CAP_SYS_PTRACE; run memtop as "
            "root, or start the program with `memtop run`"
        )
    return (
        "the kernel refused ptrace (an LSM such as SELinux or AppArmor?); start the program "
        "with `memtop run`, or opt in with `memtop.agent.start()`"
    )


def ptrace_refused(target: Target) -> str:
    """Why the kernel refused ptrace; the kernel refuses it for a dead process too (a
    zombie), and that is no ptrace rule: said as what it is."""
    ended = target_ended(target)
    if ended:
        return ended
    root = os.geteuid() == 0
    reason = ptrace_advice(
        procfs.yama_scope(),
        root,
        procfs.have_cap_sys_ptrace(),
        target.pid,
        procfs.seccomp_filtered(),
    )
    return f"cannot attach to pid {target.pid} ({user_name(target.uid)}): {reason}"


def ending_of(pid: int, start: int) -> Ending | None:
    """How the process `pid` started at `start` ended; None while it runs. Its exit code
    is known while it is a zombie (its parent has not reaped it yet), unknown after."""
    try:
        stat = procfs.read_stat(pid)
    except (OSError, ValueError, IndexError):
        return Ending()
    if stat.start != start:
        return Ending()  # the pid was reused
    if stat.state not in "ZX":
        return None
    if stat.exit_status is not None:
        return Ending.from_wait_status(stat.exit_status)
    return Ending()


def how_it_ended(target: Target, gdb_output: str = "") -> str | None:
    """'was killed by SIGKILL' / 'exited with code 1' / 'exited' when the target is no
    longer running (gone, a zombie, or its pid reused), None while it lives."""
    ending = ending_of(target.pid, target.start)
    if ending is None:
        return None
    if not ending.known:
        # Reaped already: gdb, its tracer, may have seen how (it prints codes in octal).
        killed = re.search(r"terminated with signal (SIG\w+)", gdb_output)
        code = re.search(r"exited with code (\d+)", gdb_output)
        if killed:
            return f"was killed by {killed.group(1)}"
        if code:
            return f"exited with code {int(code.group(1), 8)}"
        return "exited"
    return f"was {ending}" if ending.signal is not None else str(ending)


def target_ended(target: Target, gdb_output: str = "") -> str | None:
    """The message for a target that ended while memtop attached, None while it lives."""
    how = how_it_ended(target, gdb_output)
    if how is None:
        return None
    return f"process {target.pid} {how} while memtop was attaching to it; nothing to attach to"


def is_stopped(pid: int) -> bool:
    """Stopped by SIGSTOP/SIGTSTP (job control), not merely held by a tracer."""
    try:
        return procfs.read_status(pid).state == "T"
    except OSError:
        return False


def stopped_message(pid: int, what: str) -> str:
    """What to say about a program stopped by job control, and how to resume it."""
    return (
        f"process {pid} is stopped (SIGSTOP or Ctrl-Z), so {what}; resume it with "
        f"`kill -CONT {pid}` and retry"
    )


def no_answer(target: Target, route: str, waited: float) -> tuple[str, bool]:
    """Why the injected request did not run within `waited` seconds, and whether the
    main thread is blocked in a system call (then a parked-thread attach may work)."""
    if is_stopped(target.pid):
        return stopped_message(target.pid, f"the {route} request cannot run"), False
    if route == "gdb-parked":
        # The bootstrap ran inside gdb's call: the main thread plays no part.
        return (
            f"memtop's bootstrap ran in pid {target.pid} (in a thread parked in a system "
            f"call), but the agent did not report within {waited:.0f} s; retry, or use "
            "`memtop run`"
        ), False
    first = procfs.thread_wait(target.pid)
    time.sleep(0.3)  # two looks: a thread that stays in one syscall using no CPU is parked
    second = procfs.thread_wait(target.pid)
    if first is None or second is None:
        return f"pid {target.pid} did not answer within {waited:.0f} s", False
    if second.syscall is not None and first.cpu_ns == second.cpu_ns:
        return (
            f"the main thread of pid {target.pid} is blocked in {second.describe()}: the "
            f"{route} request runs only when it returns to Python. Use `--method gdb-parked` "
            "to attach through a thread that waits in a system call"
        ), True
    if route == "remote-exec":
        return (
            f"pid {target.pid} did not run memtop's bootstrap within {waited:.0f} s although "
            "its main thread is running: an audit hook may refuse "
            "`cpython.remote_debugger_script` (see the program's stderr)"
        ), False
    return (
        f"pid {target.pid} did not run the pending call within {waited:.0f} s: its main "
        "thread is busy in C code that does not return to the interpreter"
    ), False
