"""How close sampled mode's estimates are after 10 s and 60 s of a running program, per rate.

    python benchmarks/bench_accuracy.py [--python PATH ...] [--rates 64K,256K,1M]
                                        [--seeds N] [--at 10,60] [--jobs N]

Runs benchmarks/accuracy_worker.py (twelve sites keeping 1 MB/s down to 3.6 KB/s, paced,
amid short-lived churn; tracemalloc(1) below the sampler as the exact reference) once per
interpreter, rate and seed, --jobs at a time. For the ten largest sites by exact size at
each checkpoint it prints the relative error |estimate − exact| / exact: its median and
maximum over the ten sites and the seeds, the error of the largest and of the tenth site
next to the √(R/B) prediction, and how often the exact size lay inside the row's 95 %
interval.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from memtop.modes import parse_rate

ROOT = Path(__file__).resolve().parent.parent
WORKER = str(ROOT / "benchmarks" / "accuracy_worker.py")


def default_pythons() -> list[str]:
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(str(p) for p in pyenv.glob("3.12.*/bin/python3"))[-1:]
    optimized = "/opt/memtop-python3.14/usr/bin/python3.14"
    return found + ([optimized] if Path(optimized).exists() else [])


def run(python: str, rate: int, seed: int, at: list[float]) -> dict:
    done = subprocess.run(
        [python, WORKER, str(ROOT), str(rate), str(seed), *map(str, at)],
        capture_output=True,
        text=True,
        timeout=max(at) * 5 + 120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{python} R={rate}: {done.stderr.strip()[-500:]}")
    result = json.loads(done.stdout)
    result["opt"] = python.startswith("/opt/")
    return result


def kib(rate: int) -> str:
    return f"{rate // 1024} KiB" if rate < 1 << 20 else f"{rate >> 20} MiB"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", dest="pythons")
    parser.add_argument("--rates", default="64K,256K,1M")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--at", default="10,60", help="checkpoints, seconds")
    parser.add_argument("--jobs", type=int, default=6)
    args = parser.parse_args(argv)
    rates = [parse_rate(r) for r in args.rates.split(",")]
    at = [float(a) for a in args.at.split(",")]
    pythons = args.pythons or default_pythons()
    jobs = [(p, r, s) for p in pythons for r in rates for s in range(1, args.seeds + 1)]
    began = time.monotonic()
    load_seen = [os.getloadavg()[0]]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: run(*job, at), jobs))
    load_seen.append(os.getloadavg()[0])
    print(
        f"machine: {os.cpu_count()} CPUs shared with other work, load average "
        f"{min(load_seen):.1f}-{max(load_seen):.1f}; {args.seeds} seeds per row, "
        f"{args.jobs} programs at a time ({time.monotonic() - began:.0f} s)\n"
    )
    print(
        "| CPython | R | after | top-10 sites, exact | median error | max error | "
        "largest site: error (√(R/B)) | 10th site: error (√(R/B)) | "
        "exact inside the 95 % interval |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for python in pythons:
        for rate in rates:
            mine = [
                r for (p, r_, _), r in zip(jobs, results, strict=True) if (p, r_) == (python, rate)
            ]
            name = mine[0]["python"] + (" (PGO/LTO)" if mine[0]["opt"] else "")
            for index, seconds in enumerate(at):
                points = [r["checkpoints"][index] for r in mine]
                errors, inside = [], 0
                first, tenth = [], []
                for point in points:
                    for rank, site in enumerate(point["sites"]):
                        err = abs(site["estimate"] - site["exact"]) / site["exact"]
                        errors.append(err)
                        inside += abs(site["estimate"] - site["exact"]) <= site["half_width"]
                        if rank == 0:
                            first.append(err)
                        if rank == len(point["sites"]) - 1:
                            tenth.append(err)
                sites = points[0]["sites"]
                big, small = sites[0]["exact"], sites[-1]["exact"]
                wall = max(p["wall"] for p in points)
                print(
                    f"| {name} | {kib(rate)} | {seconds:.0f} s (wall ≤ {wall:.0f} s) | "
                    f"{big / 1e6:.1f} MB … {small / 1e6:.2f} MB | "
                    f"{100 * statistics.median(errors):.0f} % | {100 * max(errors):.0f} % | "
                    f"{100 * statistics.median(first):.0f} % "
                    f"({100 * (rate / big) ** 0.5:.0f} %) | "
                    f"{100 * statistics.median(tenth):.0f} % "
                    f"({100 * (rate / small) ** 0.5:.0f} %) | "
                    f"{inside}/{len(errors)} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
