"""Signals that reach a target while gdb holds it, and targets that die or stop during an
attach: the program must survive, handle the signals it was sent (several of one kind sent
while it cannot run merge into one, as the kernel merges them without memtop), end up
stopped if it was stopped, and memtop must say what happened (exited, killed, stopped)
rather than blame ptrace or a busy main thread.

Every test drives a real target (tests/targets/signalled.py, Python handlers for SIGUSR1,
SIGUSR2, SIGINT and SIGALRM), real gdb and real signals sent from a thread of the test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    Plain,
    memtop_cli,
    need_gdb,
    need_interpreter,
    state_of,
    wait_for,
    wait_state,
)

from memtop.attach import gdb, procfs, remote_exec
from memtop.attach.chain import attach
from memtop.attach.preflight import preflight
from memtop.errors import AttachError, MemtopError, TargetExited

GDB_VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14"]
ROUTES = ["gdb", "gdb-parked"]
FAULTS = ROOT / "tests" / "gdb_faults.py"


def need_gdb_python(minor: str) -> str:
    need_gdb()
    return need_interpreter(minor)


def counts(state: Path) -> dict[str, int]:
    return state_of(state)["signals"]  # type: ignore[index]


def running(state: Path, turns: int = 2) -> dict:
    """The target's state once it has run `turns` more turns of its loop."""
    counter = state_of(state)["counter"]  # type: ignore[index]
    return wait_state(state, lambda s: s["counter"] >= counter + turns, timeout=20)


def traced(pid: int) -> bool:
    try:
        return procfs.read_status(pid).tracer_pid != 0
    except OSError:
        return False


def proc_state(pid: int) -> str:
    return procfs.read_status(pid).state


def assert_clean_log(plain: Plain, index: int = 0) -> None:
    """The program printed nothing: no faulthandler trace, no KeyboardInterrupt."""
    assert plain.log(index, "signalled.py") == ""


@contextmanager
def rain(pid: int, pattern: list[tuple[int, float]]) -> Iterator[list[int]]:
    """Send the signals of `pattern` ((signal, pause after it), repeated) to `pid` from a
    thread until the block ends; yields the list of signals sent so far. A stopped
    program is always continued at the end."""
    sent: list[int] = []
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            for signum, pause in pattern:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    return
                sent.append(signum)
                done.wait(pause)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        done.set()
        thread.join()
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


@contextmanager
def when_traced(pid: int, action: Callable[[], None], until_detached: bool = False):
    """Run `action` from a thread as soon as gdb holds `pid` (its TracerPid is set), or,
    with `until_detached`, as soon as gdb has let it go again."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() and not traced(pid):
            time.sleep(0.001)
        while until_detached and not done.is_set() and traced(pid):
            time.sleep(0.001)
        if not done.is_set():
            action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def attach_once(pid: int, method: str) -> str | None:
    """Attach, read a table, detach; None on success, else memtop's message."""
    try:
        attached = attach(pid, method=method, timeout=10)
    except MemtopError as exc:
        return exc.message
    try:
        assert attached.how == method
        assert attached.client.request("top", max_age=0.0, limit=5)["sample"]["fresh"]
        assert attached.client.request("detach")["detaching"]
    finally:
        attached.client.close()
    return None


def agent_gone(state: Path, threads: int) -> dict:
    """The target's state once the agent stopped (the next attach must inject again)."""
    return wait_state(state, lambda s: not s["tracing"] and s["threads"] == threads, timeout=20)


def start(plain: Plain, minor: str, kind: str = "parked") -> tuple[subprocess.Popen, Path]:
    python = need_gdb_python(minor)
    proc, state = plain.start(python, "signalled.py", kind)
    wait_state(state, lambda s: s["counter"] >= (1 if kind == "slow" else 3))
    return proc, state


# --- 20 attaches under a rain of signals ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("minor", GDB_VERSIONS)
def test_20_attaches_while_sigusr1_arrives_every_50ms(plain: Plain, minor: str) -> None:
    proc, state = start(plain, minor)
    base = state_of(state)["threads"]  # type: ignore[index]
    failures = []
    with rain(proc.pid, [(signal.SIGUSR1, 0.05)]):
        for number in range(20):
            before = counts(state)["SIGUSR1"]
            failure = attach_once(proc.pid, ROUTES[number % 2])
            if failure:
                failures.append(failure)
            assert proc.poll() is None, f"the target died at attach {number + 1}: {failures}"
            agent_gone(state, base)
            # Signals sent while gdb held the target were handled once it let go.
            wait_state(state, lambda s, b=before: s["signals"]["SIGUSR1"] > b)  # type: ignore[misc]
    assert failures == []
    running(state)
    assert_clean_log(plain)


