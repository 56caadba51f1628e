"""The program closes the agent's fds and reuses the numbers (daemonizing code calls
`os.closerange`): the agent must never touch the program's files or sockets on those
numbers, must go idle, and a later attach must start a fresh agent."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from conftest import (
    Plain,
    Targets,
    memtop_cli,
    need_attachable,
    read_state,
    run_commands,
    state_of,
    wait_for,
    wait_state,
)
from wire import Raw

from memtop.attach.runner import Program

TCP_CLIENTS = 20


@dataclass
class Reuser:
    """A target that will close and reuse the agent's fds, with a viewer attached."""

    program: Program
    state: Path
    commands: Path
    viewer: Raw

    def command(self, *lines: str) -> dict:
        return run_commands(self.commands, self.state, *lines)


def start_reuser(targets: Targets) -> Reuser:
    commands = targets.tmp / "commands"
    commands.touch()
    program, state = targets.start("fd_reuser.py", str(commands))
    wait_state(state)
    viewer = Raw(program.socket_path)
    assert viewer.hello(program.token)["ok"]
    assert viewer.call("ping")["ok"]
    return Reuser(program, state, commands, viewer)


def agent_threads_gone(state: Path) -> dict:
    """The state once only the program's main thread is left (its TCP threads are done)."""
    return wait_state(state, lambda s: s["threads"] == 1, timeout=15)


def cpu_share(pid: int, seconds: float = 2.0) -> float:
    """The share of one core the process used over `seconds`."""
    process = psutil.Process(pid)
    before, started = sum(process.cpu_times()[:2]), time.monotonic()
    time.sleep(seconds)
    return (sum(process.cpu_times()[:2]) - before) / (time.monotonic() - started)


def test_programs_tcp_clients_on_a_reused_fd_never_hear_from_memtop(targets: Targets) -> None:
    reuser = start_reuser(targets)
    reuser.command("closerange")
    after = wait_state(reuser.state, lambda s: s["tcp_done"], timeout=20)
    assert after["tcp_fd"] in after["agent_fds"]  # the program's listener took the agent's number
    assert after["tcp_replies"] == ["target\n"] * TCP_CLIENTS
    assert after["failures"] == []


@pytest.mark.parametrize("mode", ["closerange", "close-only"])
def test_agent_goes_idle_when_its_fds_are_gone(targets: Targets, mode: str) -> None:
    reuser = start_reuser(targets)
    reuser.command(mode)
    if mode == "closerange":
        wait_state(reuser.state, lambda s: s["tcp_done"], timeout=20)
    share = cpu_share(reuser.program.pid)
    assert share < 0.05, f"the target used {share:.0%} of a core"
    after = agent_threads_gone(reuser.state)
    assert after["failures"] == []
    # Its socket file went with it (it was still the agent's own file).
    assert not Path(reuser.program.socket_path).exists()


def test_agent_waits_rather_than_spins_when_the_program_is_out_of_fds(targets: Targets) -> None:
    reuser = start_reuser(targets)
    reuser.commands.write_text("fd-limit\n")
    wait_state(reuser.state, lambda s: bool(s.get("limited")))
    waiting = Raw(reuser.program.socket_path)  # queued: the agent cannot accept() it now
    share = cpu_share(reuser.program.pid)
    assert share < 0.05, f"the target used {share:.0%} of a core"
    Path(f"{reuser.state}.release").touch()
    assert waiting.hello(reuser.program.token)["ok"]
    assert waiting.call("ping")["ok"]


def test_stop_after_reuse_leaves_the_programs_files_open(targets: Targets) -> None:
    reuser = start_reuser(targets)
    after = reuser.command("closerange", "stop")
    assert after["data_fds"]
    counter = after["counter"]
    final = wait_state(reuser.state, lambda s: s["counter"] > counter + 3)
    assert final["failures"] == []


def test_forked_child_keeps_the_files_on_the_agents_old_numbers(targets: Targets) -> None:
    reuser = start_reuser(targets)
    # The child is forked before the agent's thread looks at its fds again.
    reuser.command("closerange", "fork")
    child = read_state(Path(f"{reuser.state}.child"))
    assert child is not None and child["data_fds"]
    assert child["failures"] == []
    assert state_of(reuser.state)["failures"] == []


def test_a_new_agent_starts_after_the_old_one_lost_its_fds(targets: Targets) -> None:
    reuser = start_reuser(targets)
    after = reuser.command("closerange", "start")
    started = after["started"]
    assert "error" not in started, started
    token_file = Path(started["token_file"])
    viewer = Raw(started["socket"])
    assert viewer.hello(token_file.read_text())["ok"]
    top = viewer.call("top", max_age=0.0)
    assert top["ok"] and top["result"]["rows"]
    assert state_of(reuser.state)["failures"] == []


@pytest.mark.parametrize("minor", ["3.9", "3.14"])
def test_memtop_attach_works_again_after_the_program_closed_the_agents_fds(
    plain: Plain, short_tmp: Path, minor: str
) -> None:
    python = need_attachable(minor)
    commands = short_tmp / "commands"
    commands.touch()
    proc, state = plain.start(python, "fd_reuser.py", str(commands))
    wait_state(state)
    from memtop.attach.chain import attach

    viewer = attach(proc.pid).client  # stays connected while the program closes its fds
    assert viewer.request("ping")
    run_commands(commands, state, "closerange")
    again = memtop_cli("attach", str(proc.pid), "--json", "-n", "1")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[0])["pid"] == proc.pid
    wait_for(lambda: state_of(state)["tcp_done"], 20, "the program's TCP clients")
    final = state_of(state)
    assert final["tcp_replies"] == ["target\n"] * TCP_CLIENTS
    assert final["failures"] == []
