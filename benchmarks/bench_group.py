"""What watching a worker pool costs the viewer: memtop's own CPU per second of wall time
while it watches a multiprocessing pool of N workers at 1 Hz (`memtop PID --children
--json`), after every process is attached (attaching is a one-off cost, not counted).
Goal: at most 2 % of one core for 8 workers.

    python benchmarks/bench_group.py [--workers 2 4 8] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT / "tests" / "targets" / "pool.py"


def measure(workers: int, seconds: float) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="mtb-", dir="/tmp"))
    state = work / "pool.json"
    pool = subprocess.Popen([sys.executable, str(POOL), str(state), str(workers)], cwd=POOL.parent)
    try:
        while (
            not state.exists()
            or len(json.loads(state.read_text() or "{}").get("workers", [])) < workers
        ):
            time.sleep(0.1)
        viewer = subprocess.Popen(
            [sys.executable, "-m", "memtop", str(pool.pid), "--children", "--json", "-i", "1"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        lines: list[dict] = []

        def read() -> None:
            assert viewer.stdout is not None
            for line in viewer.stdout:
                lines.append(json.loads(line))

        threading.Thread(target=read, daemon=True).start()
        while not lines or len(lines[-1].get("processes", [])) < workers + 1:
            if viewer.poll() is not None:
                raise RuntimeError("memtop ended before every process was attached")
            time.sleep(0.1)
        proc = psutil.Process(viewer.pid)
        before, started, shown = proc.cpu_times(), time.monotonic(), len(lines)
        time.sleep(seconds)
        after, wall = proc.cpu_times(), time.monotonic() - started
        refreshes = len(lines) - shown
        viewer.terminate()
        viewer.wait(timeout=30)
        cpu = (after.user - before.user) + (after.system - before.system)
        return {
            "cpu_share": cpu / wall,
            "refreshes": refreshes,
            "ms_per_refresh": 1000 * cpu / max(1, refreshes),
        }
    finally:
        pool.kill()
        pool.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(
        f"viewer CPU while watching a pool at 1 Hz, {args.seconds:.0f} s each "
        f"(CPython {sys.version.split()[0]})"
    )
    print()
    print(
        f"{'workers':>7}  {'processes':>9}  {'refreshes':>9}  {'CPU of one core':>15}  "
        f"{'CPU ms/refresh':>14}"
    )
    for workers in args.workers:
        result = measure(workers, args.seconds)
        print(
            f"{workers:>7}  {workers + 1:>9}  {result['refreshes']:>9.0f}  "
            f"{result['cpu_share']:>14.1%}  {result['ms_per_refresh']:>14.1f}"
        )


if __name__ == "__main__":
    main()