@pytest.mark.slow
@pytest.mark.parametrize("minor", GDB_VERSIONS)
def test_20_attaches_while_the_target_is_stopped_and_continued(plain: Plain, minor: str) -> None:
    proc, state = start(plain, minor)
    base = state_of(state)["threads"]  # type: ignore[index]
    outcomes = []
    with rain(proc.pid, [(signal.SIGSTOP, 0.02), (signal.SIGCONT, 0.08)]):
        for number in range(20):
            outcomes.append(attach_once(proc.pid, ROUTES[number % 2]))
            assert proc.poll() is None, f"the target died at attach {number + 1}: {outcomes}"
            agent_gone(state, base)
            running(state, 1)  # as a user told "resume it and retry" would
    failures = [o for o in outcomes if o is not None]
    # A stopped target is refused or diagnosed as stopped, with the way to resume it.
    for failure in failures:
        assert re.search(rf"process {proc.pid} is stopped .*kill -CONT {proc.pid}", failure)
    assert len(failures) < len(outcomes), outcomes
    assert proc_state(proc.pid) != "T"
    running(state)
    assert_clean_log(plain)


# --- one signal while gdb holds the target ----------------------------------------------


@pytest.mark.parametrize(
    "name", ["SIGUSR1", "SIGUSR2", "SIGINT", "SIGALRM", "SIGCHLD", "SIGPIPE", "SIGWINCH"]
)
@pytest.mark.parametrize("route", ROUTES)
def test_signal_sent_while_gdb_holds_the_target_reaches_it(
    plain: Plain, route: str, name: str
) -> None:
    proc, state = start(plain, "3.12")
    signum = getattr(signal, name)
    before = counts(state)
    # Sent the moment gdb holds the target and again every 5 ms until it lets go: some
    # land while the target is stopped, some in the middle of gdb's calls into it.
    sent = []

    def pelt() -> None:
        while traced(proc.pid):
            os.kill(proc.pid, signum)
            sent.append(signum)
            time.sleep(0.005)

    with when_traced(proc.pid, pelt):
        assert attach_once(proc.pid, route) is None
    assert sent
    assert proc.poll() is None
    if name in before:  # a Python handler counts it
        wait_state(state, lambda s: s["signals"][name] > before[name])
    else:  # ignored by the program (SIGPIPE: CPython ignores it; the others by default)
        running(state)
    assert_clean_log(plain)


def test_interval_timer_keeps_firing_through_attaches(plain: Plain) -> None:
    proc, state = start(plain, "3.11", kind="itimer")
    base = state_of(state)["threads"]  # type: ignore[index]
    for route in ROUTES:
        before = counts(state)["SIGALRM"]
        assert attach_once(proc.pid, route) is None
        agent_gone(state, base)
        wait_state(state, lambda s, b=before: s["signals"]["SIGALRM"] > b + 10)  # type: ignore[misc]
    assert_clean_log(plain)


@pytest.mark.parametrize("route", ROUTES)
def test_sigstop_while_gdb_holds_the_target_leaves_it_stopped(plain: Plain, route: str) -> None:
    proc, state = start(plain, "3.12")

    def stop() -> None:
        os.kill(proc.pid, signal.SIGSTOP)

    try:
        with when_traced(proc.pid, stop):
            failure = attach_once(proc.pid, route)
        # As it would have been without memtop: stopped, until someone continues it.
        assert proc_state(proc.pid) == "T"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    # The pending call cannot run in a stopped program; the parked route runs the
    # bootstrap inside gdb's call, but the agent cannot answer while the program is stopped.
    assert failure is not None
    assert f"process {proc.pid} is stopped (SIGSTOP or Ctrl-Z)" in failure
    assert f"kill -CONT {proc.pid}" in failure
    assert "busy in C code" not in failure
    running(state)
    assert proc.poll() is None
    assert_clean_log(plain)


