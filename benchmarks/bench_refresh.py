"""The pause one refresh costs the watched program, sampled vs exact, by live blocks.

    python benchmarks/bench_refresh.py [--python PATH ...] [--blocks 100000,1000000,10000000]
                                       [--repeats N] [--exact-max BLOCKS]

For each interpreter, mode and heap size, benchmarks/refresh_target.py is started the way
`memtop run` starts a program (the agent in it from the first line, budget 1 so that every
request may take a fresh table) and builds a heap of small tuples from 64 sites. Then a
viewer asks the agent for `top` (limit 50, a fresh table) --repeats times through the
real socket; the table shows the median pause the agent reports for the table it took
(`pause_ms`: the agent's thread time with the GIL held, the time the program stood
still) and the round trip seen by the viewer. Exact mode is tracemalloc at nframe 4 (as
`memtop run` defaults to); sampled mode is the byte sampler at 256 KiB. Exact mode above
--exact-max blocks is left out (say so in the table): its heap build alone takes minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from memtop.attach.runner import start_program
from memtop.client import AgentClient
from memtop.errors import MemtopError

BENCH_DIR = Path(__file__).resolve().parent
TARGET = str(BENCH_DIR / "refresh_target.py")
RATE = 256 * 1024


def default_pythons() -> list[str]:
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(str(p) for p in pyenv.glob("3.12.*/bin/python3"))[-1:]
    optimized = "/opt/memtop-python3.14/usr/bin/python3.14"
    return found + ([optimized] if Path(optimized).exists() else [])


def measure(python: str, mode: str, blocks: int, repeats: int, workdir: Path) -> dict:
    ready = workdir / f"ready-{time.monotonic_ns()}"
    config: dict = {"budget": 1.0, "idle_timeout": 3600}
    if mode == "sampled":
        config.update(mode="sampled", rate=RATE, strict=True)
    program = start_program(
        TARGET,
        [str(ready), str(blocks), str(workdir)],
        python=python,
        nframe=4,
        log_path=str(workdir / "target.log"),
        agent_config=config,
    )
    try:
        deadline = time.monotonic() + 900
        while not ready.exists():
            if program.exit_status() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"target did not build its heap; see {workdir}/target.log")
            time.sleep(0.2)
        live, built = ready.read_text().split()
        client = AgentClient.connect(program.socket_path, program.token, expected_pid=program.pid)
        pauses, trips = [], []
        seen = None
        try:
            while len(pauses) < repeats + 1:  # the first table also resolves lines: dropped
                asked = time.perf_counter()
                reply = client.request("top", group_by="lineno", limit=50, max_age=0.0)
                trip = time.perf_counter() - asked
                sample = reply["sample"]
                # A table taken for this request (sampled mode's replies say fresh: false
                # for the table its totals refresh took a moment before).
                if sample["id"] == seen or sample["age"] > trip + 0.05:
                    time.sleep(max(0.1, sample["next_in"]))  # never inside a timing
                    continue
                seen = sample["id"]
                pauses.append(sample["pause_ms"])
                trips.append(trip * 1e3)
                time.sleep(sample["next_in"])
        finally:
            client.close()
        return {
            "blocks": int(live),
            "build_s": float(built),
            "pause_ms": statistics.median(pauses[1:]),
            "first_ms": pauses[0],
            "trip_ms": statistics.median(trips[1:]),
        }
    finally:
        program.stop()


def label(python: str) -> str:
    import subprocess

    done = subprocess.run(
        [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip() + (" (PGO/LTO)" if python.startswith("/opt/") else "")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", dest="pythons")
    parser.add_argument("--blocks", default="100000,1000000,10000000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--exact-max", type=int, default=10_000_000)
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.blocks.split(",")]
    rows = []
    load_seen = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="mrf") as tmp:
        for python in args.pythons or default_pythons():
            name = label(python)
            for blocks in sizes:
                cells = {}
                for mode in ("sampled", "exact"):
                    if mode == "exact" and blocks > args.exact_max:
                        cells[mode] = None
                        continue
                    load_seen.append(os.getloadavg()[0])
                    try:
                        cells[mode] = measure(python, mode, blocks, args.repeats, Path(tmp))
                    except (MemtopError, RuntimeError) as exc:
                        print(f"{name} {mode} {blocks}: {exc}", file=sys.stderr)
                        cells[mode] = None
                    print(f"{name} {blocks} {mode}: {cells[mode]}", file=sys.stderr)
                rows.append((name, blocks, cells))
    print(
        f"machine: {os.cpu_count()} CPUs shared with other work, load average "
        f"{min(load_seen):.1f}-{max(load_seen):.1f}; median of {args.repeats} fresh tables "
        f"(after a first one that resolves lines) per cell ({time.monotonic() - began:.0f} s)\n"
    )
    print(
        "| CPython | live blocks | sampled (256 KiB): pause | round trip | exact (nframe 4): "
        "pause | round trip | exact ÷ sampled |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, blocks, cells in rows:
        s, e = cells["sampled"], cells["exact"]
        sampled = [f"{s['pause_ms']:.2f} ms", f"{s['trip_ms']:.2f} ms"] if s else ["—", "—"]
        if e:
            exact = [f"{e['pause_ms']:.0f} ms", f"{e['trip_ms']:.0f} ms"]
            ratio = f"{e['pause_ms'] / s['pause_ms']:.0f}×" if s else "—"
        else:
            exact, ratio = ["not run (--exact-max)", "—"], "—"
        shown = (e or s or {"blocks": blocks})["blocks"]
        print(f"| {name} | {shown:,} | " + " | ".join([*sampled, *exact, ratio]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
