"""`memtop run`: start a program with the agent inside it, before its first line.

The program runs in its own session (terminal signals such as Ctrl-C reach memtop only),
with stdin from /dev/null and stdout/stderr in a log file. The session config (with the
token) goes to it through a pipe; it answers on a second pipe once the agent serves.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from memtop.agent import rundir
from memtop.attach.bootstrap import run_code
from memtop.ending import Ending
from memtop.errors import AttachError, TargetExited, UsageError

AGENT_DIR = str(Path(__file__).resolve().parent.parent / "agent")


@dataclass
class Program:
    """A program started by memtop, with the agent serving inside it."""

    process: subprocess.Popen[bytes]
    log_path: str
    socket_path: str
    token: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_status(self) -> Ending | None:
        """How it ended once it has, else None."""
        code = self.process.poll()
        return None if code is None else Ending.from_returncode(code)

    def wait_for_exit(self, timeout: float) -> Ending | None:
        """How it ended if it ends within `timeout` seconds, else None."""
        try:
            return Ending.from_returncode(self.process.wait(timeout))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 3.0) -> Ending:
        """End the program (SIGINT, then SIGTERM, then SIGKILL) and its process group."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                continue
        code = self.process.wait()
        remove_stale_files(os.path.dirname(self.socket_path), self.process.pid)
        return Ending.from_returncode(code)


def remove_stale_files(directory: str, pid: int) -> None:
    """Remove socket and token files a dead process left behind (it had no chance to)."""
    try:
        run_dir = rundir.open_run_dir(directory, os.geteuid())
    except (rundir.RunDirError, OSError):
        return
    with run_dir:
        for name in run_dir.names():
            parsed = rundir.parse_socket_name(name.replace(".token", ".sock"))
            if parsed is not None and parsed[0] == pid:
                run_dir.remove(name)


def default_log_path(run_dir: str, target: str) -> str:
    stem = Path(target).stem or "program"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(run_dir, f"{stem}-{stamp}-{os.getpid()}.log")


def start_program(
    target: str,
    args: list[str],
    *,
    module: bool = False,
    python: str | None = None,
    nframe: int = 4,
    log_path: str | None = None,
    startup_timeout: float = 30.0,
    agent_config: dict | None = None,
) -> Program:
    """Start `target` (a script path, or a module name when `module`) with the agent.

    `agent_config` adds agent settings (idle_timeout, budget, trace) to the session."""
    python = python or sys.executable
    if not module and not os.path.isfile(target):
        raise UsageError(f"no such script: {target}")
    uid = os.geteuid()
    try:
        run_dir = rundir.open_run_dir(rundir.default_run_dir(uid, os.environ), uid, create=True)
    except (rundir.RunDirError, OSError) as exc:
        raise AttachError(f"cannot use the run directory: {exc}") from exc
    with run_dir:
        if log_path is None:
            log_path = default_log_path(run_dir.path, target)
            log_fd = _open_log(log_path, run_dir)
        else:
            log_fd = _open_log(log_path)
    token = secrets.token_hex(32)
    config = {
        "token": token,
        "rundir": run_dir.path,
        "nframe": nframe,
        # A later `memtop PID` (after `Q`, or a dropped SSH session) reads the token here.
        "write_token_file": True,
        "origin": "run",
        **(agent_config or {}),
    }
    config_r, config_w = os.pipe()
    status_r, status_w = os.pipe()
    log = os.fdopen(log_fd, "ab")  # handed to the child, closed below
    kind = "module" if module else "script"
    try:
        process = subprocess.Popen(
            [
                python,
                "-c",
                run_code(AGENT_DIR),
                str(config_r),
                str(status_w),
                kind,
                target,
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(config_r, status_w),
            start_new_session=True,
        )
    except OSError as exc:
        raise UsageError(f"cannot start {python}: {exc.strerror}") from exc
    finally:
        log.close()
        os.close(config_r)
        os.close(status_w)
    try:
        with os.fdopen(config_w, "wb") as pipe:
            pipe.write(json.dumps(config).encode())
    except BrokenPipeError:
        pass  # the program is already gone: the report below says how it ended
    report = _read_report(status_r, process, startup_timeout)
    program = Program(process, log_path, report.get("socket", ""), token)
    if not report.get("ok"):
        status = program.stop()
        raise AttachError(
            f"the agent did not start in the program ({status}): {report.get('error')}"
        )
    return program


def _open_log(path: str, run_dir: rundir.RunDir | None = None) -> int:
    """An fd appending to the log file: in the run dir (through its fd, never through a
    symlink there), or where the user asked."""
    try:
        if run_dir is not None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(os.path.basename(path), flags, 0o600, dir_fd=run_dir.fd)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise UsageError(f"cannot write the log file {path}: {exc.strerror}") from exc


def _read_report(fd: int, process: subprocess.Popen[bytes], timeout: float) -> dict:
    """The launcher's one-line JSON report, or TargetExited if the program ended first."""
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                process.kill()
                raise AttachError(
                    f"the program did not start the agent within {timeout:.0f} s; "
                    "check that the interpreter is CPython 3.9 or newer"
                )
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if not data:
        code = process.wait()
        raise TargetExited(f"the program {Ending.from_returncode(code)} before the agent started")
    try:
        return json.loads(data)
    except ValueError as exc:
        process.kill()
        raise AttachError(f"unexpected report from the program: {data[:200]!r}") from exc


def log_tail(path: str, lines: int = 8) -> str:
    """The last lines of a log file, for messages about a program that failed."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
