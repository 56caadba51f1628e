"""memtop's exit status says how the watched program ended (DESIGN.md §7): its own exit
code, 128 + N for signal N, 3 when it ended before the first refresh or its code cannot
be known; and memtop says so in words. Real programs, ended for real, under `run` and
attached, in the text, JSON and live views."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TARGETS, Plain, need_gdb, wait_for, wait_state
from terminal import Terminal

pytestmark = pytest.mark.e2e

ENDER = TARGETS / "ender.py"
ENDINGS = [
    ("exit0", "exited with code 0", 0),
    ("exit7", "exited with code 7", 7),
    ("sigkill", "killed by SIGKILL", 137),
    ("sigsegv", "killed by SIGSEGV", 139),
]


def _watch(args: list[str], go: Path) -> subprocess.CompletedProcess[str]:
    """Run memtop until it exits by itself; the program ends once memtop has shown its
    first refresh."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "memtop", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    go.touch()
    out, err = proc.communicate(timeout=60)
    assert first, err
    return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err)


@pytest.mark.parametrize(("how", "words", "code"), ENDINGS)
@pytest.mark.parametrize("view", ["-b", "--json"])
def test_run_exits_with_the_programs_status(
    short_tmp: Path, how: str, words: str, code: int, view: str
) -> None:
    state, go = short_tmp / "ender.json", short_tmp / "go"
    result = _watch(
        ["run", view, "-i", "0.2", "--log", str(short_tmp / "l.log"), str(ENDER), str(state),
         how, str(go)],
        go,
    )  # fmt: skip
    assert result.returncode == code, result.stderr
    pid = wait_state(state)["pid"]
    assert f"memtop: target {pid} {words}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("how", "words", "code"), ENDINGS)
def test_attach_exits_with_the_programs_status(
    plain: Plain, how: str, words: str, code: int
) -> None:
    """memtop is not the program's parent: it reads the status of the program while it
    is a zombie (its parent, this test, has not reaped it yet)."""
    need_gdb()
    go = plain.tmp / "go"
    proc, state = plain.start(sys.executable, "ender.py", how, str(go))
    wait_state(state)
    result = _watch([str(proc.pid), "-b", "-i", "0.2"], go)
    assert result.returncode == code, result.stderr
    assert f"memtop: target {proc.pid} {words}" in result.stderr
    assert "Traceback" not in result.stderr


def test_attach_says_when_the_exit_code_cannot_be_known(plain: Plain) -> None:
    """A parent that reaps the program at once (a shell) takes its status with it."""
    need_gdb()
    go = plain.tmp / "go"
    plain.start(sys.executable, "ender.py", "exit7", str(go), prefix=["sh", "-c", '"$@"; :', "sh"])
    pid = wait_state(plain.tmp / "ender-0.json")["pid"]
    result = _watch([str(pid), "--json", "-i", "0.2"], go)
    assert result.returncode == 3, result.stderr
    assert f"memtop: target {pid} exited (its exit code is unknown" in result.stderr


# --- the live view, in a real terminal ------------------------------------------------


def _tui_exit_status(command: str, go: Path, done: Path) -> tuple[int, str]:
    """Run memtop's live view in tmux; end the program once the table shows, read what
    the screen says, quit with `q`; returns memtop's exit status and the screen after
    (the view's, then what memtop printed once it had gone)."""
    terminal = Terminal(f"{command}; echo $? > {done}", {"TERM": "xterm-256color"})
    try:
        terminal.wait_for("LOCATION", timeout=60)
        terminal.wait_for("ender.py")
        go.touch()
        screen = terminal.wait_for("■ target")
        terminal.keys("q")
        wait_for(lambda: done.exists() and done.read_text().strip(), 20, "memtop to exit")
        return int(done.read_text()), screen + terminal.screen()
    finally:
        terminal.close()


@pytest.mark.parametrize(("how", "words", "code"), ENDINGS)
def test_live_view_under_run_exits_with_the_programs_status(
    short_tmp: Path, how: str, words: str, code: int
) -> None:
    state, go, done = short_tmp / "ender.json", short_tmp / "go", short_tmp / "exit"
    command = (
        f"{sys.executable} -m memtop run -i 0.3 --log {short_tmp / 'l.log'} {ENDER} {state} "
        f"{how} {go}"
    )
    status, screen = _tui_exit_status(command, go, done)
    assert status == code
    assert f"■ target {words}" in screen
    pid = wait_state(state)["pid"]
    assert f"memtop: target {pid} {words}" in screen


def test_live_view_attached_exits_with_the_programs_status(plain: Plain) -> None:
    need_gdb()
    go, done = plain.tmp / "go", plain.tmp / "exit"
    proc, state = plain.start(sys.executable, "ender.py", "sigsegv", str(go))
    wait_state(state)
    status, screen = _tui_exit_status(f"{sys.executable} -m memtop {proc.pid} -i 0.3", go, done)
    assert status == 139
    assert "■ target killed by SIGSEGV" in screen
    assert f"memtop: target {proc.pid} killed by SIGSEGV" in screen
