"""The real TUI against real agents: in process with Textual's pilot, and the installed
`memtop` command in a real terminal (tmux), as a person would use it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import (
    ROOT,
    TARGETS,
    Targets,
    marked_lines,
    need_interpreter,
    wait_for,
    wait_state,
)
from terminal import Terminal
from ui_fakes import screen_as

from memtop.model import Query
from memtop.snapfile import load
from memtop.source import LiveSource
from memtop.ui.app import MemtopApp, Outcome
from memtop.ui.origins_panel import OriginsPanel
from memtop.ui.referrers_panel import ReferrersPanel
from memtop.ui.traceback_panel import TracebackPanel
from memtop.ui.types_screen import TypesScreen

KNOWN = TARGETS / "known_lines.py"
LEAKY = TARGETS / "leaky.py"

pytestmark = pytest.mark.e2e


async def wait_until(pilot, predicate, what: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """Let the app run until `predicate()` holds (a handshake on what the app shows);
    returns what it returned."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)
    return value


async def test_tui_on_a_real_agent(targets: Targets) -> None:
    program, state_path = targets.start("known_lines.py")
    state = wait_state(state_path)
    lines = marked_lines(KNOWN)
    wanted = f"{state['file']}:{lines['buffers']}"
    source = LiveSource(targets.connect(program), program.pid, "run", program)
    app = MemtopApp(source, Query(), interval=0.3, cwd=str(ROOT))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: wanted in app.table.keys, "the known row")
        row = next(r for r in app.sample.rows if r.key == wanted)  # type: ignore[union-attr]
        assert [row.size, row.count] == state["expected"][wanted]
        await pilot.press("f")
        await wait_until(pilot, lambda: state["file"] in app.table.keys, "the file row")
        await pilot.press("l")
        await wait_until(pilot, lambda: wanted in app.table.keys, "line rows again")
        await pilot.press(*["down"] * app.table.keys.index(wanted), "enter")
        await wait_until(
            pilot,
            lambda: isinstance(app.screen, TracebackPanel) and app.screen.entries is not None,
            "the tracebacks",
        )
        body = str(app.screen.query_one("#traceback-body").render())
        assert f"known_lines.py:{lines['keep_buffers']}" in body
        assert "bytearray(1000) for _ in range(n)" in body
        assert f"known_lines.py:{lines['nested_call']}" in body  # through nested()
        await pilot.press("escape", "q")
    assert app.return_value == Outcome(keep_agent=False)
    source.close()
    wait_for(lambda: not psutil.pid_exists(program.pid), 10, "the program to be stopped")


async def test_leak_hunting_on_a_real_agent(
    targets: Targets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """leaky.py (on 3.13: 3.11 cannot say where plain class instances were allocated): the
    types view shows __main__.Widget growing, its origins point at the leaking line, the
    chain starts at the module's global, and S saves a snapshot that loads."""
    program, state_path = targets.start("leaky.py", "all", python=need_interpreter("3.13"))
    wait_state(state_path, lambda s: s["counter"] >= 3)
    leak_line = marked_lines(LEAKY)["list_leak"]
    monkeypatch.chdir(tmp_path)  # where S saves
    source = LiveSource(targets.connect(program), program.pid, "run", program)
    app = MemtopApp(source, Query(), interval=0.5, cwd=str(ROOT))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.sample is not None, "the first table")
        await pilot.press("o")
        screen = app.screen
        assert isinstance(screen, TypesScreen)
        await wait_until(pilot, lambda: screen.table is not None, "the first walk")
        await pilot.pause(0.5)  # five turns of leaking
        await pilot.press("u")
        await wait_until(pilot, lambda: screen.table and screen.table.since, "the second walk")
        assert screen.table is not None
        widget = next(row for row in screen.table.rows if row.name == "__main__.Widget")
        assert widget.count_diff >= 30 and widget.size_diff > 0
        screen.rows.move_cursor(row=screen.rows.names.index("__main__.Widget"))
        await pilot.press("enter")
        await wait_until(
            pilot,
            lambda: isinstance(app.screen, OriginsPanel) and app.screen.origins is not None,
            "the origins",
        )
        body = screen_as(app, OriginsPanel).body_text
        assert f"→ tests/targets/leaky.py:{leak_line}" in body
        assert "LEAKED.append(Widget(n, bytes(256)))" in body
        await pilot.press("escape", "w")
        await wait_until(
            pilot,
            lambda: isinstance(app.screen, ReferrersPanel) and app.screen.chain is not None,
            "the referrer chain",
        )
        lines = screen_as(app, ReferrersPanel).body_text.splitlines()
        assert lines[0] == "  module __main__  global LEAKED"
        assert lines[1].startswith("→ list  [") and "__main__.Widget   ← this object" in lines[2]
        await pilot.press("escape", "escape", "S")
        saved = await wait_until(pilot, lambda: list(tmp_path.glob("*.memtop")), "the file")
        snapshot = load(str(saved[0]))
        assert snapshot.meta["pid"] == program.pid
        assert any(tb[0] == (str(LEAKY), leak_line) for tb, _, _ in snapshot.entries)
        await pilot.press("q")
    source.close()


# --- a real terminal -------------------------------------------------------------------


def installed_memtop() -> str:
    path = Path(sys.executable).parent / "memtop"
    if not path.exists():
        pytest.skip("the memtop command is not installed (pip install -e .)")
    return str(path)


def test_installed_memtop_demo_renders_and_quits(short_tmp: Path) -> None:
    log = short_tmp / "demo.log"
    done = short_tmp / "exit"
    terminal = Terminal(
        f"{installed_memtop()} demo --log {log}; echo $? > {done}",
        {"TERM": "xterm-256color"},
    )
    try:
        screen = terminal.wait_for("LOCATION")
        assert "RSS" in screen and "traced" in screen and "untraced" in screen
        terminal.wait_for("demo.py:")
        terminal.keys("q")
        wait_for(lambda: done.exists() and done.read_text().strip(), 20, "memtop to exit")
        assert done.read_text().strip() == "0"
        screen = terminal.wait_for("stopped the program")
        assert f"output in {log}" in screen.replace("\n", "")
    finally:
        terminal.close()
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if str(log) in " ".join(p.info["cmdline"] or [])
    ]


def test_run_in_tmux_without_colour(short_tmp: Path) -> None:
    """`memtop run` of a known program under TERM=screen and NO_COLOR: the known row, the
    file grouping, the traceback panel, and a clean quit."""
    state_path = short_tmp / "known.json"
    done = short_tmp / "exit"
    terminal = Terminal(
        f"{sys.executable} -m memtop run --log {short_tmp / 'run.log'} {KNOWN} {state_path}; "
        f"echo $? > {done}",
        {"TERM": "screen", "NO_COLOR": "1"},
    )
    try:
        state = wait_state(state_path)
        buffers = marked_lines(KNOWN)["buffers"]
        terminal.wait_for(f"known_lines.py:{buffers}")
        terminal.keys("f")
        terminal.wait_for("FILE")
        terminal.keys("l")
        terminal.wait_for("LOCATION")
        terminal.keys("Enter")
        terminal.wait_for("Tracebacks of")
        terminal.keys("Escape")
        terminal.wait_for("LOCATION")
        terminal.keys("q")
        wait_for(lambda: done.exists() and done.read_text().strip(), 20, "memtop to exit")
        assert done.read_text().strip() == "0"
    finally:
        terminal.close()
    wait_for(lambda: not psutil.pid_exists(state["pid"]), 10, "the program to be stopped")
    assert os.environ.get("NO_COLOR") is None  # the test's own environment is untouched
