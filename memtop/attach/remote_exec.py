"""Route 2 (CPython 3.14+): `sys.remote_exec` (PEP 768), no debugger involved.

The call must come from an interpreter of the target's major.minor and free-threading
flag: memtop's own when they match, otherwise the target's own binary. As root, a binary
that its user could have replaced is never run as root: that step drops to the target's
uid (§4.3 of the attach research).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from memtop.attach.preflight import Target
from memtop.errors import AttachError


class NothingSent(AttachError):
    """sys.remote_exec failed before anything reached the target: its script never runs."""


class RemoteDebugDisabled(NothingSent):
    """The target opted out of remote debugging: a refusal, not a reason to use gdb."""


OPT_OUT_ADVICE = (
    "the target opted out of remote debugging ({how}); memtop respects that and will not "
    "use gdb unless you pass --force-gdb. Alternatives: start the program with `memtop run`, "
    "or have it call `memtop.agent.start()` (opt-in)"
)


def opted_out(target: Target) -> str | None:
    """How the target disabled remote debugging, seen from outside (or None)."""
    if target.environ.get("PYTHON_DISABLE_REMOTE_DEBUG"):
        return "PYTHON_DISABLE_REMOTE_DEBUG is set"
    args = target.cmdline
    for i, arg in enumerate(args):
        if arg in ("-Xdisable-remote-debug", "-X disable-remote-debug") or (
            arg == "-X" and i + 1 < len(args) and args[i + 1] == "disable-remote-debug"
        ):
            return "-X disable-remote-debug"
    return None


def trusted_binary(path: str) -> bool:
    """True when `path` and every directory above it are root-owned and not writable by
    group or others, so running it as root runs nothing the target's user controls."""
    try:
        current = os.path.realpath(path)
        while True:
            st = os.stat(current)
            if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return False
            parent = os.path.dirname(current)
            if parent == current:
                return True
            current = parent
    except OSError:
        return False


# Run by a host interpreter of the target's version, as a process of its own: it enters
# the target's user and PID namespaces (those it has of its own) and its root, and
# forks; the child, now a process of the container as the target sees it, calls
# sys.remote_exec with the target's own pid and the script's path there. CPython's caller
# reads /proc/PID/maps and the binaries named there, so it must see what the target sees.
# Everything it runs is loaded before it enters: after that, no import may read a file
# of the container (a module there at the path of one of ours would run in this process).
ENTER_AND_CALL = """
import os, sys, ctypes
pid, start, inside, script, kinds, uid, gid = sys.argv[1:8]
pid, start, inside, uid, gid = int(pid), int(start), int(inside), int(uid), int(gid)
libc = ctypes.CDLL(None, use_errno=True)
# Not dumpable, before anything else: this process is root of this host's mount namespace
# (the chroot below is no wall to code run in it) and joins the container's PID and user
# namespaces, where the container's root could otherwise ptrace it or write to its memory
# (it has the same uid and capabilities there). Not dumpable, that takes CAP_SYS_PTRACE
# in the namespace this process was started in. Its child inherits it.
PR_SET_DUMPABLE, PR_SET_PDEATHSIG = 4, 1
if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
    sys.stderr.write("memtop-enter: cannot make this process undumpable\\n")
    os._exit(3)
def fail(what):
    sys.stderr.write("memtop-enter: %s\\n" % what)
    sys.stderr.flush()
    os._exit(3)
def started(p):
    with open("/proc/%d/stat" % p, "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 2:].split()[19])
def capabilities(p):
    found = {}
    with open("/proc/%d/status" % p) as f:
        for line in f:
            if line.startswith(("CapEff:", "CapPrm:")):
                found[line[:6]] = int(line.split()[1], 16)
    return found["CapEff"], found["CapPrm"]
try:
    effective, permitted = capabilities(pid)
    spaces = [os.open("/proc/%d/ns/%s" % (pid, k), os.O_RDONLY | os.O_CLOEXEC)
              for k in kinds.split(",") if k]
    root = os.open("/proc/%d/root" % pid, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if started(pid) != start:
        fail("process %d exited" % pid)
except OSError as exc:
    fail("cannot open the namespaces of pid %d: %s" % (pid, exc.strerror))
sys.meta_path[:] = []
sys.path_hooks[:] = []
sys.path_importer_cache.clear()
sys.path[:] = []
for fd, kind in zip(spaces, [k for k in kinds.split(",") if k]):
    if libc.setns(fd, 0) != 0:
        fail("cannot enter the %s namespace of pid %d: %s"
             % (kind, pid, os.strerror(ctypes.get_errno())))
try:
    os.fchdir(root)
    os.chroot(".")
    os.chdir("/")
except OSError as exc:
    fail("cannot enter the root of pid %d: %s" % (pid, exc.strerror))
if uid != 0 or "user" in kinds:
    # Become the target's user: CPython checks the script with access(), as that user.
    try:
        os.setgroups([])
    except OSError:
        pass  # a user namespace may forbid it; the groups it does not map count for none
    try:
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        fail("cannot act as uid %d, gid %d in pid %d's container: %s"
             % (uid, gid, pid, exc.strerror))
if uid == 0 and "user" not in kinds:
    # Root in a container without a user namespace of its own (Docker's default) has
    # fewer capabilities than root here: keep only the target's, as its equal.
    low, high = 0xFFFFFFFF, 32
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)(effective & low, permitted & low, 0,
                                 effective >> high, permitted >> high, 0)
    if libc.capset(header, data) != 0:
        fail("cannot take pid %d's capabilities: %s" % (pid, os.strerror(ctypes.get_errno())))
try:
    os.stat("/proc/%d/maps" % inside)
except OSError:
    # CPython's caller finds the interpreter in the target from its map, read there.
    fail("its /proc shows no pid %d (no procfs of its PID namespace mounted at /proc), and "
         "sys.remote_exec reads /proc/%d/maps; use --method gdb" % (inside, inside))
child = os.fork()
if child == 0:
    # A container's fake /proc may block the call (a FIFO at /proc/PID/maps): when memtop
    # kills the parent at its timeout, this child goes too.
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    try:
        sys.remote_exec(inside, script)
    except BaseException as exc:
        sys.stderr.write("%s: %s\\n" % (type(exc).__name__, exc))
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)
_, status = os.waitpid(child, 0)
os._exit(os.waitstatus_to_exitcode(status))
"""


