"""Routes 3 and 4 (CPython 3.9-3.13, or when asked): gdb, pending call or parked thread.

gdb runs with no user init files, no auto-loading (a root viewer must not run scripts a
user planted next to a library), no debuginfod, symbols for libc and libpython only, and
never from the target's working directory. The work inside gdb is memtop's own script
(gdb_inject.py) running in gdb's Python.

On x86-64, gdb is given a target description with only the core and SSE registers: gdb
13 cannot write back the full XSAVE area on CPUs with AMX ("Couldn't write extended state
status"), so with the default description every inferior call fails there. With SSE only,
gdb saves and restores registers through the FP register set. That is enough here: the
pending route calls only mmap, munmap and Py_AddPendingCall (no AVX code), and the parked route
runs code in a thread parked inside a libc system-call wrapper, where the ABI treats
every vector register as clobbered anyway.

Signals: the target may be sent any signal while gdb holds it (a log-reopening SIGUSR1,
an interval timer, SIGCHLD, SIGPIPE, SIGINT, SIGSTOP/SIGCONT from job control). None of
them stops gdb: each reaches the program at once, even in the middle of a call into it,
and the program's handler runs as it would without memtop (CPython's C-level handler
only records the signal; the Python handler runs later, at the interpreter's own safe
point). A SIGSTOP is passed on too: the kernel puts the group stop back in force when gdb
detaches, so the program ends up stopped exactly as it would have. Only faults stop gdb
(see gdb_inject.py for what it does with a call a fault interrupted). gdb is never
interrupted from outside either: its interrupt is a SIGINT to the target, which the
program would now receive, and every call that can take long (GIL, pending-call lock,
running the bootstrap) must not be cut short; a gdb that overruns GDB_TIMEOUT is left to
finish and detach by itself.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from memtop.attach.diagnose import ptrace_refused, target_ended
from memtop.attach.preflight import Target
from memtop.attach.session import PAGE_PLACEHOLDER
from memtop.errors import AttachError, TargetExited

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "gdb_inject.py"
TDESC = HERE / "amd64-sse.xml"
GDB_TIMEOUT = 60.0
FAULTS = "SIGSEGV SIGBUS SIGILL SIGFPE SIGSYS"
# "all" leaves out the two signals gdb keeps for itself; SIGINT is the program's here
# (gdb is never interrupted), SIGTRAP stays gdb's.
SIGNAL_SETTINGS = (
    "set unwindonsignal on",
    "handle all nostop noprint pass",
    "handle SIGINT nostop noprint pass",
    f"handle {FAULTS} stop print pass",
)

GDB_MISSING = (
    "gdb is not installed; memtop needs it to attach to CPython {version}. Install it "
    "(`apt-get install gdb`, `dnf install gdb`), or start the program with `memtop run`, "
    "or have it call `memtop.agent.start()` (opt-in)"
)


def gdb_command(target: Target) -> list[str]:
    """The gdb invocation for a target (script and parameters come on top)."""
    gdb = shutil.which("gdb")
    if gdb is None:
        raise AttachError(GDB_MISSING.format(version=target.python.label))
    command = [gdb, "-batch", "-nx", "-nh", "-q"]
    for setting in (
        "set debuginfod enabled off",
        "set auto-load off",
        "set auto-solib-add off",
        "set pagination off",
        "set confirm off",
        "set exec-file-mismatch off",
        *SIGNAL_SETTINGS,
    ):
        command += ["-iex", setting]
    if platform.machine() == "x86_64":
        command += ["-iex", f"set tdesc filename {TDESC}"]
    if target.python.static and not (target.container and target.container.other_mounts):
        # The C API is in the executable: name it, since /proc/PID/exe may be an explicit
        # ld.so. A PIE python with a libpython is left to /proc/PID/exe: naming it as the
        # exec file of a loader-started process makes gdb relocate it wrongly.
        command.append(target.python.executable)
    command += [
        "-p",
        str(target.pid),
        "-ex",
        r"sharedlibrary libc\.so",
        "-ex",
        r"sharedlibrary libpthread",
    ]
    if "libpython" in os.path.basename(target.python.binary):
        command += ["-ex", "sharedlibrary " + re.escape(os.path.basename(target.python.binary))]
    return [*command, "-x", str(SCRIPT)]


def run(target: Target, mode: str, text: str) -> dict:
    """Run the injection script in gdb; returns its result (ok, reason, threads ...)."""
    with tempfile.TemporaryDirectory(prefix="memtop-gdb-") as private:
        params = os.path.join(private, "params.json")
        with open(params, "w") as f:
            json.dump({"mode": mode, "text": text, "placeholder": PAGE_PLACEHOLDER}, f)
        env = {
            "MEMTOP_GDB_PARAMS": params,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": private,
        }
        # Output to a file, not a pipe: a gdb left to finish on its own after a timeout
        # must not die of a closed pipe in the middle of a call into the target.
        with open(os.path.join(private, "gdb.out"), "w+") as out:
            # Its own session: a Ctrl-C at the terminal must not reach gdb.
            gdb = subprocess.Popen(
                gdb_command(target),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=private,
                start_new_session=True,
            )
            try:
                _finish(gdb, target)
            except KeyboardInterrupt:
                _finish(gdb, target)  # let gdb complete its work and detach, then give up
                raise
            out.seek(0)
            output = out.read()
    ended = target_ended(target, output)
    if ended:
        raise TargetExited(ended)
    if "ptrace: Operation not permitted" in output:
        # gdb goes on to run the script without a process; its result means nothing.
        raise AttachError(ptrace_refused(target))
    for line in output.splitlines():
        if line.startswith("MEMTOP-RESULT "):
            return json.loads(line[len("MEMTOP-RESULT ") :])
    raise AttachError(_failure(output, target))


def _finish(gdb: subprocess.Popen[bytes], target: Target) -> None:
    try:
        gdb.wait(timeout=GDB_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        # Never signalled: gdb may be inside a call that holds the GIL or a lock of the
        # target, and cutting it short would leave that held. It detaches when done.
        raise AttachError(
            f"gdb did not finish within {GDB_TIMEOUT:.0f} s (pid {gdb.pid}); it is left to "
            f"finish its call into pid {target.pid} and detach by itself (stopping it could "
            "leave the program stuck). Retry when it has gone"
        ) from exc


def _failure(output: str, target: Target) -> str:
    if "ptrace: Operation not permitted" in output:
        return ptrace_refused(target)
    symbol = re.search(r'No symbol "(\w+)" in current context', output)
    if symbol:
        return (
            f"gdb cannot find {symbol.group(1)} in pid {target.pid}: its CPython exports no "
            "symbols gdb can call (a build stripped of its dynamic symbols?). For CPython "
            "3.14+ use `--method remote-exec`; otherwise start the program with `memtop run`"
        )
    if "Python scripting is not supported" in output:
        return "this gdb has no Python support; memtop needs a gdb built with Python"
    lines = [line for line in output.splitlines() if line.strip()]
    return "gdb failed: " + (lines[-1] if lines else "no output")
