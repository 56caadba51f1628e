"""What watching costs a real web service: requests/s and p99 latency, side by side.

    python benchmarks/bench_service.py [--python PATH ...] [--rounds N] [--requests N]

The service is benchmarks/service_app.py: a Flask app rendering Jinja2 pages, served by
waitress (4 threads, keep-alive) on loopback, in its own virtual environment per
interpreter (made on first use under --envs with this interpreter's pip: Flask, waitress
and the memray this process has). A load generator in this process sends a fixed number of
requests from --clients threads, each on one keep-alive connection, after a warm-up, and
times each request. Every configuration gets a fresh server:

* untraced;
* memtop attached in sampled mode at each --rates (the real attach chain: gdb before 3.14,
  sys.remote_exec from 3.14), a viewer asking for `top` once a second;
* the same at R = 16 GiB, which practically never samples: the cost of the hook alone;
* memtop attached in exact mode (tracemalloc) at nframe 1 and 4, the same viewer;
* `memray run --live-remote` with a reader taking a snapshot once a second (memray's
  default: it does not see pymalloc's small blocks), when memray runs on that interpreter.

A round runs every configuration once, back to back; a configuration's ratios are medians
over rounds of its figure ÷ untraced's in the same round, so they share the machine's
load. Two figures: requests/s (with p99 latency), which on a shared machine moves with
everything else running, and the server process's CPU time per request (all its threads,
memtop's agent and memray's tracker included), which is what watching costs the service
and moves much less with the load. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from memtop.attach.chain import attach
from memtop.client import AgentClient
from memtop.errors import MemtopError
from memtop.model import Query
from memtop.modes import ModeRequest, parse_rate

BENCH_DIR = Path(__file__).resolve().parent
APP = str(BENCH_DIR / "service_app.py")
PACKAGES = ["flask>=3", "waitress>=3"]
POLL_INTERVAL = 1.0
WARMUP = 300


def default_pythons() -> list[str]:
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(str(p) for p in pyenv.glob("3.12.*/bin/python3"))[-1:]
    optimized = "/opt/memtop-python3.14/usr/bin/python3.14"
    return found + ([optimized] if Path(optimized).exists() else [])


def memray_version() -> str | None:
    if importlib.util.find_spec("memray") is None:
        return None
    from importlib.metadata import version

    return version("memray")


def run_quiet(command: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@dataclass
class Env:
    """A target interpreter's virtual environment with the service's packages."""

    base: str
    python: str
    label: str
    memray: str | None  # why memray cannot run there, or None when it can


def ensure_env(base: str, envs: Path) -> Env:
    """The venv for `base` under `envs`, made and filled on first use."""
    label = run_quiet([base, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
    version = label.stdout.strip()
    if base.startswith("/opt/"):
        version += " (PGO/LTO)"
    venv = envs / ("svc-" + Path(base).resolve().as_posix().strip("/").replace("/", "_"))
    python = venv / "bin" / "python"
    if not python.exists():
        made = run_quiet([base, "-m", "venv", "--without-pip", str(venv)])
        if made.returncode != 0:
            raise SystemExit(f"{base}: cannot make a venv: {made.stderr.strip()[-300:]}")
    wanted = list(PACKAGES)
    ours = memray_version()
    if ours:
        wanted.append(f"memray=={ours}")
    check = run_quiet([str(python), "-c", "import flask, waitress"])
    if check.returncode != 0 or (ours and not has_memray(python)):
        pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
        done = run_quiet([*pip, *wanted])
        if done.returncode != 0 and ours:
            # memray has no build for every interpreter: the service runs without it.
            done = run_quiet([*pip, *PACKAGES])
        if done.returncode != 0:
            raise SystemExit(f"{base}: pip install failed: {done.stderr.strip()[-400:]}")
    why = None
    if not ours:
        why = "memray is not installed here (pip install memray)"
    elif not has_memray(python):
        why = f"memray {ours} does not install on this interpreter"
    return Env(base, str(python), version, why)


def has_memray(python: Path) -> bool:
    return run_quiet([str(python), "-c", "import memray"]).returncode == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- load ---------------------------------------------------------------------------


def paths(client: int, count: int) -> list[str]:
    """The requests of one client: home pages, category pages and item pages."""
    categories = ["books", "garden", "kitchen", "music", "outdoor", "toys", "tools", "games"]
    out = []
    for n in range(count):
        k = n * 7 + client * 131
        if n % 4 == 0:
            out.append(f"/?page={k % 50}")
        elif n % 4 in (1, 2):
            out.append(f"/item/{k % 2000}?visitor=v{(k // 3) % 900}")
        else:
            out.append(f"/category/{categories[k % 8]}?page={k % 6}&visitor=v{k % 900}")
    return out


def load(port: int, clients: int, per_client: int) -> tuple[float, list[float]]:
    """Send per_client requests from each of `clients` threads, each thread on one
    keep-alive connection; returns (wall seconds, latencies in seconds)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            start.wait()
            for path in paths(index, per_client):
                began = time.perf_counter()
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                if response.status != 200 or not body:
                    raise RuntimeError(f"{path}: HTTP {response.status}")
                latencies[index].append(time.perf_counter() - began)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"load failed: {errors[0]!r}")
    return elapsed, [t for each in latencies for t in each]


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