def host_interpreter(target: Target) -> str | None:
    """A CPython of the target's version and build flavour on this host, that memtop may
    run as the user it runs as (as root: root's, in root-owned directories only)."""
    python = target.python
    free = "t" if python.free_threaded else ""
    same_flag = python.free_threaded == (not getattr(sys, "_is_gil_enabled", lambda: True)())
    if sys.version_info[:2] == python.version and same_flag:
        return sys.executable
    name = f"python{python.version[0]}.{python.version[1]}{free}"
    directories = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/local/bin", "/usr/bin"]
    for directory in directories:
        if not directory.startswith("/"):
            continue
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and (os.geteuid() != 0 or trusted_binary(candidate)):
            return candidate
    return None


def container_command(target: Target, script: str) -> list[str]:
    """The command that calls sys.remote_exec from inside the target's container."""
    assert target.container is not None
    python = host_interpreter(target)
    if python is None:
        raise NoHostInterpreter(
            f"pid {target.pid} runs in a container; calling sys.remote_exec there needs "
            f"CPython {target.python.version[0]}.{target.python.version[1]} on this host "
            "(a root-owned `python"
            f"{target.python.version[0]}.{target.python.version[1]}` on PATH). Install it, "
            "or use `--method gdb`"
        )
    # Not its mount namespace: a chroot to its root directory reaches its files and its
    # mounts (its /proc too), and needs only CAP_SYS_CHROOT where entering needs
    # CAP_SYS_ADMIN (which a debug container sharing the PID namespace lacks).
    kinds = [
        kind
        for kind, name in (("user", "user"), ("pid", "PID"))
        if name in target.container.namespaces
    ]
    return [
        python,
        "-I",
        "-S",
        "-c",
        ENTER_AND_CALL,
        str(target.pid),
        str(target.start),
        str(target.own_pid),
        script,
        ",".join(kinds),
        # Who to be there: the target's user as its own user namespace knows it.
        str(target.own_uid if "user" in kinds else target.uid),
        str(target.container.gid_inside if "user" in kinds else target.gid),
    ]


class NoHostInterpreter(NothingSent):
    """No interpreter here can call sys.remote_exec into the container: gdb can."""


def caller_command(target: Target, script: str) -> list[str] | None:
    """The command that calls sys.remote_exec, or None when memtop's interpreter can."""
    if target.container is not None:
        return container_command(target, script)
    python = target.python
    same_flag = python.free_threaded == (not getattr(sys, "_is_gil_enabled", lambda: True)())
    if sys.version_info[:2] == python.version and same_flag and hasattr(sys, "remote_exec"):
        return None
    code = f"import sys; sys.remote_exec({target.pid}, {script!r})"
    command = [python.executable, "-I", "-S", "-c", code]
    if os.geteuid() == 0 and target.uid != 0 and not trusted_binary(python.executable):
        command = [
            "setpriv",
            f"--reuid={target.uid}",
            f"--regid={target.gid}",
            "--clear-groups",
            *command,
        ]
    return command


def inject(target: Target, script: str, timeout: float = 30.0) -> None:
    """Ask the target's main thread to run `script` at its next safe point (the call
    itself takes milliseconds; `timeout` bounds a caller held up)."""
    command = caller_command(target, script)
    if command is None:
        try:
            sys.remote_exec(target.pid, script)  # type: ignore[attr-defined]
        except RuntimeError as exc:
            _raise_for(str(exc), target)
        except PermissionError as exc:
            raise NothingSent(f"permission denied: {exc}") from exc
        return
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env={}, cwd="/"
        )
    except subprocess.TimeoutExpired as exc:
        raise AttachError(f"sys.remote_exec did not return within {timeout:.0f} s") from exc
    except OSError as exc:
        # e.g. the interpreter path could not be read (root without CAP_SYS_PTRACE)
        raise NothingSent(
            f"cannot run {command[0] or 'the target interpreter'}: {exc.strerror}"
        ) from exc
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        if last.startswith("memtop-enter: "):
            raise NothingSent(
                f"cannot call sys.remote_exec in pid {target.pid}'s container: "
                + last[len("memtop-enter: ") :]
            )
        _raise_for(last, target)


def _raise_for(error: str, target: Target) -> None:
    if "not enabled in the remote process" in error:
        raise RemoteDebugDisabled(
            OPT_OUT_ADVICE.format(
                how="PYTHON_DISABLE_REMOTE_DEBUG, -X disable-remote-debug, or a build without it"
            )
        )
    if "PermissionError" in error or "Operation not permitted" in error:
        from memtop.attach.diagnose import ptrace_refused

        raise NothingSent(ptrace_refused(target))
    raise AttachError(f"sys.remote_exec failed: {error or 'no error message'}")
