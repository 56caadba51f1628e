"""Attaching through gdb while signals rain on the target: does it survive, and how long
does an attach take?

For each CPython found here (the gdb routes, forced with --method on 3.14+), a target
with Python signal handlers (tests/targets/signalled.py) is attached to ATTACHES times,
alternating the pending-call and parked-thread routes, under each rain:
  quiet    no signals (the attach time without signals)
  usr1     SIGUSR1 every 50 ms
  stop     SIGSTOP, 20 ms later SIGCONT, 80 ms later again
A row stops at the first attach the target does not survive. Shown per cell: attaches the
target survived / attaches made, attaches that succeeded, the median attach time (start to
first table) of those that succeeded, and the program's own SIGUSR1 count at the end.

    python benchmarks/attach_signals.py [--attaches 20] [--versions 3.11,3.12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import interpreters  # noqa: E402

from memtop.attach.chain import attach  # noqa: E402
from memtop.errors import MemtopError  # noqa: E402

TARGET = ROOT / "tests" / "targets" / "signalled.py"
RAINS = {
    "quiet": [],
    "usr1": [(signal.SIGUSR1, 0.05)],
    "stop": [(signal.SIGSTOP, 0.02), (signal.SIGCONT, 0.08)],
}
ROUTES = ["gdb", "gdb-parked"]


def read(state: Path) -> dict:
    while True:
        try:
            return json.loads(state.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.02)


def wait_until(check, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def sender(pid: int, pattern: list[tuple[int, float]], done: threading.Event) -> None:
    while pattern and not done.is_set():
        for signum, pause in pattern:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                return
            done.wait(pause)


def cell(python: str, rain: str, attaches: int, workdir: Path) -> str:
    state = workdir / f"state-{time.monotonic_ns()}.json"
    proc = subprocess.Popen(
        [python, str(TARGET), str(state), "parked"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    wait_until(lambda: state.exists() and read(state)["counter"] >= 3)
    threads = read(state)["threads"]
    done = threading.Event()
    rain_thread = threading.Thread(target=sender, args=(proc.pid, RAINS[rain], done))
    rain_thread.start()
    survived, ok, times, counter = 0, 0, [], 0
    try:
        for number in range(attaches):
            started = time.monotonic()
            try:
                attached = attach(proc.pid, method=ROUTES[number % 2], timeout=10)
                try:
                    attached.client.request("top", max_age=0.0, limit=5)
                    times.append(time.monotonic() - started)
                    ok += 1
                    attached.client.request("detach")
                finally:
                    attached.client.close()
            except MemtopError:
                pass
            time.sleep(0.2)
            if proc.poll() is not None:
                break
            survived += 1
            wait_until(lambda: not read(state)["tracing"] and read(state)["threads"] == threads)
            counter = read(state)["counter"]
            wait_until(lambda c=counter: read(state)["counter"] > c)
    finally:
        done.set()
        rain_thread.join()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            wait_until(lambda: read(state)["counter"] > counter + 1, 5)
        usr1 = read(state)["signals"]["SIGUSR1"]
        died = "" if proc.poll() is None else f" DIED ({proc.returncode})"
        proc.kill()
        proc.wait()
    median = f"{statistics.median(times):.2f} s" if times else "-"
    return f"{survived}/{number + 1} alive, {ok} ok, {median}, usr1 {usr1}{died}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attaches", type=int, default=20)
    parser.add_argument("--versions", help="comma-separated, e.g. 3.11,3.12 (default: all)")
    parser.add_argument("--rains", default=",".join(RAINS), help="comma-separated rains")
    args = parser.parse_args()
    found = interpreters()
    versions = (args.versions or "3.9,3.10,3.11,3.12,3.13,3.14").split(",")
    rains = args.rains.split(",")
    gdb = subprocess.run(["gdb", "--version"], capture_output=True, text=True).stdout
    load = os.getloadavg()[0]
    print("memtop attach under signals")
    print(f"machine  {platform.machine()}, {os.cpu_count()} cores, load {load:.1f}")
    print(f"gdb      {gdb.splitlines()[0] if gdb else 'not installed'}")
    print(f"attaches {args.attaches} per cell, routes alternating {' / '.join(ROUTES)}\n")
    bad = False
    with tempfile.TemporaryDirectory(prefix="mt-sig-") as tmp:
        for minor in versions:
            if minor not in found:
                continue
            for rain in rains:
                text = cell(found[minor], rain, args.attaches, Path(tmp))
                bad = bad or "DIED" in text
                print(f"{minor:5} {rain:6} {text}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
