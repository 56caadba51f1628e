"""Modes end to end, with real targets: sampled estimates at known lines with error bars
that hold the exact size, attach defaulting to sampled (gdb and remote_exec routes), the
fallback to exact when the library is missing (and exit 2 when sampled was asked for), the
agent's live switch, and a sampled snapshot viewed from its file."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DISTRIBUTION,
    ROOT,
    TARGETS,
    Plain,
    Targets,
    attach_route,
    marked_lines,
    memtop_cli,
    need_attachable,
    read_state,
    run_commands,
    state_of,
    stream_json,
    wait_for,
    wait_state,
)

TARGET = TARGETS / "held_sites.py"
LINES = marked_lines(TARGET)
SITES = {LINES[f"site{i}"] for i in range(6)}
RING = LINES["ring"]


def need_library() -> None:
    if not (ROOT / "memtop" / "agent" / "native" / "libmemtopsampler.so").exists():
        pytest.skip("the sampler library was not built here (no C compiler; CI has one)")


def site_rows(line: dict[str, Any], lines: set[int]) -> dict[int, dict[str, Any]]:
    return {
        row["lineno"]: row
        for row in line["rows"]
        if row["filename"].endswith("held_sites.py") and row["lineno"] in lines
    }


def read_after(state: Path, line: dict[str, Any]) -> bool:
    """The refresh's table was read after the target reported its sites held."""
    ready = read_state(state)
    return ready is not None and line["time"] - line["table"]["age"] > ready["ready_time"]


def test_run_in_sampled_mode_estimates_each_line_within_its_error_bars(short_tmp: Path) -> None:
    """Six lines hold 2 MB each (exactly known); at R = 64 KiB about 30 samples each.
    A 95 % interval misses now and then: at least 4 of 6 must hold the exact size (3
    misses or more have a probability near 0.2 %), none may be off by twice its width."""
    need_library()
    state = short_tmp / "held.json"
    line, err = stream_json(
        ["run", "--mode", "sampled", "--rate", "64K", "--json", "-i", "0.3",
         str(TARGET), str(state)],
        lambda out: read_after(state, out) and len(site_rows(out, SITES)) == 6,
        timeout=60,
    )  # fmt: skip
    truth = state_of(state)["truth"]
    assert line["mode"] == "sampled" and line["sample_rate"] == 65536
    rows = site_rows(line, SITES).values()
    assert all(row["size_error"] > 0 and row["count_error"] > 0 for row in rows)
    inside = [abs(row["size"] - truth) <= row["size_error"] for row in rows]
    assert sum(inside) >= 4, (truth, [(r["size"], r["size_error"]) for r in rows])
    assert all(abs(row["size"] - truth) <= 2 * row["size_error"] for row in rows)
    assert line["nframe"] == 64  # the sampler's deep stacks
    assert "sampled mode unavailable" not in err


def test_run_defaults_to_exact_mode_with_exact_sizes(short_tmp: Path) -> None:
    state = short_tmp / "held.json"
    line, _ = stream_json(
        ["run", "--json", "-i", "0.3", str(TARGET), str(state)],
        lambda out: read_after(state, out) and len(site_rows(out, SITES)) == 6,
    )
    truth = state_of(state)["truth"]
    assert line["mode"] == "exact" and line["sample_rate"] is None
    for row in site_rows(line, SITES).values():
        assert (row["size"], row["size_error"], row["count_error"]) == (truth, 0, 0)


@pytest.mark.parametrize("minor", ["3.12", "3.14", DISTRIBUTION])
def test_attach_defaults_to_sampled_mode_and_rows_land_at_the_known_line(
    plain: Plain, minor: str
) -> None:
    """The staged agent loads the library from its own copy, on the gdb route (3.12, and
    Debian's own python3, a distribution build) and the remote_exec route (3.14)."""
    need_library()
    python = need_attachable(minor)
    proc, state = plain.start(python, "held_sites.py", "ring")
    wait_state(state)
    line, err = stream_json(
        ["attach", str(proc.pid), "--json", "-i", "0.3"],
        lambda out: bool(site_rows(out, {RING})),
        timeout=60,
    )
    assert f"via {attach_route(minor)} in" in err
    assert line["mode"] == "sampled" and line["sample_rate"] == 256 * 1024
    assert site_rows(line, {RING})[RING]["size_error"] > 0
    assert "sampled mode unavailable" not in err


