"""Regenerate screenshots/*.svg from a real `memtop demo` session.

Starts the bundled demo program under the agent (as `memtop demo` does), runs the real
viewer headless against it for a while so the charts, trends and verdict fill in, then
saves: the main screen at 120x40, the traceback panel of the top row, and the main screen
at 80x24.

    python screenshots/generate.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from memtop.cli import DEMO_PROGRAM
from memtop.client import AgentClient
from memtop.model import Query
from memtop.runner import start_program
from memtop.source import LiveSource
from memtop.ui.app import MemtopApp
from memtop.ui.traceback_panel import TracebackPanel

HERE = Path(__file__).resolve().parent


async def capture(source: LiveSource, seconds: float) -> None:
    app = MemtopApp(source, Query(), interval=1.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await asyncio.sleep(seconds)  # a real session: let the demo leak for a while
        await pilot.pause()
        app.save_screenshot("main.svg", str(HERE))
        await pilot.press("enter")
        for _ in range(100):  # the panel asks the agent for the tracebacks
            await pilot.pause(0.05)
            panel = app.screen
            if isinstance(panel, TracebackPanel) and panel.entries is not None:
                break
        app.save_screenshot("tracebacks.svg", str(HERE))
        await pilot.press("escape")
        await pilot.resize_terminal(80, 24)
        await asyncio.sleep(2.5)
        await pilot.pause()
        app.save_screenshot("narrow.svg", str(HERE))
        await pilot.press("q")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to watch first")
    options = parser.parse_args()
    os.chdir(HERE.parent)  # paths in the screenshots relative to the repository
    log = os.path.join(tempfile.gettempdir(), f"memtop-screenshots-{os.getpid()}.log")
    program = start_program(DEMO_PROGRAM, [], log_path=log)
    client = AgentClient.connect(program.socket_path, program.token, expected_pid=program.pid)
    source = LiveSource(client, program.pid, "run", program)
    try:
        asyncio.run(capture(source, options.seconds))
    finally:
        status = source.close()
        os.unlink(log)
    for name in ("main.svg", "tracebacks.svg", "narrow.svg"):
        print(f"wrote {HERE / name}")
    print(f"demo program {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
