"""The viewer's own CPU: `memtop demo` in a real pseudo-terminal, 1 refresh per second,
50 rows, measured from outside with psutil over at least 60 s per configuration.

Runs the CLI (`python -m memtop demo`), exactly as a person would, at 80x24 and 120x40
(the TUI, quit with `q`: exit code 0) and with `--batch` (the text view, for comparison,
stopped with SIGINT: 130). Goal: the TUI uses at most 2 % of one core. Prints a table;
takes about 4 minutes with the defaults.

    python benchmarks/bench_viewer.py [--seconds 60] [--warmup 10]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
GOAL = 2.0  # percent of one core


@dataclass
class Result:
    name: str
    seconds: float
    cpu_percent: float
    screen_bytes_per_s: float
    rss_mib: float
    exit_code: int


class Terminal:
    """A pseudo-terminal of a given size, its output drained by a thread (a terminal
    that is never read would block the app)."""

    def __init__(self, columns: int, lines: int) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.received = 0
        self.tail = b""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self.received += len(chunk)
                self.tail = (self.tail + chunk)[-200_000:]

    def wait_for(self, text: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if text in self.tail:
                    return
            time.sleep(0.05)
        raise SystemExit(f"the screen never showed {text!r}")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        os.close(self.master)


def _default_sigint() -> None:
    # A benchmark started in the background inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: the text view could not be stopped.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def run_one(
    name: str,
    args: list[str],
    size: tuple[int, int] | None,
    seconds: float,
    warmup: float,
    log: Path,
) -> Result:
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "", "LINES": ""}
    env.pop("COLUMNS")
    env.pop("LINES")
    command = [
        sys.executable,
        "-m",
        "memtop",
        "demo",
        "-i",
        "1",
        "-l",
        "50",
        "--log",
        str(log),
        *args,
    ]
    terminal = None
    if size is not None:
        terminal = Terminal(*size)
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=terminal.slave,
            stdout=terminal.slave,
            stderr=terminal.slave,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
        os.close(terminal.slave)
        terminal.wait_for(b"LOCATION", 60)
    else:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_default_sigint,
        )
    viewer = psutil.Process(proc.pid)
    time.sleep(warmup)  # the first tables, history filling, caches warm
    cpu0, wall0 = cpu_seconds(viewer), time.monotonic()
    bytes0 = terminal.received if terminal else 0
    rss = 0
    while time.monotonic() - wall0 < seconds:
        time.sleep(1.0)
        rss = max(rss, viewer.memory_info().rss)
    cpu1, wall1 = cpu_seconds(viewer), time.monotonic()
    sent = (terminal.received - bytes0) if terminal else 0
    if terminal is not None:
        terminal.type(b"q")
    else:
        proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if terminal is not None:
        terminal.close()
    elapsed = wall1 - wall0
    return Result(name, elapsed, 100.0 * (cpu1 - cpu0) / elapsed, sent / elapsed, rss / 2**20, code)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=10.0)
    options = parser.parse_args()
    log = Path("/tmp") / f"memtop-bench-viewer-{os.getpid()}.log"
    runs = [
        ("TUI 80x24", [], (80, 24)),
        ("TUI 120x40", [], (120, 40)),
        ("--batch (text view)", ["--batch"], None),
    ]
    started = time.monotonic()
    print("memtop viewer CPU benchmark")
    print(f"date     {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"cpu      {_cpu_name()}, {os.cpu_count()} cores")
    print(f"python   {platform.python_implementation()} {platform.python_version()}")
    print(
        f"settings memtop demo -i 1 -l 50; {options.warmup:.0f} s warm-up, "
        f"{options.seconds:.0f} s measured per run; goal: TUI <= {GOAL:.0f} % of one core"
    )
    print()
    results = [
        run_one(name, args, size, options.seconds, options.warmup, log) for name, args, size in runs
    ]
    print(
        f"{'viewer':<22} {'measured s':>10} {'CPU % of a core':>16} {'screen B/s':>11} "
        f"{'RSS MiB':>8} {'exit code':>9}"
    )
    print(f"{'-' * 22} {'-' * 10} {'-' * 16} {'-' * 11} {'-' * 8} {'-' * 9}")
    for r in results:
        print(
            f"{r.name:<22} {r.seconds:>10.1f} {r.cpu_percent:>16.2f} "
            f"{r.screen_bytes_per_s:>11.0f} {r.rss_mib:>8.1f} {r.exit_code:>9}"
        )
    worst = max(r.cpu_percent for r in results if r.name.startswith("TUI"))
    print()
    print(
        f"worst TUI: {worst:.2f} % of one core ({'meets' if worst <= GOAL else 'MISSES'} "
        f"the {GOAL:.0f} % goal); total {time.monotonic() - started:.0f} s"
    )
    try:
        log.unlink()
    except OSError:
        pass
    return 0 if worst <= GOAL else 1


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
