"""What repeated `memtop attach PID --json -n 1` + `memtop detach PID` cycles (real memtop
processes, the command line a user types) leave in the target: no file of the attach in
its run dir (only the per-process lock stays), no atexit slot, no memory per cycle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Plain, memtop_cli, need_attachable, state_of, wait_state

from memtop.agent import rundir

MEASURED_FROM = 3  # the first cycles load the agent and its modules once


def cycle(pid: int, state: Path, base: dict, mode: str = "exact") -> dict:
    """One attach (one JSON refresh, in `mode`) and one detach through the CLI; the
    target's state once the agent is gone."""
    attached = memtop_cli("attach", str(pid), "--mode", mode, "--json", "-n", "1", timeout=90)
    assert attached.returncode == 0, attached.stderr
    detached = memtop_cli("detach", str(pid), timeout=90)
    assert detached.returncode == 0, detached.stderr
    counter = state_of(state)["counter"]
    return wait_state(
        state,
        lambda s: (
            not s["tracing"]
            and s["threads"] == base["threads"]
            and s["fds"] == base["fds"]
            and s["counter"] > counter + 1
        ),
        timeout=10,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("minor", "cycles"),
    # 25 on one interpreter of each route; fewer on the others, to keep the suite short.
    [("3.9", 10), ("3.11", 10), ("3.12", 25), ("3.13", 10), ("3.14", 25)],
)
def test_cli_attach_detach_cycles_leave_nothing_behind(
    plain: Plain, short_tmp: Path, minor: str, cycles: int
) -> None:
    python = need_attachable(minor)
    xdg = short_tmp / "xdg"  # a run dir of this test's own: every file in it is the test's
    xdg.mkdir(mode=0o700)
    proc, state = plain.start(
        python, "settled.py", env={"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(xdg)}
    )
    base = wait_state(state, lambda s: s["counter"] >= 3)
    lock = f"{proc.pid}-{rundir.process_start_time(proc.pid)}.lock"
    seen = {}
    for number in range(1, cycles + 1):
        seen[number] = cycle(proc.pid, state, base)
        left = sorted(
            name for name in os.listdir(xdg / "memtop") if name.startswith(f"{proc.pid}-")
        )
        assert left == [lock], f"cycle {number} left {left}"
    first, last = seen[MEASURED_FROM], seen[cycles]
    assert last["atexit_callbacks"] == first["atexit_callbacks"]
    per_cycle = (last["settled_blocks"] - first["settled_blocks"]) / (cycles - MEASURED_FROM)
    blocks = [seen[n]["settled_blocks"] - first["settled_blocks"] for n in sorted(seen)]
    assert per_cycle < 1, f"{per_cycle:.1f} allocated blocks kept per cycle: {blocks}"
    assert proc.poll() is None
    assert plain.log(0, "settled.py") == ""  # nothing printed in the target


@pytest.mark.slow
@pytest.mark.parametrize("minor", ["3.12", "3.14"])
def test_sampled_attach_detach_cycles_leave_nothing_after_the_first(
    plain: Plain, short_tmp: Path, minor: str
) -> None:
    """Sampled mode loads ctypes and the sampler's library once (never unloaded; on the
    optimized 3.14 build libffi keeps one descriptor to its own library open from then
    on): after the first cycle, threads, descriptors and memory stay as they were."""
    python = need_attachable(minor)
    if not (Path(rundir.__file__).parent / "native" / "libmemtopsampler.so").exists():
        pytest.skip("the sampler library was not built here (no C compiler; CI has one)")
    xdg = short_tmp / "xdg"
    xdg.mkdir(mode=0o700)
    proc, state = plain.start(
        python, "settled.py", env={"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(xdg)}
    )
    before = wait_state(state, lambda s: s["counter"] >= 3)
    attached = memtop_cli("attach", str(proc.pid), "--json", "-n", "1", timeout=90)
    assert attached.returncode == 0, attached.stderr
    assert '"mode":"sampled"' in attached.stdout  # the default for an attach
    base = wait_state(
        state, lambda s: not s["tracing"] and s["threads"] == before["threads"], timeout=10
    )
    seen = {n: cycle(proc.pid, state, base, "sampled") for n in range(1, 11)}
    first, last = seen[MEASURED_FROM], seen[10]
    assert last["atexit_callbacks"] == first["atexit_callbacks"]
    per_cycle = (last["settled_blocks"] - first["settled_blocks"]) / (10 - MEASURED_FROM)
    assert per_cycle < 1, [seen[n]["settled_blocks"] for n in sorted(seen)]
    assert plain.log(0, "settled.py") == ""
