"""Repeated attaches (attach-and-safety.md §6 cases 4 and 5): no hang, no crash, and a
target that does not grow from being attached to and detached from again and again.
tests/test_attach_residue.py runs the same cycle through the command line."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
from conftest import (
    Plain,
    attach_route,
    need_attachable,
    state_of,
    wait_state,
)

from memtop.agent import rundir
from memtop.attach.chain import attach
from memtop.attach.preflight import preflight
from memtop.attach.session import target_run_dir


def cycle(pid: int, state: Path, base: dict, method: str) -> None:
    """Attach, read a table, detach, and wait until the target is back to `base`."""
    attached = attach(pid, method=method)
    try:
        reply = attached.client.request("top", max_age=0.0, limit=5)
        assert reply["sample"]["fresh"]
        assert attached.client.request("detach")["detaching"]
    finally:
        attached.client.close()
    counter = state_of(state)["counter"]
    wait_state(
        state,
        lambda s: (
            not s["tracing"]
            and s["threads"] == base["threads"]
            and s["fds"] == base["fds"]
            and s["counter"] > counter + 1
        ),
        timeout=10,
    )


@pytest.mark.parametrize("minor", ["3.11", "3.13", "3.14"])
def test_25_attaches_to_an_allocation_heavy_target(plain: Plain, minor: str) -> None:
    python = need_attachable(minor)
    proc, state = plain.start(python, "attachable.py", "busy")
    base = wait_state(state, lambda s: s["counter"] >= 5)
    for _ in range(25):
        cycle(proc.pid, state, base, attach_route(minor))
    assert proc.poll() is None, "the target died"
    counter = state_of(state)["counter"]
    wait_state(state, lambda s: s["counter"] > counter + 3)  # still running its loop
    assert plain.log(0, "attachable.py") == ""  # nothing printed in the target


@pytest.mark.parametrize("minor", ["3.13", "3.14"])
def test_100_attach_detach_cycles_leave_nothing_behind(plain: Plain, minor: str) -> None:
    python = need_attachable(minor)
    proc, state = plain.start(python, "attachable.py", "idle")
    base = wait_state(state, lambda s: s["counter"] >= 5)
    process = psutil.Process(proc.pid)
    blocks: dict[int, int] = {}
    rss: dict[int, int] = {}
    for number in range(1, 101):
        cycle(proc.pid, state, base, attach_route(minor))
        if number in (10, 100):
            blocks[number] = state_of(state)["allocated_blocks"]
            rss[number] = process.memory_info().rss
    growth = (blocks[100] - blocks[10]) / 90
    assert growth < 5, f"{growth:.1f} allocated blocks per cycle"
    assert rss[100] - rss[10] < 1024 * 1024, f"RSS grew {rss[100] - rss[10]} bytes"
    final = state_of(state)
    assert (final["threads"], final["fds"], final["socket_fds"]) == (
        base["threads"],
        base["fds"],
        base["socket_fds"],
    )
    assert plain.log(0, "attachable.py") == ""
    # Of the files an attach writes in the run dir, only the per-process lock stays.
    start = rundir.process_start_time(proc.pid)
    target = preflight(proc.pid)
    run = target_run_dir(target, target.root())
    assert sorted(n for n in os.listdir(run) if n.startswith(f"{proc.pid}-")) == [
        f"{proc.pid}-{start}.lock"
    ]
