"""Regenerate screenshots/*.svg from a real `memtop demo` session.

Starts the bundled demo program under the agent (as `memtop demo` does), runs the real
viewer headless against it for a while so the charts, trends and verdict fill in, then
saves: the main screen at 120x40, the traceback panel of the top row, the types view
(after two walks: Δ since the first) with the demo's leaking Session type selected, what
keeps a Session alive, and the main screen at 80x24.

    python screenshots/generate.py [--seconds 30] [--python PATH]

Run the demo on CPython 3.12+ (`--python`) for allocation tracebacks of class instances.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from memtop.attach.runner import start_program
from memtop.cli import DEMO_PROGRAM
from memtop.client import AgentClient
from memtop.model import Query
from memtop.source import LiveSource
from memtop.ui.app import MemtopApp
from memtop.ui.referrers_panel import ReferrersPanel
from memtop.ui.traceback_panel import TracebackPanel
from memtop.ui.types_screen import TypesScreen

HERE = Path(__file__).resolve().parent
LEAKING_TYPE = "__main__.Session"  # the demo runs as a script: its classes are __main__'s
SHOTS = ("main.svg", "tracebacks.svg", "types.svg", "referrers.svg", "narrow.svg")


async def until(pilot, predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    """Let the app run until `predicate()` holds (the agent answers in a worker)."""
    for _ in range(200):
        if predicate():
            return
        await pilot.pause(0.05)
    raise SystemExit(f"timed out waiting for {what}")


async def capture(source: LiveSource, seconds: float) -> None:
    app = MemtopApp(source, Query(), interval=1.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await asyncio.sleep(seconds)  # a real session: let the demo leak for a while
        await pilot.pause()
        app.save_screenshot("main.svg", str(HERE))
        await pilot.press("enter")
        await until(
            pilot,
            lambda: isinstance(app.screen, TracebackPanel) and app.screen.entries is not None,
            "the tracebacks",
        )
        app.save_screenshot("tracebacks.svg", str(HERE))
        await pilot.press("escape", "o")
        types = app.screen
        assert isinstance(types, TypesScreen)
        await until(pilot, lambda: types.table is not None, "the first walk")
        await asyncio.sleep(5.0)  # the demo logs in 20 users a second
        await pilot.press("u")
        await until(pilot, lambda: types.table is not None and types.table.since, "a second walk")
        types.rows.move_cursor(row=types.rows.names.index(LEAKING_TYPE))
        await pilot.pause()
        app.save_screenshot("types.svg", str(HERE))
        await pilot.press("w")
        await until(
            pilot,
            lambda: isinstance(app.screen, ReferrersPanel) and app.screen.chain is not None,
            "the referrer chain",
        )
        app.save_screenshot("referrers.svg", str(HERE))
        await pilot.press("escape", "escape")
        await pilot.resize_terminal(80, 24)
        await asyncio.sleep(2.5)
        await pilot.pause()
        app.save_screenshot("narrow.svg", str(HERE))
        await pilot.press("q")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to watch first")
    parser.add_argument("--python", help="the demo's interpreter (default: this one)")
    options = parser.parse_args()
    os.chdir(HERE.parent)  # paths in the screenshots relative to the repository
    log = os.path.join(tempfile.gettempdir(), f"memtop-screenshots-{os.getpid()}.log")
    program = start_program(DEMO_PROGRAM, [], python=options.python, log_path=log)
    client = AgentClient.connect(program.socket_path, program.token, expected_pid=program.pid)
    source = LiveSource(client, program.pid, "run", program)
    try:
        asyncio.run(capture(source, options.seconds))
    finally:
        status = source.close()
        os.unlink(log)
    for name in SHOTS:
        print(f"wrote {HERE / name}")
    print(f"demo program {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
