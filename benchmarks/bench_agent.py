"""What memtop's agent costs the program it watches, side by side with the alternatives.

    python benchmarks/bench_agent.py [--quick] [--blocks 100000,1000000] [--with-3m]

Three measurements in one run, printed as plain-text tables with ratios:

1. Pause per refresh on one heap of N live blocks (nframe 4), timed inside the target by
   `pause_target.py`: the `_get_traces()` floor (call, and call + free), the agent's `top`
   (sample + group + rank + source lines), the stdlib (`take_snapshot()` +
   `statistics()`); then the same heap through the real socket, from this process.
2. The target's slowdown on an allocation-heavy loop (`alloc_workload.py`): tracemalloc
   off and at several depths, memtop's agent idle and polled at 1 Hz, memray live.
3. Bytes per refresh: the size of a `top` reply frame (limit 50).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from memtop import __version__ as memtop_version
from memtop.agent import protocol
from memtop.attach.runner import Program, start_program
from memtop.client import AgentClient
from memtop.errors import MemtopError
from memtop.model import Query

BENCH_DIR = Path(__file__).resolve().parent
PAUSE_TARGET = str(BENCH_DIR / "pause_target.py")
WORKLOAD = str(BENCH_DIR / "alloc_workload.py")
GROUPS = ("lineno", "traceback")
NFRAMES = (1, 4, 10, 25)
AGENT_NFRAME = 4
POLL_INTERVAL = 1.0
TOP_LIMIT = 50
STACK_DEPTH = 30
NUMBER = re.compile(r"-?[0-9.,]*x?")  # 1,234  12.5  1.30x


@dataclass(frozen=True)
class Settings:
    """Sizes and repeat counts of one run."""

    blocks: tuple[int, ...]
    repeats: int
    iterations: int
    resident: int
    memray: bool


def parse_args(argv: list[str]) -> Settings:
    """Command-line options into Settings (`--quick` shrinks every default)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fast smoke run")
    parser.add_argument("--blocks", help="live blocks per pause heap, comma-separated")
    parser.add_argument("--with-3m", action="store_true", help="add a 3,000,000-block heap")
    parser.add_argument("--repeats", type=int, help="runs per measurement (median shown)")
    parser.add_argument("--iterations", type=int, help="turns of the allocation loop")
    parser.add_argument("--resident", type=int, help="live blocks held by the loop's target")
    parser.add_argument("--no-memray", action="store_true", help="skip the memray rows")
    args = parser.parse_args(argv)
    blocks = [20_000, 100_000] if args.quick else [100_000, 1_000_000]
    if args.blocks:
        blocks = [int(part.replace("_", "")) for part in args.blocks.split(",") if part]
    if args.with_3m:
        blocks.append(3_000_000)
    return Settings(
        blocks=tuple(blocks),
        repeats=args.repeats or (1 if args.quick else 3),
        iterations=args.iterations or (100_000 if args.quick else 600_000),
        resident=args.resident if args.resident is not None else 100_000,
        memray=not args.no_memray,
    )


# --- output helpers ---------------------------------------------------------------------


def median(values: list[float]) -> float:
    """Median, or NaN for no values (a column that could not be measured)."""
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    """Seconds as milliseconds, 1 decimal."""
    return f"{seconds * 1000:.1f}"


