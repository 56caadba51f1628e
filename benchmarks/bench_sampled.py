"""Sampled mode's costs and accuracy, side by side with tracemalloc, per interpreter.

Runs benchmarks/sampled_worker.py in each interpreter and prints three tables:
overhead on an allocation-saturated loop (median ratio to untraced over ROUNDS rounds,
[min-max], and each rate's cost above the bare hook's: the median of the per-round ratios
sampler ÷ bare hook, the sampler's own share), accuracy (RMS relative error of five sites
of 8 to 0.5 MB against tracemalloc's exact sizes over 5 seeds, next to the prediction
sqrt(R/B)), and the refresh
cost at BLOCKS live blocks (first read, which resolves lines, and the next one).

usage: python benchmarks/bench_sampled.py [--python PATH ...] [--rounds N]
       [--iterations N] [--blocks N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "benchmarks" / "sampled_worker.py"


def default_pythons() -> list[str]:
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(str(p) for p in pyenv.glob("3.1[0-3].*/bin/python3")) + sorted(
        str(p) for p in pyenv.glob("3.9.*/bin/python3")
    )
    found += [
        p
        for p in (
            "/opt/memtop-python3.14/usr/bin/python3.14",
            "/opt/memtop-python3.15/usr/bin/python3.15",
        )
        if Path(p).exists()
    ]
    return found


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return (
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"
        )

    return "\n".join(
        [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    )


def kib(rate: str) -> str:
    value = float(rate)
    return "bare hook" if value >= 1e14 else f"R={value // 1024:.0f}K"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", dest="pythons")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--iterations", type=int, default=40000)
    parser.add_argument("--blocks", type=int, default=300000)
    args = parser.parse_args(argv)
    results = []
    for python in args.pythons or default_pythons():
        done = subprocess.run(
            [
                python,
                str(WORKER),
                str(ROOT),
                str(args.rounds),
                str(args.iterations),
                str(args.blocks),
            ],
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if done.returncode != 0:
            print(f"{python}: failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        results.append(json.loads(done.stdout))
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
        " (shared: ratios are medians of back-to-back rounds)\n"
    )
    names = list(results[0]["overhead"]["ratios"]) if results else []
    rows = []
    for r in results:
        o = r["overhead"]
        over = o.get("over_hook", {})
        rows.append(
            [r["python"], "{:.0f}".format(o["untraced_ns"])]
            + ["{:.2f}x [{:.2f}-{:.2f}]".format(o["ratios"][n], *o["spread"][n]) for n in names]
            + [f"{100 * (over[n] - 1):+.1f}%" for n in over]
        )
    over_names = list(results[0]["overhead"].get("over_hook", {})) if results else []
    print("Overhead, allocation-saturated loop at depth 20 (ratio to untraced)")
    print(
        table(
            ["Python", "untraced ns/iter"]
            + [kib(n) if n[0].isdigit() else n for n in names]
            + [(kib(n) if n[0].isdigit() else n) + " vs bare hook" for n in over_names],
            rows,
        )
    )
    print("\nAccuracy: RMS relative error per site (tracemalloc exact as reference, 5 seeds)")
    rows = []
    for r in results:
        for rate, errs in r["accuracy"].items():
            rows.append([r["python"], kib(rate)] + [f"{100 * e:.1f}%" for e in errs.values()])
    for rate in results[0]["accuracy"] if results else []:
        predicted = [
            (float(rate) / (float(mb) * 1e6)) ** 0.5 for mb in results[0]["accuracy"][rate]
        ]
        rows.append(["sqrt(R/B)", kib(rate)] + [f"{100 * p:.1f}%" for p in predicted])
    sizes = list(results[0]["accuracy"][next(iter(results[0]["accuracy"]))]) if results else []
    print(table(["Python", "rate"] + [f"{s} MB site" for s in sizes], rows))
    print(f"\nRefresh at {args.blocks} live blocks (50 sites)")
    rows = []
    for r in results:
        f = r["refresh"]
        for rate, v in f.items():
            if not rate[0].isdigit():
                continue
            rows.append(
                [
                    r["python"],
                    kib(rate),
                    str(v["live_samples"]),
                    "{:.1f} us".format(v["c_us"]),
                    "{:.2f} ms".format(v["py_ms"]),
                    "{:.2f} ms".format(v["py_again_ms"]),
                    f"{f['tracemalloc_get_traces_ms']:.0f} ms ({f['tracemalloc_traces']} traces)",
                ]
            )
    print(
        table(
            [
                "Python",
                "rate",
                "live samples",
                "C snapshot",
                "table+rows (Python)",
                "next refresh",
                "tracemalloc _get_traces()",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
