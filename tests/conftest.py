"""Shared fixtures: real target programs started under the agent, and handshakes with them."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from memtop.attach.runner import Program, start_program
from memtop.client import AgentClient

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ROOT / "tests" / "targets"


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def read_state(path: Path) -> dict[str, Any] | None:
    """The JSON state a target reports, or None before its first report."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def state_of(path: Path) -> dict[str, Any]:
    """The state a target has reported (a test reads it after the target's first report)."""
    state = read_state(path)
    assert state is not None, f"no target state in {path}"
    return state


def wait_state(
    path: Path, check: Callable[[dict[str, Any]], bool] = lambda s: True, timeout: float = 10.0
) -> dict[str, Any]:
    """The target's next state that satisfies `check`."""

    def probe() -> dict[str, Any] | None:
        state = read_state(path)
        return state if state is not None and check(state) else None

    return wait_for(probe, timeout, f"target state in {path}")


def run_commands(commands: Path, state: Path, *lines: str) -> dict[str, Any]:
    """Append `lines` to a target's COMMANDS file (fd_reuser.py, retracer.py); returns its
    state once it has carried them all out."""
    with commands.open("a") as f:
        f.write("".join(line + "\n" for line in lines))
    count = len(commands.read_text().split())
    return wait_state(state, lambda s: len(s["done"]) == count, timeout=20)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir with a short path (Unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mt-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Targets:
    """Starts programs from tests/targets under the agent and stops them at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.programs: list[Program] = []
        self.clients: list[AgentClient] = []

    def start(
        self,
        script: str,
        *args: str,
        python: str | None = None,
        nframe: int = 4,
        env: dict[str, str] | None = None,
        **agent_config: Any,
    ) -> tuple[Program, Path]:
        """Start a target; returns it and the path of its state file (written when ready)."""
        state = self.tmp / f"{Path(script).stem}-{len(self.programs)}.json"
        old_env = dict(os.environ)
        try:
            os.environ.update(env or {})
            program = start_program(
                str(TARGETS / script),
                [str(state), *args],
                python=python,
                nframe=nframe,
                log_path=str(self.tmp / f"{Path(script).stem}-{len(self.programs)}.log"),
                agent_config=agent_config,
            )
        finally:
            os.environ.clear()
            os.environ.update(old_env)
        self.programs.append(program)
        return program, state

    def connect(self, program: Program) -> AgentClient:
        client = AgentClient.connect(program.socket_path, program.token, expected_pid=program.pid)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for program in self.programs:
            program.stop(grace=2.0)


@pytest.fixture
def targets(short_tmp: Path) -> Iterator[Targets]:
    """Start real target programs with the agent inside; all are stopped afterwards."""
    manager = Targets(short_tmp)
    try:
        yield manager
    finally:
        manager.close()


def marked_lines(path: Path) -> dict[str, int]:
    """Line numbers of `# LINE: name` markers in a target's source."""
    found = {}
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if "# LINE: " in text:
            found[text.split("# LINE: ", 1)[1].strip()] = number
    return found


def memtop_cli(
    *args: str, timeout: float = 60.0, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run the real `memtop` command line (python -m memtop) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "memtop", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        **kwargs,
    )


def interpreters() -> dict[str, str]:
    """CPython interpreters found on this machine, by major.minor (3.9 and newer)."""
    found: dict[str, str] = {}
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in sorted(pyenv_root.glob("3.*/bin/python")):
        minor = ".".join(candidate.parent.parent.name.split(".")[:2])
        if tuple(int(x) for x in minor.split(".")) >= (3, 9):
            found.setdefault(minor, str(candidate))
    for minor in ("3.14", "3.15"):
        path = Path(f"/opt/memtop-python{minor}/usr/bin/python{minor}")
        if path.exists():
            found.setdefault(minor, str(path))
    return found


def stream_json(
    args: list[str],
    until: Callable[[dict[str, Any]], bool],
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> tuple[dict[str, Any], str]:
    """Run `memtop ... --json` until a refresh satisfies `until`, then interrupt memtop
    (as Ctrl-C would). Returns (that refresh, memtop's stderr); memtop must exit 130."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "memtop", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    found = None
    try:
        for text in proc.stdout:
            line = json.loads(text)
            if until(line):
                found = line
                break
            if time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert found is not None, f"no matching refresh within {timeout} s:\n{err}"
    assert proc.returncode == 130, err
    return found, err


class Plain:
    """Programs from tests/targets started without memtop (to be attached to)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        python: str,
        script: str,
        *args: str,
        env: dict[str, str] | None = None,
        user: int | None = None,
        prefix: list[str] | None = None,
        python_args: list[str] | None = None,
        cwd: Path | None = None,
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start a target; returns it and its state file (which appears when it is ready)."""
        state_dir = self.tmp
        if user is not None:
            state_dir = self.tmp / f"uid{user}"  # a dir the target's user may write to
            state_dir.mkdir(exist_ok=True)
            os.chown(state_dir, user, user)
        state = state_dir / f"{Path(script).stem}-{len(self.procs)}.json"
        log = open(self.tmp / f"{Path(script).stem}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        command = [
            *(prefix or []),
            python,
            *(python_args or []),
            str(TARGETS / script),
            str(state),
            *args,
        ]
        if user is not None:
            command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd or self.tmp,
        )
        log.close()
        self.procs.append(proc)
        return proc, state

    def log(self, index: int, script: str) -> str:
        return (self.tmp / f"{Path(script).stem}-{index}.log").read_text()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def plain(short_tmp: Path) -> Iterator[Plain]:
    """Start target programs without memtop; all are killed afterwards."""
    os.chmod(short_tmp, 0o755)  # targets may run as another user
    manager = Plain(short_tmp)
    try:
        yield manager
    finally:
        manager.close()


# Debian's own /usr/bin/python3: a distribution build (PGO/LTO, libpython linked in,
# stripped), as the processes memtop attaches to in production are.
DISTRIBUTION = "debian"
DISTRIBUTION_PYTHON = "/usr/bin/python3"


@functools.cache
def distribution_minor() -> str | None:
    """The major.minor of Debian's /usr/bin/python3, or None when it is missing."""
    if not Path(DISTRIBUTION_PYTHON).exists():
        return None
    done = subprocess.run(
        [DISTRIBUTION_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip() or None


def need_interpreter(minor: str) -> str:
    """The path of CPython `minor` (or of the distribution's python3 for DISTRIBUTION), or
    skip the test saying why."""
    if minor == DISTRIBUTION:
        if distribution_minor() is None:
            pytest.skip(f"{DISTRIBUTION_PYTHON} is not installed here")
        return DISTRIBUTION_PYTHON
    python = interpreters().get(minor)
    if python is None:
        pytest.skip(f"CPython {minor} is not installed here (CI installs it)")
    return python


def need_gdb() -> None:
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed here (CI installs it)")


def attach_route(minor: str) -> str:
    """The route `memtop attach` takes by default on CPython `minor` (or DISTRIBUTION)."""
    if minor == DISTRIBUTION:
        minor = distribution_minor() or "0.0"
    return "remote-exec" if tuple(map(int, minor.split("."))) >= (3, 14) else "gdb"


def need_attachable(minor: str) -> str:
    """The path of CPython `minor`, or skip when it or the tool its route needs is missing."""
    python = need_interpreter(minor)
    if attach_route(minor) == "gdb":
        need_gdb()
    return python