# --- configurations -----------------------------------------------------------------


class Poller(threading.Thread):
    """Calls `refresh()` every POLL_INTERVAL seconds until stop() (or it returns False)."""

    def __init__(self, refresh: Callable[[], bool]) -> None:
        super().__init__(daemon=True)
        self.refresh = refresh
        self.stopped = threading.Event()
        self.count = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                began = time.monotonic()
                if not self.refresh():
                    return
                self.count += 1
                self.stopped.wait(max(0.0, began + POLL_INTERVAL - time.monotonic()))
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.stopped.set()
        self.join(30.0)
        if self.error is not None:
            raise RuntimeError(f"viewer failed: {self.error!r}") from self.error


@dataclass
class Config:
    label: str
    kind: str  # untraced | sampled | exact | memray
    rate: int = 0
    nframe: int = 4


@dataclass
class Result:
    rps: float
    p99_ms: float
    cpu_ms: float  # the server process's CPU time per request (all its threads)
    polls: int
    note: str = ""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far, every thread included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for step in reversed(self.cleanup):
            try:
                step()
            except Exception:
                pass
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(env: Env, workdir: Path, prefix: list[str], port: int) -> Server:
    ready = workdir / f"ready-{time.monotonic_ns()}"
    log = workdir / "server.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [env.python, *prefix, APP, str(port), str(ready)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(process, port, log)


def wait_ready(server: Server, ready_dir: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}; see {server.log}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen within {timeout:.0f} s; see {server.log}")


def viewer(client: AgentClient) -> Poller:
    """A memtop viewer at 1 Hz: the `top` request `memtop -i 1` sends."""
    query = Query(limit=50)

    def refresh() -> bool:
        try:
            client.request("top", **query.top_args(POLL_INTERVAL * 0.9))
        except MemtopError:
            return False
        return True

    return Poller(refresh)


