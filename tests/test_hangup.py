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
from conftest import TARGETS, Plain, memtop_cli, need_gdb, read_state, wait_for, wait_state
from terminal import Terminal

pytestmark = pytest.mark.e2e

IDLE = TARGETS / "idle.py"


def _memtop_in(terminal_dir: Path, args: str) -> tuple[Terminal, Path]:
    """memtop's live view in a real terminal; its pid is written to a file first."""
    pid_file = terminal_dir / "memtop.pid"
    command = f"sh -c 'echo $$ > {pid_file}; exec {sys.executable} -m memtop {args}'"
    return Terminal(command, {"TERM": "xterm-256color"}), pid_file


def _hang_up(terminal: Terminal, pid_file: Path) -> None:
    """Close the terminal under memtop, as a dropped SSH session does; wait until memtop
    has gone."""
    memtop = psutil.Process(int(pid_file.read_text()))
    terminal.close()

    def gone() -> bool:
        try:
            return memtop.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, 20, "memtop to exit after the hang-up")


def _reconnects_without_injection(pid: int) -> None:
    again = memtop_cli(str(pid), "--json", "-n", "1")
    assert again.returncode == 0, again.stderr
    assert "via reuse" in again.stderr, again.stderr


def test_hang_up_under_run_leaves_the_program_and_its_agent(short_tmp: Path) -> None:
    state_path = short_tmp / "idle.json"
    log = short_tmp / "idle.log"
    terminal, pid_file = _memtop_in(short_tmp, f"run --log {log} {IDLE} {state_path}")
    pid = None
    try:
        pid = wait_state(state_path, timeout=30)["pid"]
        terminal.wait_for("LOCATION")
        _hang_up(terminal, pid_file)
        assert psutil.pid_exists(pid)
        assert read_state(state_path)["tracing"] is True
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
    terminal, pid_file = _memtop_in(plain.tmp, str(proc.pid))
    try:
        terminal.wait_for("LOCATION", timeout=60)
        _hang_up(terminal, pid_file)
        assert proc.poll() is None
        wait_state(state_path, lambda s: s["tracing"] and s["agent_loaded"])
        _reconnects_without_injection(proc.pid)
    finally:
        terminal.close()
