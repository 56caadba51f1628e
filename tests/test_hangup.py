"""A terminal that goes away (tmux kill-session, a dropped SSH session) while the live view
runs: memtop leaves the agent serving, and a later `memtop PID` reconnects to it without a
new injection."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil
import pytest
from conftest import (
    TARGETS,
    Plain,
    memtop_cli,
    need_gdb,
    state_of,
    wait_for,
    wait_state,
)
from terminal import Terminal

pytestmark = pytest.mark.e2e

IDLE = TARGETS / "idle.py"


def _memtop_in(terminal_dir: Path, args: str) -> tuple[Terminal, Path]:
    """memtop's live view in a real terminal, from a shell that outlives the hang-up to
    write memtop's exit status (memtop sets its own SIGHUP handler)."""
    done = terminal_dir / "exit"
    command = f"sh -c 'trap \"\" HUP; {sys.executable} -m memtop {args}; echo $? > {done}'"
    return Terminal(command, {"TERM": "xterm-256color"}), done


def _hang_up(terminal: Terminal, done: Path) -> None:
    """Close the terminal under memtop, as a dropped SSH session does: memtop exits as
    interrupted (130), not with an error from writing to a terminal that is gone."""
    terminal.close()
    wait_for(lambda: done.exists() and done.read_text().strip(), 20, "memtop to exit")
    assert done.read_text().strip() == "130"


def _reconnects_without_injection(pid: int) -> None:
    again = memtop_cli(str(pid), "--json", "-n", "1")
    assert again.returncode == 0, again.stderr
    assert "via reuse" in again.stderr, again.stderr


def test_hang_up_under_run_leaves_the_program_and_its_agent(short_tmp: Path) -> None:
    state_path = short_tmp / "idle.json"
    log = short_tmp / "idle.log"
    terminal, done = _memtop_in(short_tmp, f"run --log {log} {IDLE} {state_path}")
    pid = None
    try:
        pid = wait_state(state_path, timeout=30)["pid"]
        terminal.wait_for("LOCATION")
        _hang_up(terminal, done)
        assert psutil.pid_exists(pid)
        assert state_of(state_path)["tracing"] is True
        _reconnects_without_injection(pid)
        assert "KeyboardInterrupt" not in log.read_text()
    finally:
        terminal.close()
        if pid is not None and psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


def test_hang_up_while_attached_leaves_the_agent_serving(plain: Plain) -> None:
    need_gdb()
    proc, state_path = plain.start(sys.executable, "idle.py")
    wait_state(state_path)
    terminal, done = _memtop_in(plain.tmp, str(proc.pid))
    try:
        terminal.wait_for("LOCATION", timeout=60)
        _hang_up(terminal, done)
        assert proc.poll() is None
        # Attached in sampled mode (the default): no tracemalloc; serving is what counts.
        wait_state(state_path, lambda s: s["agent_loaded"])
        _reconnects_without_injection(proc.pid)
    finally:
        terminal.close()