@pytest.mark.parametrize("minor", ["3.12", "3.14", DISTRIBUTION])
def test_detach_gives_the_program_its_own_allocators_back(plain: Plain, minor: str) -> None:
    """The target reports what PyMem_GetAllocator returns for the MEM and OBJ domains: a
    sampled attach replaces them (the sampler is on top), a detach puts back the very
    functions and contexts the program had before."""
    need_library()
    python = need_attachable(minor)
    proc, state = plain.start(python, "allocators.py")
    before = wait_state(state, lambda s: s["counter"] >= 3)["allocators"]
    from memtop.attach.chain import attach
    from memtop.modes import ModeRequest

    attached = attach(proc.pid, mode=ModeRequest("sampled", explicit=True))
    assert attached.how == attach_route(minor)
    assert attached.client.greeting["mode"] == "sampled"
    attached.client.close()  # leave it serving, as `Q` does
    hooked = wait_state(
        state,
        lambda s: all(s["allocators"][d] != before[d] for d in ("mem", "obj")),
        timeout=20,
    )["allocators"]
    assert all(hooked[d][1] != before[d][1] for d in ("mem", "obj"))  # another malloc
    detached = memtop_cli("detach", str(proc.pid))
    assert detached.returncode == 0, detached.stderr
    # The agent unhooks as it stops, in its own thread: wait for reports made after that.
    wait_state(state, lambda s: s["allocators"] == before, timeout=20)
    assert proc.poll() is None


@pytest.fixture
def no_library(short_tmp: Path) -> Path:
    """A copy of memtop as an install without a C compiler leaves it: no library."""
    copy = short_tmp / "nolib"
    shutil.copytree(
        ROOT / "memtop",
        copy / "memtop",
        ignore=shutil.ignore_patterns("*.so", "__pycache__", "build-error.txt"),
    )
    return copy


