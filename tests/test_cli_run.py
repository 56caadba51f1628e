"""End to end through the real command line: `memtop run` / `memtop demo` start real
programs, and the JSON/batch output reports the rows that stdlib tracemalloc reports for
the same program."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import (
    ROOT,
    TARGETS,
    Targets,
    interpreters,
    marked_lines,
    memtop_cli,
    read_state,
    state_of,
    wait_for,
)

KNOWN = TARGETS / "known_lines.py"


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def stream(args: list[str], state_path: Path, timeout: float = 30.0) -> tuple[dict, dict, str]:
    """Run `memtop ... --json` until a table sampled after the target was ready arrives;
    then interrupt memtop. Returns (that refresh, the target's state, memtop's stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "memtop", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    found = state = None
    try:
        for text in proc.stdout:
            line = json.loads(text)
            state = read_state(state_path)
            if state is not None and line["time"] - line["table"]["age"] > state["ready_time"]:
                found = line
                break
            assert time.monotonic() < deadline, "no table sampled after the target was ready"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert found is not None and state is not None, err
    assert proc.returncode == 130, err
    return found, state, err


def assert_rows_match_stdlib(line: dict, state: dict) -> None:
    """Every line the target allocated at is in the rows, with stdlib's size and count."""
    rows = {row["key"]: row for row in line["rows"]}
    lines = marked_lines(KNOWN)
    for name in ("records", "buffers"):
        key = f"{state['file']}:{lines[name]}"
        assert key in state["expected"], name
        assert key in rows, f"{name} line missing from memtop's rows"
        assert [rows[key]["size"], rows[key]["count"]] == state["expected"][key], name


def test_json_rows_equal_what_tracemalloc_reports_in_the_target(short_tmp: Path) -> None:
    state_path = short_tmp / "known.json"
    line, state, _ = stream(["run", "--json", "-i", "0.3", str(KNOWN), str(state_path)], state_path)
    assert line["pid"] == state["pid"]
    assert_rows_match_stdlib(line, state)
    records = next(r for r in line["rows"] if r["lineno"] == marked_lines(KNOWN)["records"])
    assert records["source"].startswith('return ["record-%06d" % i')
    assert records["traceback"][-1] == {
        "filename": state["file"],
        "lineno": marked_lines(KNOWN)["records"],
    }
    # The program memtop started is gone once memtop is done.
    wait_for(lambda: not psutil.pid_exists(state["pid"]), 5, "the program to be stopped")


def test_n_stops_after_that_many_refreshes(short_tmp: Path) -> None:
    result = memtop_cli(
        "run", "--json", "-n", "3", "-i", "0.2", str(KNOWN), str(short_tmp / "s.json")
    )
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert len(lines) == 3
    assert "stopped the program" in result.stderr
    assert not psutil.pid_exists(lines[0]["pid"])


def test_json_lines_follow_the_documented_schema(short_tmp: Path) -> None:
    result = memtop_cli(
        "run", "--json", "-n", "2", "-i", "0.3", str(KNOWN), str(short_tmp / "s.json")
    )
    assert result.returncode == 0, result.stderr
    first, second = json_lines(result.stdout)
    schema: dict[str, type | tuple[type, ...]] = {
        "pid": int,
        "time": float,
        "group_by": str,
        "cumulative": bool,
        "rss": int,
        "uss": (int, type(None)),
        "traced_current": int,
        "traced_peak": int,
        "tracemalloc_memory": int,
        "traced_blocks": int,
        "nframe": int,
        "pause_ms": float,
        "rows": list,
    }
    for name, kind in schema.items():
        assert isinstance(second[name], kind), name
    row_schema: dict[str, type | tuple[type, ...]] = {
        "key": str,
        "filename": str,
        "lineno": int,
        "size": int,
        "count": int,
        "size_diff": int,
        "count_diff": int,
        "source": str,
        "traceback": list,
    }
    for row in second["rows"]:
        for name, kind in row_schema.items():
            assert isinstance(row[name], kind), name
        assert all(set(frame) == {"filename", "lineno"} for frame in row["traceback"])
    assert all(row["size_diff"] == 0 and row["count_diff"] == 0 for row in first["rows"])
    assert second["group_by"] == "lineno" and second["nframe"] == 4


@pytest.mark.parametrize("group", ["filename", "traceback"])
def test_grouping_option_changes_the_rows(short_tmp: Path, group: str) -> None:
    state_path = short_tmp / "known.json"
    line, state, _ = stream(
        ["run", "--json", "-i", "0.3", "-g", group, "--nframe", "6", str(KNOWN), str(state_path)],
        state_path,
    )
    assert line["group_by"] == group and line["nframe"] == 6
    if group == "filename":
        mine = [r for r in line["rows"] if r["filename"] == state["file"]]
        assert len(mine) == 1 and mine[0]["lineno"] is None
        assert mine[0]["size"] >= sum(size for size, _ in state["expected"].values())
    else:
        lines = marked_lines(KNOWN)
        nested = [
            r
            for r in line["rows"]
            if r["lineno"] == lines["buffers"]
            and any(f["lineno"] == lines["recursion"] for f in r["traceback"])
        ]
        assert nested, "the recursion's traceback is missing"
        assert len({r["key"] for r in line["rows"]}) == len(line["rows"])


def test_cumulative_counts_callers(short_tmp: Path) -> None:
    state_path = short_tmp / "known.json"
    line, state, _ = stream(
        [
            "run",
            "--json",
            "-i",
            "0.3",
            "--cumulative",
            "-l",
            "500",
            "--nframe",
            "8",
            str(KNOWN),
            str(state_path),
        ],
        state_path,
    )
    lines = marked_lines(KNOWN)
    by_line = {r["lineno"]: r for r in line["rows"] if r["filename"] == state["file"]}
    # make_buffers() runs for keep_buffers and, through nested(), for keep_nested: the
    # callers' rows carry what the allocating line allocated on their behalf.
    # (The buffers line itself may count twice: before 3.12 a comprehension is a frame of
    # its own on the same line, and cumulative counts every appearance, as the stdlib does.)
    buffers_alone = state["expected"][f"{state['file']}:{lines['buffers']}"][0]
    assert by_line[lines["keep_nested"]]["size"] > 0
    assert (
        by_line[lines["keep_buffers"]]["size"] + by_line[lines["keep_nested"]]["size"]
        == buffers_alone
    )
    assert by_line[lines["recursion"]]["count"] == 2 * by_line[lines["nested_call"]]["count"]


def test_batch_output_reads_like_top(short_tmp: Path) -> None:
    state_path = short_tmp / "known.json"
    wanted = f"known_lines.py:{marked_lines(KNOWN)['buffers']}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memtop",
            "run",
            "--batch",
            "-i",
            "0.3",
            "-l",
            "10",
            str(KNOWN),
            str(state_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 30
    try:
        for text in proc.stdout:
            seen.append(text)
            if wanted in text or time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    out = "".join(seen)
    assert wanted in out
    assert out.startswith("memtop 0.1.0 - ")
    header = out.splitlines()[1]
    for label in ("RSS ", "traced ", "peak ", "tracer ", "untraced "):
        assert label in header
    assert "verdict: " in out and "table sampled" in out
    assert "SIZE" in out and "dSIZE" in out and "LOCATION / SOURCE" in out
    assert "program pid" in err and "output in" in err


def test_demo_runs_and_stops(short_tmp: Path) -> None:
    result = memtop_cli(
        "demo", "--json", "-n", "3", "-i", "0.8", "--log", str(short_tmp / "demo.log")
    )
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert len(lines) == 3
    assert any("demo.py" in row["filename"] for row in lines[-1]["rows"])
    assert "stopped the program" in result.stderr
    assert not psutil.pid_exists(lines[0]["pid"])


def test_run_module_with_arguments(short_tmp: Path) -> None:
    marker = short_tmp / "argv.json"
    module_dir = short_tmp / "pkg"
    module_dir.mkdir()
    (module_dir / "argv_dump.py").write_text(
        "import json, sys, time\njson.dump(sys.argv, open(sys.argv[1], 'w'))\ntime.sleep(30)\n"
    )
    result = memtop_cli(
        "run",
        "--json",
        "-n",
        "1",
        "-m",
        "argv_dump",
        str(marker),
        "--flag",
        env={**os.environ, "PYTHONPATH": str(module_dir)},
    )
    assert result.returncode == 0, result.stderr
    argv = json.loads(marker.read_text())
    assert argv[0].endswith("argv_dump.py") and argv[1:] == [str(marker), "--flag"]


def test_program_output_goes_to_the_log_not_the_terminal(short_tmp: Path) -> None:
    script = short_tmp / "noisy.py"
    script.write_text(
        "import sys, time\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\n"
        "sys.stdout.flush()\ntime.sleep(30)\n"
    )
    log = short_tmp / "noisy.log"
    result = memtop_cli("run", "--json", "-n", "2", "-i", "0.3", "--log", str(log), str(script))
    assert result.returncode == 0, result.stderr
    assert "to stdout" not in result.stdout + result.stderr
    wait_for(lambda: "to stderr" in log.read_text(), 5, "the log")
    assert "to stdout" in log.read_text()


# --- errors and exit codes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no command given"),
        (("run",), "needs a script"),
        (("run", "no/such/script.py"), "no such script: no/such/script.py"),
        (("run", "-g", "bogus", "x.py"), "invalid choice"),
        (("run", "-i", "0", "x.py"), "between 0.05 and 3600"),
        (("run", "-l", "100000", "x.py"), "between 1 and 500"),
        (("run", "-g", "traceback", "--cumulative", str(KNOWN)), "--cumulative applies"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_usage_errors_exit_1_with_a_message(args: tuple[str, ...], message: str) -> None:
    result = memtop_cli(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_program_that_never_starts_the_agent_exits_3(short_tmp: Path) -> None:
    result = memtop_cli(
        "run", "--python", "/bin/true", "--log", str(short_tmp / "l.log"), str(KNOWN), "x"
    )
    assert result.returncode == 3
    assert "exited with code 0 before the agent started" in result.stderr


def test_failing_program_shows_the_end_of_its_log(short_tmp: Path) -> None:
    script = short_tmp / "fails.py"
    script.write_text("import time\ntime.sleep(0.8)\nraise ValueError('the program broke')\n")
    result = memtop_cli(
        "run", "--json", "-i", "0.2", "--log", str(short_tmp / "f.log"), str(script)
    )
    assert result.returncode == 1  # the program's own: refreshes were shown before it ended
    assert "exited with code 1" in result.stderr
    assert "ValueError: the program broke" in result.stderr


def test_version() -> None:
    result = memtop_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == "memtop 0.1.0"


# --- the same on every interpreter -----------------------------------------------------


@pytest.mark.parametrize("minor", ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15"])
def test_run_on_every_interpreter(short_tmp: Path, minor: str) -> None:
    python = interpreters().get(minor)
    if python is None:
        pytest.skip(f"CPython {minor} is not installed here (CI installs it)")
    state_path = short_tmp / "known.json"
    line, state, _ = stream(
        ["run", "--python", python, "--json", "-i", "0.3", str(KNOWN), str(state_path)], state_path
    )
    assert_rows_match_stdlib(line, state)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_end_memtop_with_130(short_tmp: Path, sig: signal.Signals) -> None:
    """Ctrl-C and SIGTERM quit like `q` (the program is stopped); SIGHUP, a terminal that
    went away, leaves the program and its agent serving like `Q`, so `memtop PID` can
    resume."""
    state_path = short_tmp / "idle.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memtop",
            "run",
            "--json",
            "-i",
            "0.2",
            str(TARGETS / "idle.py"),
            str(state_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # first refresh printed: memtop is in its loop
    target_pid = wait_for(lambda: (read_state(state_path) or {}).get("pid"), 10, "target")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    try:
        if sig != signal.SIGHUP:
            assert "stopped the program" in err
            wait_for(lambda: not psutil.pid_exists(target_pid), 5, "the program to be gone")
        else:
            assert f"left pid {target_pid} running with its agent serving" in err
            assert state_of(state_path)["tracing"] is True
            again = memtop_cli(str(target_pid), "--json", "-n", "1")
            assert again.returncode == 0, again.stderr
            assert "via reuse" in again.stderr
    finally:
        if psutil.pid_exists(target_pid):
            os.kill(target_pid, signal.SIGKILL)


def test_ps_shows_a_run_program_as_it_was_typed(targets: Targets) -> None:
    program, state = targets.start("leaky.py", "static")
    wait_for(lambda: read_state(state), what="the target ready")
    line = next(
        line
        for line in memtop_cli("ps", env={**os.environ, "COLUMNS": "400"}).stdout.splitlines()
        if line.split()[0] == str(program.pid)
    )
    assert f"leaky.py {state} static" in line
    assert "import sys" not in line and "importlib" not in line


def test_batch_and_json_hide_internal_frames_as_the_live_view_does(short_tmp: Path) -> None:
    import fnmatch

    from memtop.model import INTERNAL_PATTERNS

    def internal_rows(*options: str) -> list[str]:
        result = memtop_cli(
            "run",
            *options,
            "--json",
            "-n",
            "2",
            "-l",
            "500",
            str(KNOWN),
            str(short_tmp / "s"),
        )
        assert result.returncode == 0, result.stderr
        rows = json_lines(result.stdout)[-1]["rows"]
        assert rows
        return [
            r["filename"]
            for r in rows
            if any(fnmatch.fnmatch(r["filename"], p) for p in INTERNAL_PATTERNS)
        ]

    assert internal_rows() == []
    assert any("importlib" in name for name in internal_rows("--no-hide-internal"))
