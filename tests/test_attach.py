"""Attaching to programs that were started without memtop, on every interpreter found:
the routes, the fallbacks, and what is left behind (attach-and-safety.md §6, cases 1-3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    TARGETS,
    Plain,
    attach_route,
    marked_lines,
    memtop_cli,
    need_attachable,
    need_gdb,
    read_state,
    state_of,
    stream_json,
    wait_for,
    wait_state,
)

GROW = marked_lines(TARGETS / "attachable.py")["grow"]
VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15"]


def has_grow_row(line: dict) -> bool:
    return any(
        row["lineno"] == GROW and row["filename"].endswith("attachable.py") for row in line["rows"]
    )


def settled(state: Path) -> dict:
    """The target's state once it has run a few turns (all its threads started)."""
    return wait_state(state, lambda s: s.get("counter", 0) >= 5)


def assert_left_clean(state: Path, before: dict) -> None:
    """After detach: tracing off, threads and sockets back to what they were before the
    attach (`before` is the target's state then), and the program still running."""
    counter = state_of(state)["counter"]
    after = wait_state(
        state,
        lambda s: (
            not s["tracing"]
            and s["threads"] == before["threads"]
            and s["socket_fds"] == before["socket_fds"]
            and s["counter"] > counter + 2
        ),
        timeout=40,  # a target with 4 busy threads on a loaded 2-core machine is slow
    )
    assert after["agent_loaded"]  # the module stays loaded: the next attach reuses it


@pytest.mark.parametrize("kind", ["sleeping", "busy", "multithread", "asyncio"])
@pytest.mark.parametrize("minor", VERSIONS)
def test_attach_reads_rows_at_the_known_line(plain: Plain, minor: str, kind: str) -> None:
    python = need_attachable(minor)
    proc, state = plain.start(python, "attachable.py", kind)
    before = settled(state)
    line, err = stream_json(["attach", str(proc.pid), "--json", "-i", "0.3"], has_grow_row)
    assert f"via {attach_route(minor)} in" in err
    assert f"CPython {minor}" in err
    assert line["pid"] == proc.pid
    assert_left_clean(state, before)


@pytest.mark.parametrize("kind", ["blocked_sleep", "blocked_select", "blocked_join"])
@pytest.mark.parametrize("minor", ["3.9", "3.11", "3.13", "3.14"])
def test_blocked_main_thread_falls_back_to_a_parked_thread(
    plain: Plain, minor: str, kind: str
) -> None:
    python = need_attachable(minor)
    need_gdb()
    proc, state = plain.start(python, "attachable.py", kind)
    before = settled(state)
    _, err = stream_json(
        ["attach", str(proc.pid), "--json", "-i", "0.3", "--timeout", "1"], has_grow_row
    )
    assert "via gdb-parked in" in err
    assert_left_clean(state, before)
    assert proc.poll() is None


@pytest.mark.parametrize(("minor", "method"), [("3.11", "gdb"), ("3.14", "remote-exec")])
def test_blocked_main_thread_is_diagnosed_when_no_fallback_is_allowed(
    plain: Plain, minor: str, method: str
) -> None:
    python = need_attachable(minor)
    proc, state = plain.start(python, "attachable.py", "blocked_sleep")
    before = settled(state)
    started = time.monotonic()
    result = memtop_cli(
        "attach", str(proc.pid), "--method", method, "--timeout", "1", "--json", "-n", "1"
    )
    assert result.returncode == 2, result.stderr
    assert "blocked in clock_nanosleep (time.sleep)" in result.stderr
    assert "--method gdb-parked" in result.stderr
    assert time.monotonic() - started < 15
    assert state_of(state)["threads"] == before["threads"]  # nothing started in the target


def test_forced_parked_method_on_an_idle_target(plain: Plain) -> None:
    python = need_attachable("3.12")
    need_gdb()
    proc, state = plain.start(python, "attachable.py", "multithread")
    wait_state(state)
    _, err = stream_json(
        ["attach", str(proc.pid), "--method", "gdb-parked", "--json"], has_grow_row
    )
    assert "via gdb-parked" in err