def memtop_from(copy: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """That copy's command line (python -m memtop finds the copy first, in its cwd)."""
    return subprocess.run(
        [sys.executable, "-m", "memtop", *args],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


REASON = "sampled mode unavailable: the library was not built"


def test_run_with_sampled_mode_asked_for_and_no_library_exits_2_with_the_reason(
    no_library: Path, short_tmp: Path
) -> None:
    done = memtop_from(
        no_library, "run", "--mode", "sampled", "-n", "1", str(TARGET), str(short_tmp / "s.json")
    )
    assert done.returncode == 2, done.stderr
    assert REASON in done.stderr
    assert "Traceback" not in done.stderr


def test_attach_without_the_library_falls_back_to_exact_and_says_why(
    no_library: Path, plain: Plain
) -> None:
    """Default attach: exact mode, with a note naming the reason; --mode sampled: exit 2
    with the reason, and the target keeps running without an agent."""
    python = need_attachable("3.12")
    proc, state = plain.start(python, "held_sites.py", "ring")
    wait_state(state)
    asked = memtop_from(no_library, "attach", str(proc.pid), "--mode", "sampled", "-n", "1")
    assert asked.returncode == 2, asked.stderr
    assert REASON in asked.stderr and "Traceback" not in asked.stderr
    assert wait_state(state, lambda s: not s["tracing"])
    fallback = memtop_from(no_library, "attach", str(proc.pid), "--json", "-n", "1")
    assert fallback.returncode == 0, fallback.stderr
    assert REASON in fallback.stderr
    assert "watching in exact mode (tracemalloc) instead" in fallback.stderr
    assert json.loads(fallback.stdout.splitlines()[-1])["mode"] == "exact"
    assert proc.poll() is None


def test_the_mode_command_switches_a_live_agent_both_ways(targets: Targets) -> None:
    """exact → sampled: rows carry error bars and tracemalloc stops; → exact: tracemalloc
    traces again, from a fresh session."""
    need_library()
    program, state = targets.start("held_sites.py", "ring")
    wait_state(state)
    client = targets.connect(program)
    assert client.greeting["mode"] == "exact"
    reply = client.request("mode", mode="sampled", rate=65536)
    assert reply == {"mode": "sampled", "sample_rate": 65536, "mode_note": None}

    def ring_row() -> tuple[dict[str, Any], dict[str, Any]] | None:
        top = client.request("top", max_age=0.0)
        rows = [r for r in top["rows"] if r["lineno"] == RING]
        return (top, rows[0]) if rows and top["totals"]["mode"] == "sampled" else None

    top, row = wait_for(ring_row, 20, "a sampled row at the ring line")
    assert row["size_error"] > 0
    # A table read for the request says so, though a sampled read takes microseconds.
    seen = [top["sample"]]

    def new_table() -> dict[str, Any] | None:
        seen.append(client.request("top", max_age=0.0)["sample"])
        return seen[-1] if seen[-1]["id"] != seen[-2]["id"] else None

    assert wait_for(new_table, 20, "a new sampled table")["fresh"], seen[-3:]
    for before, after in itertools.pairwise(seen):
        assert after["fresh"] == (after["id"] != before["id"]), seen
    assert top["totals"]["sample_rate"] == 65536 and top["totals"]["nframe"] == 64
    key = {"filename": row["filename"], "lineno": RING}
    panel = client.request("tracebacks", group_by="lineno", key=key)
    assert panel["nframe"] == 64 and panel["tracebacks"][0]["size_error"] > 0
    session = top["tracing"]["session"]
    assert client.request("mode", mode="exact")["mode"] == "exact"
    top = client.request("top", max_age=0.0)
    assert top["totals"]["mode"] == "exact" and top["totals"]["tracing"]
    assert top["tracing"]["session"] != session
    assert all("size_error" not in r for r in top["rows"])
    bad = client.request
    with pytest.raises(Exception, match="rate must be a whole number"):
        bad("mode", mode="sampled", rate=10)


def test_a_sampled_snapshot_is_saved_and_viewed_as_estimates(plain: Plain, short_tmp: Path) -> None:
    need_library()
    python = need_attachable("3.14")
    proc, state = plain.start(python, "held_sites.py", "ring")
    wait_state(state)
    path = short_tmp / "s.memtop"
    done = subprocess.run(
        [sys.executable, "-m", "memtop", "snapshot", str(proc.pid), "--wait", "1", "-o", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "saved an estimated" in done.stderr
    view = subprocess.run(
        [sys.executable, "-m", "memtop", "view", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    line = json.loads(view.stdout.splitlines()[-1])
    assert line["mode"] == "sampled" and line["sample_rate"] == 256 * 1024
    assert site_rows(line, {RING})
    text = subprocess.run(
        [sys.executable, "-m", "memtop", "view", str(path), "-b"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    ).stdout
    # The file keeps the estimates, not their error bars: no ± column of zeros.
    assert "sampled, 1 per 256 KiB" in text and "traced ≈" in text and "±" not in text


def test_a_program_unhooking_the_sampler_is_hooked_again_and_the_gap_reported(
    targets: Targets, short_tmp: Path
) -> None:
    """The program traces on its own when sampling starts (the sampler hooks above its
    tracemalloc); its tracemalloc.stop() unhooks the sampler: the next refresh hooks it
    again and counts the gap."""
    need_library()
    commands = short_tmp / "commands"
    program, state = targets.start("retracer.py", str(commands))
    wait_state(state)
    run_commands(commands, state, "restart:1")  # the program's own tracing now
    client = targets.connect(program)
    assert client.request("mode", mode="sampled", rate=65536)["mode"] == "sampled"
    assert client.request("top", max_age=0.0)["totals"]["sampler_gaps"] == 0
    run_commands(commands, state, "restart:1", "stop")
    totals = client.request("top", max_age=0.0)["totals"]
    assert totals["sampler_gaps"] == 1 and totals["mode"] == "sampled"
    assert client.request("top", max_age=0.0)["totals"]["sampler_gaps"] == 1