def run_config(config: Config, env: Env, workdir: Path, clients: int, requests: int) -> Result:
    port = free_port()
    note = ""
    if config.kind == "memray":
        prefix = ["-m", "memray", "run", "--live-remote", "--live-port", str(free_port()), "-q"]
        server = start_server(env, workdir, prefix, port)
    else:
        server = start_server(env, workdir, [], port)
    poller: Poller | None = None
    try:
        if config.kind == "memray":
            import memray

            live_port = int(prefix[prefix.index("--live-port") + 1])
            reader = connect_memray(memray, live_port, server)
            server.cleanup.append(lambda: reader.__exit__(None, None, None))

            def snapshot() -> bool:
                if not reader.is_active:
                    return False
                list(reader.get_current_snapshot(merge_threads=True))
                return True

            poller = Poller(snapshot)
        wait_ready(server, workdir)
        if config.kind in ("sampled", "exact"):
            mode = ModeRequest(config.kind, config.rate or 256 * 1024, explicit=True)
            attached = attach(server.process.pid, nframe=config.nframe, timeout=30.0, mode=mode)
            server.cleanup.append(attached.client.close)
            note = attached.how
            poller = viewer(attached.client)
        load(port, clients, max(1, WARMUP // clients))
        if poller is not None:
            poller.start()
        cpu = cpu_seconds(server.process.pid)
        elapsed, latencies = load(port, clients, requests // clients)
        cpu = cpu_seconds(server.process.pid) - cpu
        polls = 0
        if poller is not None:
            poller.stop()
            polls = poller.count
        served = len(latencies)
        return Result(served / elapsed, p99(latencies) * 1e3, cpu / served * 1e3, polls, note)
    finally:
        server.stop()


def connect_memray(memray, port: int, server: Server):  # type: ignore[no-untyped-def]
    """memray's reader; the tracked program waits for it before its first line runs."""
    deadline = time.monotonic() + 60
    while True:
        try:
            reader = memray.SocketReader(port=port)
            reader.__enter__()
            return reader
        except Exception:
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"memray did not start; see {server.log}") from None
            time.sleep(0.2)


def kib(rate: int) -> str:
    return f"{rate // 1024} KiB" if rate < 1 << 20 else f"{rate >> 20} MiB"


def configs(rates: list[int]) -> list[Config]:
    out = [Config("untraced", "untraced")]
    for rate in rates:
        default = " (default)" if rate == 256 * 1024 else ""
        out.append(Config(f"memtop sampled, R = {kib(rate)}{default}", "sampled", rate=rate))
    # The sampler's hook with a rate it practically never reaches: the price of any hook.
    out.append(Config("memtop sampled, R = 16 GiB (the bare hook)", "sampled", rate=1 << 34))
    out.append(Config("memtop exact (tracemalloc), nframe 1", "exact", nframe=1))
    out.append(Config("memtop exact (tracemalloc), nframe 4", "exact", nframe=4))
    out.append(Config("memray live (`--live-remote`)", "memray"))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", dest="pythons")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=1200, help="measured per config")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--rates", default="256K,64K,1M", help="sampled rates, the first being the default"
    )
    parser.add_argument("--envs", type=Path, default=Path(tempfile.gettempdir()) / "memtop-bench")
    parser.add_argument(
        "--kinds",
        default="sampled,exact,memray",
        help="which to compare with untraced (a shorter list leaves time for more rounds)",
    )
    args = parser.parse_args(argv)
    rates = [parse_rate(r) for r in args.rates.split(",")]
    kinds = {"untraced", *args.kinds.split(",")}
    args.envs.mkdir(parents=True, exist_ok=True)
    envs = [ensure_env(p, args.envs) for p in args.pythons or default_pythons()]
    table = [c for c in configs(rates) if c.kind in kinds]
    results: dict[tuple[str, str], list[Result]] = {}
    load_seen: list[float] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="msvc") as tmp:
        workdir = Path(tmp)
        for round_no in range(args.rounds):
            for env in envs:
                # Rotate the order so that no configuration always runs first.
                shift = round_no % len(table)
                for config in table[shift:] + table[:shift]:
                    if config.kind == "memray" and env.memray:
                        continue
                    load_seen.append(os.getloadavg()[0])
                    result = run_config(config, env, workdir, args.clients, args.requests)
                    results.setdefault((env.label, config.label), []).append(result)
                    print(
                        f"round {round_no + 1} {env.label} {config.label}: "
                        f"{result.rps:.0f} req/s, p99 {result.p99_ms:.1f} ms, "
                        f"{result.cpu_ms:.2f} ms CPU/request",
                        file=sys.stderr,
                    )
    print(
        f"machine: {os.cpu_count()} CPUs shared with other work, load average "
        f"{min(load_seen):.1f}-{max(load_seen):.1f} during the run; {args.rounds} rounds of "
        f"{args.requests} requests from {args.clients} keep-alive clients per configuration "
        f"({time.monotonic() - began:.0f} s in all)\n"
    )
    headers = ["configuration"]
    for env in envs:
        headers += [f"{env.label}: req/s (÷)", "p99 ms", "CPU per request (÷)"]
    rows = []
    for config in table:
        row = [config.label]
        for env in envs:
            runs = results.get((env.label, config.label))
            if not runs:
                row += ["—", env.memray or "not run", "—"]
                continue
            base = results[(env.label, "untraced")]
            slow = [b.rps / r.rps for b, r in zip(base, runs, strict=False)]
            cpu = [r.cpu_ms / b.cpu_ms for b, r in zip(base, runs, strict=False)]
            row += [
                f"{statistics.median(r.rps for r in runs):.0f} "
                f"({statistics.median(slow):.2f}× [{min(slow):.2f}-{max(slow):.2f}])",
                f"{statistics.median(r.p99_ms for r in runs):.1f}",
                f"{statistics.median(r.cpu_ms for r in runs):.2f} ms "
                f"({statistics.median(cpu):.3f}× [{min(cpu):.2f}-{max(cpu):.2f}])",
            ]
        rows.append(row)
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