def ratio(numerator: float, denominator: float) -> str:
    """`a/b` as '1.23x'."""
    return f"{numerator / denominator:.2f}x" if denominator else "-"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain-text table: columns of numbers right-aligned, text columns left-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    # Blank cells count as numbers: they only occur in number columns.
    numeric = [all(NUMBER.fullmatch(r[i]) for r in rows) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_header(settings: Settings) -> str:
    """What ran where: the numbers mean little without it."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    memray = memray_version() or "not installed"
    return "\n".join(
        [
            "memtop agent benchmark",
            f"date     {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
            f"cpu      {cpu_model()}, {os.cpu_count()} cores ({usable} usable)",
            f"kernel   {platform.system()} {platform.release()} {platform.machine()}",
            f"python   {platform.python_implementation()} {sys.version.split()[0]} "
            f"({sys.executable})",
            f"versions memtop {memtop_version}, memray {memray}",
            f"settings repeats {settings.repeats} (median shown), "
            f"heaps {', '.join(f'{n:,}' for n in settings.blocks)} blocks, "
            f"loop {settings.iterations:,} turns at stack depth {STACK_DEPTH}, "
            f"resident {settings.resident:,} blocks",
        ]
    )


def memray_version() -> str | None:
    """memray's version when it can be imported, else None."""
    if importlib.util.find_spec("memray") is None:
        return None
    import memray

    return str(getattr(memray, "__version__", "?"))


# --- processes ---------------------------------------------------------------------------


def wait_for_json(path: Path, alive: Callable[[], bool], timeout: float) -> dict[str, Any]:
    """The JSON a target writes at `path`, once it exists; fails if the target died first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not alive():
            raise RuntimeError(f"target exited before writing {path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no result in {path} after {timeout:.0f} s")
        time.sleep(0.05)
    return json.loads(path.read_text())


def start_agent_target(script: str, args: list[str], workdir: Path, **config: Any) -> Program:
    """A target started the way `memtop run` starts it, its output in a log file."""
    return start_program(
        script,
        args,
        nframe=AGENT_NFRAME,
        log_path=str(workdir / f"{Path(script).stem}-{time.monotonic_ns()}.log"),
        agent_config=config or None,
    )


def connect(program: Program) -> AgentClient:
    """A viewer connection to the program's agent."""
    return AgentClient.connect(program.socket_path, program.token, expected_pid=program.pid)


# --- 1 + 2: pause per refresh, bytes per refresh ------------------------------------------


@dataclass
class SocketTimes:
    """`top` requests through the real socket, per grouping."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    pause_ms: dict[str, list[float]] = field(default_factory=dict)
    work_ms: dict[str, list[float]] = field(default_factory=dict)
    frame_bytes: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


def socket_top(client: AgentClient, group_by: str, wait: float) -> tuple[float, dict[str, Any]]:
    """One `top` request that the agent must answer from a fresh sample: (seconds, result).

    Sleeps `wait` first: the duty-cycle clock runs even at budget 1."""
    time.sleep(wait)
    # The agent frames its reply with protocol.encode: re-encoding with the request's id
    # gives the exact bytes that crossed the socket.
    request_id = client._next_id
    started = time.perf_counter()
    result = client.request("top", group_by=group_by, limit=TOP_LIMIT, max_age=0.0)
    seconds = time.perf_counter() - started
    if not result["sample"]["fresh"]:
        raise RuntimeError("the agent answered from a cached sample; the timing is void")
    result["frame_bytes"] = len(protocol.encode({"id": request_id, "ok": True, "result": result}))
    return seconds, result


def measure_socket(program: Program, repeats: int) -> SocketTimes:
    """Time `top` through the socket for each grouping, after one warm-up each."""
    times = SocketTimes()
    client = connect(program)
    try:
        wait = 0.0
        for group_by in GROUPS:
            _, result = socket_top(client, group_by, wait)
            wait = result["sample"]["next_in"] + 0.05
        for _ in range(repeats):
            for group_by in GROUPS:
                seconds, result = socket_top(client, group_by, wait)
                wait = result["sample"]["next_in"] + 0.05
                times.seconds.setdefault(group_by, []).append(seconds)
                times.pause_ms.setdefault(group_by, []).append(result["sample"]["pause_ms"])
                times.work_ms.setdefault(group_by, []).append(result["sample"]["work_ms"])
                times.frame_bytes[group_by] = result.pop("frame_bytes")
                times.rows[group_by] = len(result["rows"])
    finally:
        client.close()
    return times


def measure_pause(blocks: int, settings: Settings, workdir: Path) -> dict[str, Any]:
    """In-target and socket timings on one heap of `blocks` live blocks."""
    result_path = workdir / f"pause-{blocks}.json"
    program = start_agent_target(
        PAUSE_TARGET,
        [str(result_path), str(blocks), str(settings.repeats), str(workdir)],
        workdir,
        budget=1.0,  # never serve a cached sample because of the duty cycle
    )
    try:
        timeout = 120.0 + 60.0 * settings.repeats * blocks / 1_000_000
        inside = wait_for_json(result_path, lambda: program.exit_status() is None, timeout)
        inside["socket"] = measure_socket(program, settings.repeats)
    finally:
        program.stop()
    return inside


def pause_rows(found: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """Rows for one heap, one per grouping: (in the target, through the socket)."""
    cols = {name: median(values) for name, values in found["columns"].items()}
    sock: SocketTimes = found["socket"]
    blocks = f"{found['traced_blocks']:,}"
    inside, through = [], []
    for group_by in GROUPS:
        agent = cols[f"agent_top_{group_by}"]
        stdlib = cols[f"stdlib_{group_by}"]
        inside.append(
            [
                blocks,
                group_by,
                ms(cols["floor_call"]),
                ms(cols["floor"]),
                ms(cols["agent_sample"]),
                ms(agent),
                f"{median(found['pause_ms'][group_by]):.1f}",
                ms(stdlib),
                ratio(agent, cols["floor"]),
                ratio(stdlib, agent),
            ]
        )
        round_trip = median(sock.seconds[group_by])
        through.append(
            [
                blocks,
                group_by,
                ms(round_trip),
                f"{median(sock.pause_ms[group_by]):.1f}",
                f"{median(sock.work_ms[group_by]):.1f}",
                ratio(round_trip, cols["floor"]),
                ratio(cols[f"stdlib_{group_by}"], round_trip),
            ]
        )
    return inside, through


def pause_report(results: dict[int, dict[str, Any]]) -> str:
    """The pause tables with their legend, and the bytes-per-refresh table."""
    inside, through = [], []
    for found in results.values():
        rows_in, rows_through = pause_rows(found)
        inside += rows_in
        through += rows_through
    bytes_rows = [
        [
            f"{found['traced_blocks']:,}",
            group_by,
            str(found["socket"].rows[group_by]),
            f"{found['socket'].frame_bytes[group_by]:,}",
        ]
        for found in results.values()
        for group_by in GROUPS
    ]
    return "\n".join(
        [
            f"1a. Pause per refresh, timed inside the target (ms; nframe {AGENT_NFRAME})",
            table(
                [
                    "traced blocks",
                    "group",
                    "floor call",
                    "floor",
                    "agent sample",
                    "agent top",
                    "reported",
                    "stdlib",
                    "agent/floor",
                    "stdlib/agent",
                ],
                inside,
            ),
            "    floor call    _tracemalloc._get_traces() alone",
            "    floor         the same call + freeing its result (what any reader pays)",
            "    agent sample  collector.take_sample(), its result freed",
            f"    agent top     the agent's whole `top` command, limit {TOP_LIMIT}: fresh sample,"
            " group, rank, source lines",
            "    reported      the pause_ms that `top` reply states for its sample",
            "    stdlib        tracemalloc.take_snapshot() + .statistics(group), both freed",
            "    goals         agent/floor <= 1.3x, stdlib/agent >= 8x",
            "",
            "1b. The same heap through the real socket (AgentClient.request('top', max_age=0),"
            " agent budget 1)",
            table(
                [
                    "traced blocks",
                    "group",
                    "round trip",
                    "pause_ms",
                    "work_ms",
                    "vs floor",
                    "stdlib/this",
                ],
                through,
            ),
            "    round trip    request sent to reply decoded, in the viewer process (ms)",
            "    pause_ms/work_ms  as the reply states them",
            "",
            f"2. Bytes per refresh on the socket (one `top` reply frame, limit {TOP_LIMIT})",
            table(["traced blocks", "group", "rows", "frame bytes"], bytes_rows),
        ]
    )


# --- 3: slowdown of the target ------------------------------------------------------------


@dataclass
class Run:
    """One timed run of the allocation loop, and what polled it meanwhile."""

    seconds: float
    polls: int = 0
    fresh: int = 0
    pause_ms: list[float] = field(default_factory=list)


class Poller(threading.Thread):
    """Calls `refresh()` every POLL_INTERVAL seconds until it returns False or stop()."""

    def __init__(self, refresh: Callable[[], bool]) -> None:
        super().__init__(daemon=True)
        self.refresh = refresh
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                started = time.monotonic()
                if not self.refresh():
                    return
                self.stopped.wait(max(0.0, started + POLL_INTERVAL - time.monotonic()))
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def stop(self) -> None:
        self.stopped.set()
        self.join(10.0)
        if self.error is not None:
            raise RuntimeError(f"poller failed: {self.error!r}") from self.error


def workload_args(result: Path, settings: Settings, nframe: int) -> list[str]:
    """argv of alloc_workload.py (nframe 0: tracing is the launcher's business)."""
    counts = (settings.iterations, settings.resident, nframe, STACK_DEPTH)
    return [str(result), *(str(n) for n in counts)]


def run_plain(settings: Settings, workdir: Path, nframe: int) -> Run:
    """The loop with tracemalloc off (nframe 0) or started by the workload itself."""
    result = workdir / f"plain-{time.monotonic_ns()}.json"
    subprocess.run(
        [sys.executable, WORKLOAD, *workload_args(result, settings, nframe)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return Run(json.loads(result.read_text())["seconds"])


def top_poller(client: AgentClient, polls: list[tuple[float, bool, float]]) -> Poller:
    """A viewer at 1 Hz: (request time, fresh sample?, pause_ms) per `top` into `polls`."""
    query = Query(limit=TOP_LIMIT)

    def refresh() -> bool:
        asked = time.time()
        try:
            # The request `memtop --batch -i 1` sends (max_age = 0.9 x interval).
            reply = client.request("top", **query.top_args(POLL_INTERVAL * 0.9))
        except MemtopError:
            return False  # the program finished
        polls.append((asked, reply["sample"]["fresh"], reply["sample"]["pause_ms"]))
        return True

    return Poller(refresh)


def run_agent(settings: Settings, workdir: Path, polled: bool) -> Run:
    """The loop under memtop's agent (default budget), with or without a viewer at 1 Hz."""
    result = workdir / f"agent-{time.monotonic_ns()}.json"
    program = start_agent_target(WORKLOAD, workload_args(result, settings, 0), workdir)
    polls: list[tuple[float, bool, float]] = []
    client = connect(program) if polled else None
    poller = top_poller(client, polls) if client is not None else None
    try:
        if poller is not None:
            poller.start()
        found = wait_for_json(result, lambda: program.exit_status() is None, 600.0)
    finally:
        if poller is not None:
            poller.stop()
        if client is not None:
            client.close()
        program.stop()
    # Only refreshes while the loop ran can slow it down.
    in_loop = [p for p in polls if found["loop_start"] <= p[0] <= found["loop_end"]]
    return Run(
        found["seconds"],
        polls=len(in_loop),
        fresh=sum(1 for p in in_loop if p[1]),
        pause_ms=[p[2] for p in in_loop if p[1]],
    )


def is_running(process: subprocess.Popen[bytes]) -> bool:
    """True until the process has exited."""
    return process.poll() is None


def free_port() -> int:
    """A TCP port on localhost that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_memray(settings: Settings, workdir: Path, python_allocators: bool) -> Run:
    """The loop under `memray run --live-remote`, a SocketReader snapshotting at 1 Hz."""
    import memray

    result = workdir / f"memray-{time.monotonic_ns()}.json"
    port = free_port()
    extra = ["--trace-python-allocators"] if python_allocators else []
    command = [sys.executable, "-m", "memray", "run", "--live-remote", "--live-port", str(port)]
    with open(workdir / "memray.log", "ab") as log:
        process = subprocess.Popen(
            [*command, "-q", *extra, WORKLOAD, *workload_args(result, settings, 0)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    snapshots = 0
    try:
        # The tracker waits for this reader before the script's first line runs.
        with memray.SocketReader(port=port) as reader:

            def refresh() -> bool:
                nonlocal snapshots
                if not reader.is_active:
                    return False
                # What memray's live TUI does on each refresh: materialise the snapshot.
                list(reader.get_current_snapshot(merge_threads=True))
                snapshots += 1
                return True

            poller = Poller(refresh)
            poller.start()
            try:
                found = wait_for_json(result, partial(is_running, process), 600.0)
            finally:
                poller.stop()
        process.wait(30.0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode:
        raise RuntimeError(f"memray run exited with {process.returncode}; see {log.name}")
    return Run(found["seconds"], polls=snapshots)


@dataclass
class Config:
    """One row of the slowdown table; `kind` says what its last column shows."""

    label: str
    kind: str  # "tracemalloc", "agent", "agent-polled" or "memray"
    run: Callable[[], Run]
    runs: list[Run] = field(default_factory=list)


def slowdown_configs(settings: Settings, workdir: Path) -> tuple[list[Config], str | None]:
    """Every configuration to time, and why memray is skipped (None when it is not)."""
    configs = [Config("tracemalloc off", "tracemalloc", partial(run_plain, settings, workdir, 0))]
    configs += [
        Config(f"tracemalloc nframe {n}", "tracemalloc", partial(run_plain, settings, workdir, n))
        for n in NFRAMES
    ]
    agent = f"memtop agent nframe {AGENT_NFRAME}"
    configs += [
        Config(f"{agent}, no viewer", "agent", partial(run_agent, settings, workdir, False)),
        Config(
            f"{agent}, top every {POLL_INTERVAL:g} s",
            "agent-polled",
            partial(run_agent, settings, workdir, True),
        ),
    ]
    skipped = None
    if not settings.memray:
        skipped = "memray rows skipped: --no-memray"
    elif memray_version() is None:
        skipped = "memray rows skipped: memray is not importable (pip install memray)"
    else:
        configs += [
            Config("memray live", "memray", partial(run_memray, settings, workdir, False)),
            Config(
                "memray live --trace-python-allocators",
                "memray",
                partial(run_memray, settings, workdir, True),
            ),
        ]
    return configs, skipped


def measure_slowdown(settings: Settings, workdir: Path) -> tuple[list[Config], str | None]:
    """Run every configuration `repeats` times, round-robin (drift hits all alike)."""
    configs, skipped = slowdown_configs(settings, workdir)
    for _ in range(settings.repeats):
        for config in configs:
            config.runs.append(config.run())
    return configs, skipped


def viewer_note(config: Config) -> str:
    """What read the target while its loop ran, summed over the runs."""
    polls = sum(r.polls for r in config.runs)
    if config.kind == "agent-polled":
        fresh = sum(r.fresh for r in config.runs)
        pauses = [p for r in config.runs for p in r.pause_ms]
        pause = f", median pause {median(pauses):.1f} ms" if pauses else ""
        return f"{polls} tops in the loop, {fresh} with a fresh sample{pause}"
    if config.kind == "memray":
        return f"{polls} snapshots read"
    return ""


def slowdown_report(configs: list[Config], skipped: str | None, settings: Settings) -> str:
    """The slowdown table: loop seconds, ratio to no tracing, and what polled meanwhile."""
    seconds = {c.label: median([r.seconds for r in c.runs]) for c in configs}
    base = seconds[configs[0].label]
    idle = next(seconds[c.label] for c in configs if c.kind == "agent")
    rows = [
        [
            c.label,
            f"{seconds[c.label]:.3f}",
            ratio(seconds[c.label], base),
            ratio(seconds[c.label], idle) if c.kind == "agent-polled" else "",
            viewer_note(c),
        ]
        for c in configs
    ]
    headers = ["configuration", "loop s", "vs off", "vs idle agent", "viewer (all runs)"]
    lines = [
        f"3. Target slowdown: {settings.iterations:,} turns of dict/list/tuple/str churn, "
        f"{STACK_DEPTH} frames deep, {settings.resident:,} resident blocks",
        table(headers, rows),
        "   memray live (default) does not see pymalloc's small blocks; "
        "--trace-python-allocators does, like tracemalloc",
    ]
    if skipped:
        lines.append("   " + skipped)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run every measurement and print the report; non-zero only on errors."""
    settings = parse_args(argv)
    print(machine_header(settings), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="mtb-", dir="/tmp"))
    started = time.monotonic()
    try:
        pauses = {n: measure_pause(n, settings, workdir) for n in settings.blocks}
        print("\n" + pause_report(pauses), flush=True)
        configs, skipped = measure_slowdown(settings, workdir)
        print("\n" + slowdown_report(configs, skipped, settings))
    except (MemtopError, RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"bench_agent: {exc} (logs in {workdir})", file=sys.stderr)
        return 1
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