# --- the target dies or stops during the attach -----------------------------------------


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_target_killed_while_gdb_holds_it_is_reported_as_killed(plain: Plain, delay: float) -> None:
    proc, _ = start(plain, "3.12", kind="sleeping")

    def kill() -> None:
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)

    with when_traced(proc.pid, kill):
        result = memtop_cli("attach", str(proc.pid), "--method", "gdb", "--json", "-n", "1")
    assert result.returncode == 3, result.stderr
    assert f"process {proc.pid} was killed by SIGKILL while memtop was attaching" in (result.stderr)
    for wrong in ("ptrace", "LSM", "No symbol", "Traceback"):
        assert wrong not in result.stderr


def test_target_that_died_before_gdb_attached_is_reported_as_exited(plain: Plain) -> None:
    proc, _ = start(plain, "3.12", kind="sleeping")
    target = preflight(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    wait_for(lambda: proc_state(proc.pid) == "Z", what="the target to be a zombie")
    # Not reaped yet: its exit status is still in /proc (ptrace refuses a zombie).
    with pytest.raises(TargetExited) as zombie:
        gdb.run(target, "pending", "pass")
    assert zombie.value.message == (
        f"process {proc.pid} was killed by SIGTERM while memtop was attaching to it; "
        "nothing to attach to"
    )
    proc.wait()
    with pytest.raises(TargetExited) as reaped:
        gdb.run(target, "pending", "pass")
    assert f"process {proc.pid} exited while memtop was attaching" in reaped.value.message


def test_target_that_died_under_remote_exec_is_reported_as_killed(
    plain: Plain, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = need_interpreter("3.14")
    proc, state = plain.start(python, "signalled.py", "sleeping")
    wait_state(state, lambda s: s["counter"] >= 3)
    inject = remote_exec.inject

    def killed_first(target, script, timeout):  # type: ignore[no-untyped-def]
        os.kill(proc.pid, signal.SIGKILL)
        wait_for(lambda: proc_state(proc.pid) == "Z", what="the target to be a zombie")
        return inject(target, script, timeout)

    monkeypatch.setattr(remote_exec, "inject", killed_first)
    with pytest.raises(TargetExited) as ended:
        attach(proc.pid, method="remote-exec")
    assert ended.value.message.startswith(f"process {proc.pid} was killed by SIGKILL while")


def test_real_ptrace_refusal_still_gets_the_ptrace_advice(plain: Plain) -> None:
    proc, state = start(plain, "3.12", kind="sleeping")
    target = preflight(proc.pid)
    holder = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "targets" / "ptrace_holder.py"), str(proc.pid)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "traced"
        with pytest.raises(AttachError) as refused:
            gdb.run(target, "pending", "pass")
    finally:
        holder.kill()
        holder.wait()
    assert f"cannot attach to pid {proc.pid}" in refused.value.message
    assert "the kernel refused ptrace" in refused.value.message
    running(state)


@pytest.mark.parametrize("method", ["auto", "gdb"])
def test_target_stopped_right_after_the_injection_is_reported_as_stopped(
    plain: Plain, method: str
) -> None:
    # The main thread sleeps 5 s at a time, and the pending call waits for that: memtop
    # starts right after the program's report, so gdb is done well before the sleep ends.
    proc, state = start(plain, "3.12", kind="slow")
    running(state, 1)

    def stop() -> None:
        os.kill(proc.pid, signal.SIGSTOP)

    try:
        with when_traced(proc.pid, stop, until_detached=True):
            result = memtop_cli(
                "attach", str(proc.pid), "--method", method, "--timeout", "2", "--json"
            )
        assert proc_state(proc.pid) == "T"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert result.returncode == 2, result.stderr
    assert (
        f"process {proc.pid} is stopped (SIGSTOP or Ctrl-Z), so the gdb request cannot run; "
        f"resume it with `kill -CONT {proc.pid}` and retry"
    ) in result.stderr
    assert "busy in C code" not in result.stderr
    # Continued, it runs the queued bootstrap, which finds its session withdrawn.
    after = running(state, 1)
    assert after["agent_loaded"] is False and after["tracing"] is False
    assert_clean_log(plain)


# --- calls into the target that a fault cuts short --------------------------------------


def with_faults(
    monkeypatch: pytest.MonkeyPatch, tmp: Path, function: str, how: str, times: int = 1
) -> Path:
    """Make gdb run tests/gdb_faults.py (set for `function`, `how`) before memtop's script;
    returns the file where it logs gdb's calls of mmap, munmap and `function`."""
    log = tmp / f"faults-{function}-{how}.jsonl"
    hook = tmp / f"faults-{function}-{how}.py"
    settings = {"function": function, "how": how, "times": times, "log": str(log)}
    hook.write_text(
        f"SETTINGS = {settings!r}\n"
        f"exec(compile(open({str(FAULTS)!r}).read(), {str(FAULTS)!r}, 'exec'))\n"
    )
    command = gdb.gdb_command

    def with_hook(target):  # type: ignore[no-untyped-def]
        built = command(target)
        return [*built[:-2], "-x", str(hook), *built[-2:]]

    monkeypatch.setattr(gdb, "gdb_command", with_hook)
    return log


def logged(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def mapped(pid: int, address: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            low, high = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            if low <= address < high:
                return True
    return False


@pytest.mark.parametrize("how", ["here", "elsewhere"])
@pytest.mark.parametrize(
    ("route", "function"),
    [
        ("gdb", "mmap"),
        ("gdb", "Py_AddPendingCall"),
        ("gdb-parked", "mmap"),
        ("gdb-parked", "PyGILState_Ensure"),
        ("gdb-parked", "PyRun_SimpleString"),
        ("gdb-parked", "PyGILState_Release"),
        ("gdb-parked", "munmap"),
    ],
)
def test_call_cut_short_by_a_fault_is_settled(
    plain: Plain,
    short_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    route: str,
    function: str,
    how: str,
) -> None:
    proc, state = start(plain, "3.12")
    base = state_of(state)["threads"]  # type: ignore[index]
    before = counts(state)["SIGUSR2"]
    log = with_faults(monkeypatch, short_tmp, function, how)
    # A call gdb unwound is made again (by the script, or by a second gdb run); one it
    # left in place is run to its end.
    assert attach_once(proc.pid, route) is None
    calls = logged(log)
    assert [c["function"] for c in calls if c["faulted"]] == [function]
    agent_gone(state, base)
    after = running(state, 3)  # the GIL is free: the main thread runs Python
    assert proc.poll() is None
    if how == "elsewhere":
        assert after["signals"]["SIGUSR2"] == before + 1  # passed on to the program
    # Every page memtop mapped is gone, but for one a cut-short Py_AddPendingCall may
    # have queued: that one is never freed nor queued again (if it was queued, its
    # bootstrap frees it when it runs; here it was not, so it stays).
    pages = [c["arg"] for c in calls if c["function"] == "mmap"]
    left = [page for page in pages if mapped(proc.pid, page)]
    cut_short_queue = function == "Py_AddPendingCall" and how == "here"
    assert left == (pages[:1] if cut_short_queue else []), calls
    assert_clean_log(plain)


# --- a gdb that overruns its time -------------------------------------------------------


def test_gdb_overrunning_its_time_is_left_to_finish_and_never_interrupted(
    plain: Plain, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, state = start(plain, "3.12", kind="hog")
    base = state_of(state)["threads"]  # type: ignore[index]
    hog = Path(f"{state}.hog")
    hog.touch()
    wait_for(lambda: not hog.exists(), what="the main thread to take the GIL for seconds")
    # gdb attaches, picks the parked worker, and waits in PyGILState_Ensure for the GIL.
    monkeypatch.setattr(gdb, "GDB_TIMEOUT", 3.0)
    with pytest.raises(AttachError) as overrun:
        attach(proc.pid, method="gdb-parked")
    # Interrupting gdb would mean a SIGINT to the program (a KeyboardInterrupt) or a call
    # cut short while it waits for the GIL; it finishes and detaches by itself.
    wait_for(lambda: not traced(proc.pid), timeout=120, what="gdb to detach by itself")
    assert proc.poll() is None
    after = running(state)
    assert after["signals"]["SIGINT"] == 0
    assert after["tracing"] is False  # its bootstrap found the session withdrawn
    assert after["threads"] == base
    assert attach_once(proc.pid, "gdb-parked") is None
    assert_clean_log(plain)
    assert "gdb did not finish within 3 s" in overrun.value.message
    assert "left to finish its call" in overrun.value.message
