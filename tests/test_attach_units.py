"""The attach chain's pure parts: route planning, opt-out detection, the bootstrap text,
ELF reading, run-dir housekeeping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import interpreters

from memtop.agent.rundir import RunDir, open_run_dir
from memtop.attach import remote_exec
from memtop.attach.chain import plan
from memtop.attach.elfinfo import ElfError, ElfFile
from memtop.attach.preflight import Target
from memtop.attach.procfs import ThreadWait
from memtop.attach.pyversion import PythonInfo
from memtop.attach.session import (
    PAGE_PLACEHOLDER,
    AttachLock,
    Session,
    remove_stale,
)
from memtop.errors import AttachError, UsageError


def target(version: tuple[int, int], environ=None, cmdline=None) -> Target:
    python = PythonInfo(
        version, f"{version[0]}.{version[1]}.0", False, "/usr/lib/libpython.so", "/usr/bin/python3"
    )
    return Target(4242, 1, 1000, 1000, "python3", python, environ or {}, cmdline or [])


@pytest.mark.parametrize(
    ("version", "method", "routes"),
    [
        ((3, 14), "auto", ["remote-exec", "gdb-parked"]),
        ((3, 15), "auto", ["remote-exec", "gdb-parked"]),
        ((3, 9), "auto", ["gdb", "gdb-parked"]),
        ((3, 13), "auto", ["gdb", "gdb-parked"]),
        ((3, 11), "gdb-parked", ["gdb-parked"]),
        ((3, 14), "gdb", ["gdb"]),
        ((3, 14), "remote-exec", ["remote-exec"]),
    ],
)
def test_routes_in_order(version, method, routes) -> None:
    assert plan(target(version), method) == routes


def test_remote_exec_before_3_14_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"needs CPython 3\.14"):
        plan(target((3, 12)), "remote-exec")


@pytest.mark.parametrize(
    ("environ", "cmdline", "how"),
    [
        ({"PYTHON_DISABLE_REMOTE_DEBUG": "1"}, [], "PYTHON_DISABLE_REMOTE_DEBUG is set"),
        ({}, ["python3", "-X", "disable-remote-debug", "app.py"], "-X disable-remote-debug"),
        ({}, ["python3", "-Xdisable-remote-debug", "app.py"], "-X disable-remote-debug"),
    ],
)
def test_opted_out_targets_are_refused_unless_gdb_is_forced(environ, cmdline, how) -> None:
    opted = target((3, 14), environ, cmdline)
    with pytest.raises(remote_exec.RemoteDebugDisabled, match=how):
        plan(opted, "auto")
    assert plan(opted, "auto", force_gdb=True) == ["gdb", "gdb-parked"]
    with pytest.raises(remote_exec.RemoteDebugDisabled):
        plan(opted, "remote-exec", force_gdb=True)


def test_older_targets_are_not_judged_by_remote_debug_settings() -> None:
    old = target((3, 12), {"PYTHON_DISABLE_REMOTE_DEBUG": "1"})
    assert plan(old, "auto") == ["gdb", "gdb-parked"]


def private_dir(path: Path) -> RunDir:
    """`path` made a 0700 run dir of this user, opened."""
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return open_run_dir(str(path), os.geteuid())


def test_bootstrap_is_small_and_runs_on_python_3_9(tmp_path: Path) -> None:
    run_dir = private_dir(tmp_path / "run")
    session = Session(run_dir, "1-2-abcd.session", "t" * 64, str(tmp_path / "agent"))
    for text in (session.bootstrap(), session.bootstrap(gdb_page=True)):
        assert len(text.encode()) <= 1024
        compile(text, "<bootstrap>", "exec")
    assert PAGE_PLACEHOLDER in session.bootstrap(gdb_page=True)
    python = interpreters().get("3.9")
    if python is None:
        pytest.skip("CPython 3.9 is not installed here (CI installs it)")
    # With no session file (a late run), it does nothing and prints nothing, on 3.9 too.
    done = subprocess.run(
        [
            python,
            "-c",
            session.bootstrap() + "\nimport sys; assert '_memtop_agent' not in sys.modules",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_bootstrap_swallows_every_error(tmp_path: Path) -> None:
    run_dir = private_dir(tmp_path / "run")
    (tmp_path / "run" / "1-2-abcd.session").write_text("{}")
    session = Session(run_dir, "1-2-abcd.session", "t" * 64, str(tmp_path / "no-such-agent"))
    done = subprocess.run(
        [sys.executable, "-c", session.bootstrap()], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == ""


def test_elf_reader_finds_the_c_api_and_the_version() -> None:
    binary = interpreters().get("3.14")
    if binary is None:
        pytest.skip("CPython 3.14 is not installed here (CI installs it)")
    elf = ElfFile(binary)
    assert elf.has("PyRun_SimpleString") and elf.has("Py_AddPendingCall")
    raw = elf.read_symbol("Py_Version")
    assert raw is not None and raw[3] == 3 and raw[2] == 14  # PY_VERSION_HEX, little endian


@pytest.mark.parametrize("content", [b"", b"#!/bin/sh\n", b"\x7fELF\x01\x01" + b"\0" * 60])
def test_elf_reader_refuses_what_it_cannot_read(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not-elf"
    path.write_bytes(content)
    with pytest.raises(ElfError):
        ElfFile(str(path))


def test_stale_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    me = os.getpid()
    from memtop.agent.rundir import process_start_time

    start = process_start_time(me)
    alive = [f"{me}-{start}.sock", f"{me}-{start}.token", f"{me}-{start}-ab12.session"]
    dead = [
        f"{me}-{start + 1}.sock",
        "4194303-5.sock",
        "4194303-5-cd34.session.result",
        "4194303-5.boot.py",
    ]
    for name in alive + dead + ["unrelated.txt"]:
        (tmp_path / name).write_text("x")
    (tmp_path / "agent-0123456789abcdef").mkdir()
    tmp_path.chmod(0o700)
    remove_stale(open_run_dir(str(tmp_path), os.geteuid()))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*alive, "unrelated.txt", "agent-0123456789abcdef"])


def test_one_attach_at_a_time_per_target(tmp_path: Path) -> None:
    order = []
    run_dir = private_dir(tmp_path / "run")
    with AttachLock(run_dir, 1, 2):

        def second() -> None:
            with AttachLock(private_dir(tmp_path / "run"), 1, 2):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.3)
        assert thread.is_alive()  # waiting for the first to finish
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]


def test_thread_wait_wording() -> None:
    assert (
        ThreadWait("clock_nanosleep", "hrtimer_nanosleep", 1).describe()
        == "clock_nanosleep (time.sleep)"
    )
    assert (
        ThreadWait("futex", "futex_wait", 1).describe()
        == "futex (a lock, Thread.join() or queue.get())"
    )
    assert ThreadWait(None, "0", 1).describe() == "running"


def test_attach_refuses_memtop_itself() -> None:
    from memtop.attach.preflight import preflight

    with pytest.raises(AttachError, match="memtop itself"):
        preflight(os.getpid())


def test_a_session_withdrawn_between_read_and_claim_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bootstrap read the session, then the viewer gave up and withdrew it before the
    # bootstrap claimed it: whoever removes the file first decides, so nothing starts.
    from memtop.agent import bootstrap, lifecycle

    path = tmp_path / "1-2-abcd.session"
    path.write_text(json.dumps({"expires": time.time() + 60, "config": {}}))
    started = []

    def start(config: object) -> dict[str, object]:
        started.append(config)
        return {}

    monkeypatch.setattr(lifecycle, "start", start)
    real_unlink = os.unlink

    def viewer_withdraws_first(name: str, *args: object, **kwargs: object) -> None:
        real_unlink(name)  # the viewer's withdraw
        real_unlink(name)  # the bootstrap's claim: gone

    monkeypatch.setattr(bootstrap.os, "unlink", viewer_withdraws_first)
    bootstrap.boot(str(path))
    assert started == [] and not (tmp_path / "1-2-abcd.session.result").exists()
    # Claimed first, the session is carried out, and the viewer's withdraw says so.
    monkeypatch.setattr(bootstrap.os, "unlink", real_unlink)
    path.write_text(json.dumps({"expires": time.time() + 60, "config": {}}))
    bootstrap.boot(str(path))
    assert started == [{}]
    run_dir = private_dir(tmp_path / "run")
    (tmp_path / "run" / "3-4-abcd.session").write_text("{}")
    session = Session(run_dir, "3-4-abcd.session", "t" * 64, str(tmp_path))
    real_unlink(tmp_path / "run" / "3-4-abcd.session")  # claimed by a bootstrap
    assert session.withdraw() is False
