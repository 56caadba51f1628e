"""The attach matrix: every CPython found here × every attach method, on real targets.

Each cell starts a target that was not started by memtop (tests/targets/attachable.py),
attaches, reads a first table, detaches, and reports whether that worked and the time from
the start of the attach to the first table (median of the runs). The last column is the
default route against a target whose main thread is blocked in time.sleep(), which must
fall back to a parked thread.

    python benchmarks/attach_matrix.py [--runs 3] [--versions 3.11,3.14]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import interpreters  # noqa: E402

from memtop.attach.chain import attach  # noqa: E402
from memtop.errors import MemtopError  # noqa: E402

TARGET = ROOT / "tests" / "targets" / "attachable.py"
COLUMNS = [
    ("remote-exec", "sleeping"),
    ("gdb", "sleeping"),
    ("gdb-parked", "sleeping"),
    ("auto", "blocked_sleep"),
]


def start_target(python: str, kind: str, workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    state = workdir / f"state-{time.monotonic_ns()}.json"
    proc = subprocess.Popen(
        [python, str(TARGET), str(state), kind],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            if json.loads(state.read_text()).get("counter", 0) >= 5:
                return proc, state
        except (FileNotFoundError, ValueError):
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{python} {kind}: target never became ready")
        time.sleep(0.02)


def one_run(pid: int, method: str) -> tuple[float, str]:
    """Seconds from the start of the attach to the first table, and the route used."""
    started = time.monotonic()
    attached = attach(pid, method=method, timeout=2.0 if method == "auto" else 5.0)
    try:
        attached.client.request("top", max_age=0.0, limit=10)
        elapsed = time.monotonic() - started
        attached.client.request("detach")
    finally:
        attached.client.close()
    time.sleep(0.3)  # let the agent finish stopping before the next attach
    return elapsed, attached.how


def cell(python: str, minor: str, method: str, kind: str, runs: int, workdir: Path) -> str:
    if method == "remote-exec" and tuple(map(int, minor.split("."))) < (3, 14):
        return "n/a (3.14+)"
    if method != "remote-exec" and shutil.which("gdb") is None:
        return "no gdb"
    proc, _ = start_target(python, kind, workdir)
    try:
        times, routes = [], set()
        for _ in range(runs):
            elapsed, how = one_run(proc.pid, method)
            times.append(elapsed)
            routes.add(how)
        alive = proc.poll() is None
    except MemtopError as exc:
        return "FAILS: " + exc.message[:60]
    finally:
        proc.kill()
        proc.wait()
    via = f" via {'/'.join(sorted(routes))}" if method == "auto" else ""
    return f"ok {statistics.median(times):.2f} s{via}" + ("" if alive else " (target died!)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="attaches per cell (median shown)")
    parser.add_argument("--versions", help="comma-separated, e.g. 3.11,3.14 (default: all)")
    args = parser.parse_args()
    found = interpreters()
    versions = (
        args.versions.split(",")
        if args.versions
        else sorted(found, key=lambda v: tuple(map(int, v.split("."))))
    )
    gdb = subprocess.run(["gdb", "--version"], capture_output=True, text=True).stdout
    print("memtop attach matrix")
    print(f"machine  {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}")
    print(f"gdb      {gdb.splitlines()[0] if gdb else 'not installed'}")
    print(f"runs     {args.runs} per cell; time = attach start to first table (median)\n")
    headers = ["CPython", *(f"{m} ({k})" if k != "sleeping" else m for m, k in COLUMNS)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mt-matrix-") as tmp:
        for minor in versions:
            python = found.get(minor)
            if python is None:
                rows.append([minor, *["not installed"] * len(COLUMNS)])
                continue
            rows.append(
                [minor, *(cell(python, minor, m, k, args.runs, Path(tmp)) for m, k in COLUMNS)]
            )
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)))
    return 1 if any("FAILS" in c or "died" in c for r in rows for c in r) else 0


if __name__ == "__main__":
    sys.exit(main())
