"""What watching costs a leaking program in memory: its RSS after the same loop with
tracemalloc alone, with a naive reader of the whole trace table at 1 Hz, and with memtop's
agent serving a viewer at 1 Hz (a `top` request every second, as the TUI makes).

The ratios that matter: memtop's RSS growth over tracemalloc's alone (goal: close to 1),
and what stays after the viewer detached. Prints a table; about a minute per interpreter.

    python benchmarks/bench_footprint.py [--iterations 2000000] [--python PATH ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memtop.attach.runner import start_program  # noqa: E402
from memtop.client import AgentClient  # noqa: E402

TARGET = str(ROOT / "benchmarks" / "footprint_target.py")
MIB = 1024 * 1024


def read_state(path: Path, key: str, timeout: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = json.loads(path.read_text())
            if key in data:
                return data
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"no {key} in {path} within {timeout} s")


def baseline_rss(python: str) -> int:
    """RSS of the interpreter doing nothing (the same for every run)."""
    code = (
        "import os;"
        "print(int(open('/proc/self/statm').read().split()[1])*os.sysconf('SC_PAGE_SIZE'))"
    )
    return int(subprocess.check_output([python, "-c", code]))


def run_plain(python: str, iterations: int, mode: str, work: Path) -> dict:
    state = work / f"{mode}.json"
    proc = subprocess.Popen([python, TARGET, str(state), str(iterations), mode])
    try:
        (work / f"{mode}.json.go").touch()
        result = read_state(state, "rss")
        (work / f"{mode}.json.after").touch()
        result.update(read_state(state, "rss_after"))
        return result
    finally:
        proc.kill()
        proc.wait()


def run_agent(python: str, iterations: int, work: Path, mode: str = "agent") -> dict:
    state = work / f"{mode}.json"
    program = start_program(
        TARGET, [str(state), str(iterations), mode], python=python, log_path=str(work / "a.log")
    )
    client = AgentClient.connect(program.socket_path, program.token, expected_pid=program.pid)
    stop = threading.Event()
    refreshes = []

    def poll() -> None:
        while not stop.is_set():
            reply = client.request("top", max_age=0.9, limit=50)
            refreshes.append(reply["sample"]["pause_ms"])
            stop.wait(1.0)

    poller = threading.Thread(target=poll, daemon=True)
    try:
        poller.start()
        state.with_name(state.name + ".go").touch()
        result = read_state(state, "rss")
        stop.set()
        poller.join()
        client.request("detach")
        client.close()
        state.with_name(state.name + ".after").touch()
        result.update(read_state(state, "rss_after"))
        result["refreshes"] = len(refreshes)
        return result
    finally:
        program.stop()


def mib(value: float) -> str:
    return f"{value / MIB:8.1f}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2_000_000)
    parser.add_argument("--python", action="append", default=[])
    args = parser.parse_args(argv)
    pythons = args.python or [sys.executable]
    print(f"leaking loop of {args.iterations:,} iterations (one object in ten kept)\n")
    print("python   run                   RSS MiB  growth MiB  vs alone  after detach MiB")
    for python in pythons:
        version = subprocess.check_output(
            [python, "-c", "import sys;print('%d.%d' % sys.version_info[:2])"], text=True
        ).strip()
        base = baseline_rss(python)
        with tempfile.TemporaryDirectory(prefix="mt-fp-") as tmp:
            work = Path(tmp)
            os.chmod(work, 0o755)
            runs = {
                "tracemalloc alone": run_plain(python, args.iterations, "alone", work),
                "naive 1 Hz reader": run_plain(python, args.iterations, "reader", work),
                "memtop agent 1 Hz": run_agent(python, args.iterations, work),
                "memtop, ctypes loaded": run_agent(python, args.iterations, work, "agent+ctypes"),
            }
        alone = runs["tracemalloc alone"]["rss"] - base
        for name, result in runs.items():
            growth = result["rss"] - base
            print(
                f"{version:<8} {name:<20} {mib(result['rss'])}    {mib(growth)}"
                f"    {growth / alone:5.2f}x          {mib(result['rss_after'])}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
