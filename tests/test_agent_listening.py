"""`memtop ps` and an attach ask one question, "does an agent listen at this process's
socket?", through one probe (rundir.listening), so they answer alike."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Plain, wait_state

from memtop.agent import rundir
from memtop.attach import discovery


@pytest.fixture
def run_dir_of_target(plain: Plain, short_tmp: Path) -> Iterator[tuple[int, rundir.RunDir]]:
    """A running target whose XDG_RUNTIME_DIR is ours, and its (empty) run dir, open."""
    runtime = short_tmp / "xdg"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    proc, state = plain.start(sys.executable, "attachable.py", "idle", env=env)
    wait_state(state)
    path = rundir.default_run_dir(os.geteuid(), env)
    with rundir.open_run_dir(path, os.geteuid(), create=True) as run_dir:
        yield proc.pid, run_dir


def test_a_socket_too_busy_to_accept_counts_as_an_agent_for_ps_and_attach(
    run_dir_of_target: tuple[int, rundir.RunDir],
) -> None:
    pid, run_dir = run_dir_of_target
    name = rundir.socket_name(pid, rundir.process_start_time(pid))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(run_dir.join(name))
    server.listen(0)
    queued = []
    try:
        while True:  # fill the backlog: the next connect waits for an accept
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            queued.append(client)
            try:
                client.connect(run_dir.join(name))
            except BlockingIOError:
                break
        attach_says = rundir.listening(run_dir, name, timeout=0.2)
        uid, gid = os.geteuid(), os.getegid()
        assert discovery.agent_serving(pid, uid, gid) is attach_says is True
    finally:
        for client in queued:
            client.close()
        server.close()


def test_ps_and_attach_agree_that_a_socket_nobody_serves_is_no_agent(
    run_dir_of_target: tuple[int, rundir.RunDir],
) -> None:
    pid, run_dir = run_dir_of_target
    name = rundir.socket_name(pid, rundir.process_start_time(pid))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(run_dir.join(name))
    server.close()  # the socket file stays, nobody listens
    assert rundir.listening(run_dir, name) is False
    assert discovery.agent_serving(pid, os.geteuid(), os.getegid()) is False


def test_a_file_at_the_socket_name_is_stale_for_ps_and_attach(
    run_dir_of_target: tuple[int, rundir.RunDir],
) -> None:
    pid, run_dir = run_dir_of_target
    name = rundir.socket_name(pid, rundir.process_start_time(pid))
    run_dir.write(name, b"")
    assert rundir.listening(run_dir, name) is False
    assert discovery.agent_serving(pid, os.geteuid(), os.getegid()) is False
