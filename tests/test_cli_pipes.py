"""memtop in a pipeline whose reader goes away (`| head`): it stops quietly, with no
traceback, and cleans up as it always does: a program started by `run` is stopped, an
attached agent is detached and the target keeps running."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, TARGETS, need_gdb, wait_for, wait_state

MEMTOP = f"{sys.executable} -m memtop"


def closed_reader(*args: str) -> subprocess.CompletedProcess[str]:
    """Run memtop with its stdout a pipe whose reader has already gone (every write
    fails with EPIPE, whatever the timing)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "memtop", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    try:
        err = proc.stderr.read()
        code = proc.wait(60)
    finally:
        proc.kill()
        proc.wait()
    return subprocess.CompletedProcess(proc.args, code, "", err)


def shell(pipeline: str) -> subprocess.CompletedProcess[str]:
    """A real shell pipeline; memtop's stderr is what the test reads."""
    return subprocess.run(
        ["bash", "-c", pipeline], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def quiet(err: str) -> None:
    for noise in ("Traceback", "BrokenPipe", "Exception ignored"):
        assert noise not in err, err


def test_ps_into_head_stops_quietly() -> None:
    done = closed_reader("ps", "-a")
    quiet(done.stderr)
    assert done.returncode == 141
    done = shell(f"{MEMTOP} ps -a | head -1")
    quiet(done.stderr)
    assert done.stdout.startswith("    PID")


@pytest.fixture
def plain_target(short_tmp: Path):  # type: ignore[no-untyped-def]
    """A program started without memtop; killed at teardown."""
    need_gdb()
    state = short_tmp / "idle.json"
    proc = subprocess.Popen(
        [sys.executable, str(TARGETS / "attachable.py"), str(state), "sleeping"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_state(state)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_json_of_an_attached_process_into_head_detaches_quietly(plain_target) -> None:  # type: ignore[no-untyped-def]
    pid = plain_target.pid
    done = closed_reader(str(pid), "--json")
    quiet(done.stderr)
    assert done.returncode == 141
    assert f"detached from pid {pid}" in done.stderr
    done = shell(f"{MEMTOP} {pid} --json | head -c 100")
    quiet(done.stderr)
    assert len(done.stdout) == 100 and f"detached from pid {pid}" in done.stderr
    assert plain_target.poll() is None  # the target lives on
    listed = json.loads(subprocess.check_output([sys.executable, "-m", "memtop", "ps", "--json"]))
    assert [row["agent"] for row in listed if row["pid"] == pid] == [False]  # detached


def test_run_into_head_stops_the_program_quietly(short_tmp: Path) -> None:
    for reader in ("closed", "head"):
        state = short_tmp / f"{reader}.json"
        args = ["run", "-b", "-i", "0.2", str(TARGETS / "idle.py"), str(state)]
        if reader == "closed":
            done = closed_reader(*args)
            assert done.returncode == 141
        else:
            done = shell(f"{MEMTOP} {' '.join(args)} | head -3")
        quiet(done.stderr)
        pid = int(re.search(r"program pid (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
        assert "stopped the program" in done.stderr
        wait_for(lambda: not psutil.pid_exists(pid), 10, "the program to be gone")  # noqa: B023
