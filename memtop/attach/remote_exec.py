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


class RemoteDebugDisabled(AttachError):
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


def caller_command(target: Target, script: str) -> list[str] | None:
    """The command that calls sys.remote_exec, or None when memtop's interpreter can."""
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


def inject(target: Target, script: str) -> None:
    """Ask the target's main thread to run `script` at its next safe point."""
    command = caller_command(target, script)
    if command is None:
        try:
            sys.remote_exec(target.pid, script)  # type: ignore[attr-defined]
        except RuntimeError as exc:
            _raise_for(str(exc), target)
        except PermissionError as exc:
            raise AttachError(f"permission denied: {exc}") from exc
        return
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, env={}, cwd="/")
    except subprocess.TimeoutExpired as exc:
        raise AttachError("sys.remote_exec did not return within 30 s") from exc
    except OSError as exc:
        # e.g. the interpreter path could not be read (root without CAP_SYS_PTRACE)
        raise AttachError(
            f"cannot run {command[0] or 'the target interpreter'}: {exc.strerror}"
        ) from exc
    if done.returncode != 0:
        _raise_for(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "", target)


def _raise_for(error: str, target: Target) -> None:
    if "not enabled in the remote process" in error:
        raise RemoteDebugDisabled(
            OPT_OUT_ADVICE.format(
                how="PYTHON_DISABLE_REMOTE_DEBUG, -X disable-remote-debug, or a build without it"
            )
        )
    if "PermissionError" in error or "Operation not permitted" in error:
        from memtop.attach.diagnose import ptrace_refused

        raise AttachError(ptrace_refused(target))
    raise AttachError(f"sys.remote_exec failed: {error or 'no error message'}")
