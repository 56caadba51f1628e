"""What a hostile viewer can cost the program: its loop speed while a client sends
`types`, `referrers` and distinct filters as fast as it can (never waiting when told the
agent is busy), and its RSS after a client sent many distinct filters with a huge max_age.

Run it once with this checkout and once with an older one (the agent is loaded from the
memtop next to this script) to compare. Prints a table; about a minute.

    python benchmarks/bench_agent_abuse.py [--files 10000] [--seconds 15] [--filters 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memtop.attach.runner import start_program  # noqa: E402
from memtop.client import AgentClient  # noqa: E402
from memtop.errors import AgentError  # noqa: E402

TARGET = str(ROOT / "benchmarks" / "abuse_target.py")
MIB = 1024 * 1024


def read_state(path: Path) -> dict:
    while True:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)


def speed(state: Path, seconds: float) -> float:
    """The program's loop turns per second over `seconds`."""
    first = read_state(state)
    time.sleep(seconds)
    last = read_state(state)
    return (last["turns"] - first["turns"]) / (last["time"] - first["time"])


def connect(program) -> AgentClient:  # type: ignore[no-untyped-def]
    client = AgentClient.connect(program.socket_path, program.token, expected_pid=program.pid)
    client.busy_wait = 0.0  # an abuser never waits (older clients have no such wait)
    return client


class Abuser(threading.Thread):
    """Sends one kind of request in a loop until stopped; counts answers and refusals."""

    def __init__(self, program, kind: str) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.client = connect(program)
        self.kind = kind
        self.stop = threading.Event()
        self.answered = self.busy = 0

    def run(self) -> None:
        index = 0
        while not self.stop.is_set():
            index += 1
            try:
                if self.kind == "types":
                    self.client.request("types", limit=200)
                elif self.kind == "referrers":
                    self.client.request("referrers", type="list", timeout=10.0)
                else:
                    patterns = ["/srv/*", f"*never{index}*"]
                    self.client.request("top", include=patterns, max_age=1e9, limit=500)
                self.answered += 1
            except AgentError as exc:
                if exc.code != "busy":
                    raise
                self.busy += 1


def start(work: Path, files: int, budget: float = 0.05):  # type: ignore[no-untyped-def]
    state = work / f"abuse-{time.monotonic_ns()}.json"
    program = start_program(
        TARGET,
        [str(state), str(files)],
        log_path=str(work / "abuse.log"),
        agent_config={"budget": budget},
    )
    read_state(state)
    time.sleep(1.0)  # the program's loop settles
    return program, state


def loop_speeds(work: Path, files: int, seconds: float) -> list[tuple[str, float, str]]:
    program, state = start(work, files)
    try:
        rows = [("no requests", speed(state, seconds), "")]
        for kind in ("types", "referrers", "filters"):
            abuser = Abuser(program, kind)
            abuser.start()
            measured = speed(state, seconds)
            abuser.stop.set()
            abuser.join(timeout=60)
            abuser.client.close()
            note = f"{abuser.answered} answered, {abuser.busy} told busy"
            print(f"  ({kind}: {measured:,.0f} turns/s, {note})", file=sys.stderr, flush=True)
            rows.append((f"a loop of {kind}", measured, note))
        return rows
    finally:
        program.stop(grace=2.0)


def filter_growth(work: Path, files: int, filters: int) -> tuple[int, int, float]:
    """RSS before and after `filters` distinct filter configs, and the seconds it took.
    The agent's budget is 1 here, so that every config is grouped without waiting: what
    is measured is what the agent keeps."""
    program, state = start(work, files, budget=1.0)
    client = AgentClient.connect(program.socket_path, program.token, expected_pid=program.pid)
    try:
        client.request("top", max_age=0)
        before = read_state(state)["rss"]
        started = time.monotonic()
        for index in range(filters):
            while True:
                try:
                    client.request("top", include=["/srv/*", f"*never{index}*"], max_age=1e9)
                    break
                except AgentError as exc:
                    if exc.code != "busy":
                        raise
                    time.sleep(getattr(exc, "retry_in", 0.1))
        took = time.monotonic() - started
        time.sleep(0.5)
        return before, read_state(state)["rss"], took
    finally:
        client.close()
        program.stop(grace=2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--filters", type=int, default=60)
    args = parser.parse_args()
    revision = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    ).stdout.strip()
    print("memtop agent under abuse")
    print(f"agent    {ROOT / 'memtop' / 'agent'} ({revision or 'no git'})")
    print(f"python   {sys.version.split()[0]} ({sys.executable})")
    print(f"target   {args.files:,} allocation files, agent budget 0.05, nframe 4")
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="mab") as tmp:
        work = Path(tmp)
        rows = loop_speeds(work, args.files, args.seconds)
        normal = rows[0][1]
        print(f"\n1. The program's loop while one client sends requests ({args.seconds:g} s each)")
        print(f"{'client':<22} {'turns/s':>12} {'vs normal':>9}  requests")
        print(f"{'-' * 22} {'-' * 12} {'-' * 9}  {'-' * 30}")
        for label, value, note in rows:
            print(f"{label:<22} {value:>12,.0f} {value / normal:>8.2f}x  {note}")
        before, after, took = filter_growth(work, args.files, args.filters)
        print(
            f"\n2. RSS after {args.filters} distinct filters with max_age 1e9 "
            "(one client, agent budget 1: each one grouped)"
        )
        print(f"{'RSS before':>12} {'RSS after':>12} {'growth':>10} {'seconds':>8}")
        print(
            f"{before / MIB:>8.1f} MiB {after / MIB:>8.1f} MiB "
            f"{(after - before) / MIB:>6.1f} MiB {took:>8.1f}"
        )


if __name__ == "__main__":
    main()