def test_non_python_process_is_named_as_such() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        result = memtop_cli("attach", str(sleeper.pid))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode == 2
    assert f"pid {sleeper.pid} (sleep) is not a CPython process" in result.stderr


def test_missing_pid() -> None:
    result = memtop_cli("4194303")
    assert result.returncode == 2
    assert "no process with pid 4194303" in result.stderr


def test_viewer_killed_then_reattached_finds_the_same_agent(plain: Plain) -> None:
    python = need_attachable("3.11")
    proc, state = plain.start(python, "attachable.py", "sleeping")
    wait_state(state)
    first = subprocess.Popen(
        # Exact mode: the program's own tracemalloc state shows the tracing going on.
        [sys.executable, "-m", "memtop", str(proc.pid), "--mode", "exact", "--json", "-i", "0.3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert first.stdout is not None
    before = json.loads(first.stdout.readline())
    first.kill()  # an SSH session that died: no detach
    first.wait()
    # The program reports its state every so often: the next report still traces.
    after = state_of(state)["counter"]
    wait_state(state, lambda s: s["counter"] > after)
    assert state_of(state)["tracing"] is True
    line, err = stream_json(
        [str(proc.pid), "--mode", "exact", "--json", "-i", "0.3"],
        lambda line: line["table"]["age"] < 5,
    )
    # Tracing was never interrupted: the same agent, its traces and peak are still there.
    assert line["traced_peak"] >= before["traced_peak"] * 0.5
    assert "via gdb" in err


def test_detach_command_stops_an_agent_left_serving(plain: Plain) -> None:
    python = need_attachable("3.14")
    proc, state = plain.start(python, "attachable.py", "idle")
    before = settled(state)
    from memtop.attach.chain import attach

    attached = attach(proc.pid)
    attached.client.close()  # leave it serving, as `Q` does
    wait_state(state, lambda s: s["tracing"] and s["threads"] == before["threads"] + 1)
    result = memtop_cli("detach", str(proc.pid))
    assert result.returncode == 0, result.stderr
    assert f"agent stopped in pid {proc.pid}" in result.stderr
    assert_left_clean(state, before)
    again = memtop_cli("detach", str(proc.pid))
    assert f"no memtop agent serves pid {proc.pid}" in again.stderr


def test_ps_lists_python_processes_and_their_agents(plain: Plain) -> None:
    python = need_attachable("3.14")
    proc, state = plain.start(python, "attachable.py", "idle")
    wait_state(state)
    listed = json.loads(memtop_cli("ps", "--json").stdout)
    mine = next(row for row in listed if row["pid"] == proc.pid)
    assert mine["python"].startswith("3.14") and mine["agent"] is False
    assert "attachable.py" in mine["command"] and mine["rss"] > 0
    assert [row["rss"] for row in listed] == sorted((row["rss"] for row in listed), reverse=True)
    from memtop.attach.chain import attach

    attach(proc.pid).client.close()
    listed = json.loads(memtop_cli("ps", "--json").stdout)
    assert next(row for row in listed if row["pid"] == proc.pid)["agent"] is True
    text = memtop_cli("ps").stdout
    assert "PID" in text.splitlines()[0] and str(proc.pid) in text


def test_opt_in_agent_is_attached_without_ptrace(plain: Plain, short_tmp: Path) -> None:
    # The environment variable is read at interpreter start (here through sitecustomize;
    # a .pth line in site-packages works the same).
    hook = short_tmp / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import memtop.agent.autostart\n")
    env = {**os.environ, "PYTHONPATH": f"{hook}:{ROOT}", "MEMTOP_AGENT": "on-connect"}
    proc, state = plain.start(sys.executable, "attachable.py", "sleeping", env=env)
    first = wait_state(state)
    assert first["tracing"] is False  # on-connect: nothing is paid before a viewer comes
    _, err = stream_json([str(proc.pid), "--json", "-i", "0.3"], has_grow_row)
    assert "via opt-in" in err
    # Detaching stops tracing; the agent stays, ready for the next viewer.
    wait_state(state, lambda s: not s["tracing"] and s["socket_fds"] == 1)
    _, err = stream_json([str(proc.pid), "--json", "-i", "0.3"], has_grow_row)
    assert "via opt-in" in err


@pytest.mark.parametrize(("minor", "method"), [("3.11", "gdb"), ("3.14", "remote-exec")])
def test_late_bootstrap_does_nothing(plain: Plain, minor: str, method: str) -> None:
    python = need_attachable(minor)
    fifo = plain.tmp / f"wake-{minor}"
    proc, state = plain.start(python, "attachable.py", "late", str(fifo))
    wait_state(state)
    result = memtop_cli("attach", str(proc.pid), "--method", method, "--timeout", "0.5")
    assert result.returncode == 2, result.stderr
    # Woken only now (however long the attach took), the main thread runs the queued
    # bootstrap: its session is gone, so it does nothing, loads nothing, prints nothing.
    fifo.write_bytes(b"x")
    after = wait_state(state, lambda s: s["counter"] > 20, timeout=20)
    assert after["agent_loaded"] is False and after["tracing"] is False
    assert after["threads"] == 1
    assert plain.log(0, "attachable.py") == ""


def test_target_that_opted_out_is_refused_without_gdb(plain: Plain) -> None:
    python = need_attachable("3.14")
    env = {**os.environ, "PYTHON_DISABLE_REMOTE_DEBUG": "1"}
    proc, state = plain.start(python, "attachable.py", "sleeping", env=env)
    wait_state(state)
    result = memtop_cli("attach", str(proc.pid), "--json", "-n", "1")
    assert result.returncode == 2
    assert "opted out of remote debugging (PYTHON_DISABLE_REMOTE_DEBUG is set)" in result.stderr
    assert "--force-gdb" in result.stderr
    assert state_of(state)["agent_loaded"] is False
    need_gdb()
    forced = memtop_cli("attach", str(proc.pid), "--force-gdb", "--json", "-n", "1")
    assert forced.returncode == 0, forced.stderr
    assert "via gdb" in forced.stderr


def test_audit_hook_veto_is_reported(plain: Plain) -> None:
    python = need_attachable("3.14")
    proc, state = plain.start(python, "attachable.py", "audit_veto")
    wait_state(state)
    result = memtop_cli("attach", str(proc.pid), "--timeout", "1.5", "--json", "-n", "1")
    assert result.returncode == 2
    assert "audit hook" in result.stderr
    assert state_of(state)["agent_loaded"] is False


def test_two_attaches_at_once_share_one_agent(plain: Plain) -> None:
    python = need_attachable("3.14")
    proc, state = plain.start(python, "attachable.py", "sleeping")
    before = settled(state)
    # Output goes to files: three large JSON lines would fill a pipe nobody reads yet.
    files = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(2)]  # noqa: SIM115 - read and closed below
    viewers = [
        subprocess.Popen(
            [sys.executable, "-m", "memtop", str(proc.pid), "--json", "-n", "3", "-i", "0.5"],
            cwd=ROOT,
            stdout=out,
            stderr=err,
            text=True,
        )
        for out, err in files
    ]
    peak_threads = before["threads"]
    deadline = time.monotonic() + 120
    while any(v.poll() is None for v in viewers) and time.monotonic() < deadline:
        state_now = read_state(state)
        if state_now:
            peak_threads = max(peak_threads, state_now["threads"])
        time.sleep(0.05)
    for viewer in viewers:
        if viewer.poll() is None:
            viewer.kill()
        viewer.wait()
    outputs = []
    for out, err in files:
        out.seek(0)
        err.seek(0)
        outputs.append((out.read(), err.read()))
    assert [v.returncode for v in viewers] == [0, 0], outputs
    assert all(len(out.splitlines()) == 3 for out, _ in outputs)
    assert peak_threads == before["threads"] + 1  # one agent thread, however many viewers
    assert_left_clean(state, before)


def test_sigstopped_target_is_refused_untouched(plain: Plain) -> None:
    python = need_attachable("3.11")
    proc, state = plain.start(python, "attachable.py", "idle")
    wait_state(state)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        result = memtop_cli("attach", str(proc.pid))
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert result.returncode == 2
    assert f"kill -CONT {proc.pid}" in result.stderr
    wait_for(lambda: state_of(state)["counter"] > 0, 5, "the target to carry on")
    assert state_of(state)["agent_loaded"] is False
