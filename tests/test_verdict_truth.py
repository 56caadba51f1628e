"""The verdict on real programs whose truth is known: a Python leak, a native leak, a
checkerboard of freed objects, and a program that keeps nothing (`memtop run --json`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TARGETS, read_state

pytestmark = pytest.mark.e2e


def verdicts(
    tmp: Path, mode: str, wanted: int = 10, timeout: float = 180.0, after: str = "mode"
) -> list[dict]:
    """The JSON refreshes of `memtop run` on tests/targets/truth.py MODE past "collecting",
    counted once the target's state has the key `after`, until `wanted` were seen."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "memtop", "run", "--json", "-i", "0.5",
            "--log", str(tmp / f"{mode}.log"),
            str(TARGETS / "truth.py"), str(tmp / f"{mode}.json"), mode,
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        for text in proc.stdout:
            line = json.loads(text)
            state = read_state(tmp / f"{mode}.json") or {}
            if line["verdict_kind"] != "collecting" and after in state:
                seen.append(line)
            if len(seen) >= wanted or time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert len(seen) >= wanted, err
    return seen


def test_a_python_leak_reads_as_python_objects_accumulating(short_tmp: Path) -> None:
    seen = verdicts(short_tmp, "python")
    last = seen[-5:]
    assert all(line["verdict_kind"] == "growing" for line in last), [v["verdict"] for v in last]
    assert all(line["rates"]["traced"] > 0 for line in last)
    assert all("untraced +" not in line["verdict"] for line in last)


def test_a_native_leak_reads_as_untraced_growth(short_tmp: Path) -> None:
    seen = verdicts(short_tmp, "native")
    last = seen[-5:]
    assert all(v["verdict_kind"] == "untraced-growing" for v in last), [v["verdict"] for v in last]
    assert all("traced +" not in v["verdict"].replace("untraced +", "") for v in last)
    # 128 KiB every 50 ms: about 150 MiB/min, less the time the loop itself takes.
    assert all(v["rates"]["untraced"] > 50 * 2**20 for v in last)


def test_freed_but_kept_memory_reads_as_fragmentation(short_tmp: Path) -> None:
    seen = verdicts(short_tmp, "fragment", after="freed")
    kinds = [v["verdict_kind"] for v in seen[-5:]]
    assert kinds == ["fragmentation"] * 5, [v["verdict"] for v in seen[-5:]]


def test_a_program_that_keeps_nothing_reads_as_steady(short_tmp: Path) -> None:
    seen = verdicts(short_tmp, "steady", wanted=12, after="warm")
    kinds = [v["verdict_kind"] for v in seen[-6:]]
    assert kinds == ["steady"] * 6, [v["verdict"] for v in seen[-6:]]
