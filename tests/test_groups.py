"""Programs that are several processes: `memtop ps --tree` shows the structure, and
`memtop PID --children` watches a real gunicorn pool and a multiprocessing pool as one table."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
from conftest import (
    ROOT,
    TARGETS,
    Plain,
    free_port,
    marked_lines,
    memtop_cli,
    need_interpreter,
    wait_for,
    wait_state,
)
from ui_fakes import CWD, T0, FakeSource, header, settle, table_lines, told

from memtop.children import children_of
from memtop.group import GroupSource, ProcessTotals
from memtop.group_ranks import completions
from memtop.model import Frame, Query, Refresh, Row, TableInfo
from memtop.source import HeapInspection, LiveControls, LiveSource, Snapshots
from memtop.ui.app import MemtopApp

APP = str(TARGETS / "wsgi_leaky.py")
REQUEST_LEAK = marked_lines(TARGETS / "wsgi_leaky.py")["request_leak"]
POOL = str(TARGETS / "pool.py")
WORKER_LEAK = marked_lines(TARGETS / "pool.py")["worker_leak"]


def test_ps_tree_puts_pool_workers_under_their_parent(plain: Plain, short_tmp: Path) -> None:
    proc, state = plain.start(sys.executable, "pool.py", "2")
    workers = wait_state(state, lambda s: len(s.get("workers", [])) == 2)["workers"]
    listed = json.loads(memtop_cli("ps", "--tree", "--json").stdout)
    mine = [row for row in listed if row["pid"] in (proc.pid, *workers)]
    assert mine[0]["pid"] == proc.pid
    top = mine[0]["depth"]  # the test runner above it is a Python process too
    assert {row["pid"]: row["depth"] for row in mine} == {
        proc.pid: top,
        **{worker: top + 1 for worker in workers},
    }
    assert all(row["ppid"] == proc.pid for row in mine[1:])
    text = memtop_cli("ps", "--tree", env={**os.environ, "COLUMNS": "300"}).stdout.splitlines()
    at = next(i for i, line in enumerate(text) if line.split()[0] == str(proc.pid))
    below = text[at + 1 : at + 3]
    assert {int(line.split()[0]) for line in below} == set(workers)
    assert all("└─ " in line for line in below)


# --- watching a group ---------------------------------------------------------------------


class Stream:
    """A running `memtop ... --json`: its JSON lines and its notes, read as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memtop", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[dict] = []
        self.notes: list[str] = []
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.notes.append(line.rstrip())

    def wait_note(self, text: str, timeout: float = 60) -> str:
        def found() -> str | None:
            if self.proc.poll() is not None and not any(text in n for n in self.notes):
                raise AssertionError(f"memtop ended: {self.notes}")
            return next((n for n in self.notes if text in n), None)

        return str(wait_for(found, timeout, repr(text)))

    def next_line(self, check: Callable[[dict], bool], timeout: float = 60) -> dict:
        seen = len(self.lines)

        def found() -> dict | None:
            return next((line for line in self.lines[seen:] if check(line)), None)

        return dict(wait_for(found, timeout, "a refresh"))

    def stop(self) -> int:
        """Ctrl-C: memtop detaches from every process and exits 130 (interrupted)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def row_at(line: dict, filename: str, lineno: int) -> dict | None:
    return next(
        (r for r in line["rows"] if r["filename"] == filename and r["lineno"] == lineno), None
    )


@pytest.fixture
def gunicorn(short_tmp: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """A real gunicorn master with 3 sync workers serving tests/targets/wsgi_leaky.py."""
    pytest.importorskip("gunicorn", reason="gunicorn is a test dependency (pip install -e .[test])")
    port = free_port()
    master = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "3", "-b", f"127.0.0.1:{port}",
         "--chdir", str(TARGETS), "--graceful-timeout", "2", "wsgi_leaky:app"],
        stdout=subprocess.DEVNULL, stderr=(short_tmp / "gunicorn.log").open("w"),
    )  # fmt: skip
    try:
        wait_for(lambda: len(children_of(master.pid)) == 3, 30, "gunicorn's 3 workers")
        yield master, port
    finally:
        master.terminate()
        try:
            master.wait(timeout=20)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()


def load(port: int, path: str, requests: int) -> dict[int, int]:
    """Send `requests` GETs (one connection each, so every worker gets some); returns
    {worker pid: requests it answered}."""
    served: dict[int, int] = {}
    for _ in range(requests):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            pid = int(reply.read().split()[0])
        served[pid] = served.get(pid, 0) + 1
    return served


def test_a_gunicorn_pool_is_one_table_and_a_recycled_worker_joins(gunicorn) -> None:
    master, port = gunicorn
    workers = children_of(master.pid)
    # Exact mode: the test counts blocks per worker.
    watch = Stream(
        str(master.pid), "--children", "--mode", "exact", "--json", "-i", "1", "-n", "120"
    )
    try:
        watch.wait_note("watching 4 processes")
        first = watch.next_line(lambda line: len(line.get("processes", [])) == 4)
        assert {p["pid"] for p in first["processes"]} == {master.pid, *workers}
        served = load(port, "/leak", 90)
        line = watch.next_line(
            lambda line: (row_at(line, APP, REQUEST_LEAK) or {}).get("count", 0) >= 90
        )
        row = row_at(line, APP, REQUEST_LEAK)
        assert row is not None
        # Summed over the workers, each worker's part matching the requests it answered.
        assert row["size"] == sum(part["size"] for part in row["pids"])
        parts = {part["pid"]: part for part in row["pids"]}
        for pid, count in served.items():
            # One block per request, and the list keeping them (its array grows there too).
            assert count <= parts[pid]["count"] <= count + 1, (pid, parts)
            assert 10000 * count <= parts[pid]["size"] <= 10100 * count + 4096
        assert line["rss"] == sum(p["rss"] for p in line["processes"])
        # A worker killed: gunicorn starts another, memtop drops one and attaches the other.
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        watch.wait_note(f"pid {victim}")
        joined = watch.wait_note("new child")
        newcomer = int(joined.split("new child ", 1)[1].split()[0])
        assert newcomer not in workers and newcomer in children_of(master.pid)
        watch.next_line(lambda line: newcomer in {p["pid"] for p in line["processes"]})
    finally:
        code = watch.stop()
    assert code == 130, watch.notes
    assert not any("Traceback" in note for note in watch.notes)


def test_a_multiprocessing_pool_is_watched_as_one(plain: Plain) -> None:
    proc, state = plain.start(sys.executable, "pool.py", "2")
    workers = wait_state(state, lambda s: len(s.get("workers", [])) == 2)["workers"]
    watch = Stream(str(proc.pid), "--children", "--json", "-i", "0.5", "-n", "120")
    try:
        line = watch.next_line(
            lambda line: len((row_at(line, POOL, WORKER_LEAK) or {}).get("pids", [])) == 2
        )
        row = row_at(line, POOL, WORKER_LEAK)
        assert row is not None and {p["pid"] for p in row["pids"]} == set(workers)
        assert row["size"] == sum(p["size"] for p in row["pids"])
    finally:
        code = watch.stop()
    assert code == 130, watch.notes


LINES_POOL = TARGETS / "lines_pool.py"
LINE = marked_lines(LINES_POOL)
MB = 1 << 20


@pytest.mark.parametrize(
    "sizes",
    [
        # c ranks first overall (9 MB), but third in the first worker.
        [{"a": 5 * MB, "b": 4 * MB, "c": 3 * MB}, {"c": 6 * MB, "d": 1 * MB}],
        # e ranks first overall (6 MB), but third in every worker.
        [{"a": 5 * MB, "b": 4 * MB, "e": 3 * MB}, {"c": 9 * MB // 2, "d": 4 * MB, "e": 3 * MB}],
    ],
    ids=["below-the-top-in-one-worker", "below-the-top-in-every-worker"],
)
def test_a_merged_row_holds_every_workers_share(plain: Plain, sizes: list[dict]) -> None:
    """Each worker ranks its own rows; a row of the merged top 2 that some worker ranks
    third still counts that worker's share, and ranks where its sum puts it."""
    _, state = plain.start(
        sys.executable, "lines_pool.py", json.dumps(sizes), python_args=["-X", "tracemalloc"]
    )
    ready = wait_state(state, lambda s: "held" in s, timeout=30)
    held = {int(pid): lines for pid, lines in ready["held"].items()}
    totals = {name: sum(lines.get(name, 0) for lines in held.values()) for name in LINE}
    expected = sorted(totals, key=lambda name: -totals[name])[:2]
    assert totals[expected[1]] > max(totals[n] for n in LINE if n not in expected)
    done = memtop_cli(
        *map(str, held), "--mode", "exact", "--json", "-n", "1", "-l", "2", timeout=120
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout.splitlines()[-1])["rows"]
    assert [(r["filename"], r["lineno"]) for r in rows] == [
        (str(LINES_POOL), LINE[name]) for name in expected
    ]
    for row, name in zip(rows, expected, strict=True):
        assert row["size"] == totals[name]
        parts = {part["pid"]: part["size"] for part in row["pids"]}
        assert parts == {pid: lines[name] for pid, lines in held.items() if name in lines}


# --- the live view of a group ---------------------------------------------------------------


class FakeGroup(FakeSource):
    """The fake program as two processes: 101 holds 60 % of every row, 102 the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.members = {101: None, 102: None}
        self.focus: int | None = None
        self.info = dataclasses.replace(self.info, how="group", cmdline="2 processes: 101 102")

    def sample(self, query: Query, n: int) -> Refresh:
        whole = super().sample(query, n)
        split = {
            pid: tuple(
                dataclasses.replace(row, size=row.size * share // 10, count=row.count * share // 10)
                for row in whole.rows
            )
            for pid, share in ((101, 6), (102, 4))
        }
        processes = tuple(
            ProcessTotals(pid, whole.rss, whole.uss, whole.traced_current, 0, 0, len(whole.rows))
            for pid in (101, 102)
        )
        if self.focus is not None:
            return dataclasses.replace(whole, rows=split[self.focus], processes=processes)
        rows = tuple(
            dataclasses.replace(
                row, procs=((101, row.size * 6 // 10, 1), (102, row.size * 4 // 10, 1))
            )
            for row in whole.rows
        )
        return dataclasses.replace(whole, rows=rows, processes=processes)


async def test_the_live_view_merges_a_group_and_p_shows_each_process() -> None:
    source = FakeGroup()
    app = MemtopApp(source, Query(), 1.0, clock=lambda: T0 + 90, cwd=CWD, autorefresh=False)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        assert "PROCS" in table_lines(app)[0]
        assert "2 processes merged" in header(app)
        await pilot.press("enter")
        await settle(pilot)
        body = str(app.screen.query_one("#traceback-body").render())
        assert "per process" in body and "pid 101" in body and "60%" in body
        await pilot.press("escape")
        await pilot.press("p")
        await settle(pilot)
        assert source.focus == 101 and "pid 101 of 2 processes" in header(app)
        assert "PROCS" not in table_lines(app)[0]
        await pilot.press("p", "p")
        await settle(pilot)
        assert source.focus is None and "2 processes merged" in header(app)


@pytest.mark.parametrize("key", ["o", "w", "S"])
async def test_heap_walks_and_snapshots_of_a_group_are_off_and_say_why(key: str) -> None:
    """A group has LiveControls but walks no heap and saves no snapshot: the key is off and
    names the processes to watch one at a time."""
    fakes = {101: FakeSource(), 102: FakeSource()}
    members = cast("dict[int, LiveSource]", fakes)
    group = GroupSource(members, members.__getitem__, lambda text: None)
    assert isinstance(group, LiveControls)
    assert not isinstance(group, HeapInspection) and not isinstance(group, Snapshots)
    app = MemtopApp(group, Query(), 1.0, clock=lambda: T0 + 90, cwd=CWD, autorefresh=False)
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            await settle(pilot)
            assert app.check_action("types", ()) is None
            await pilot.press(key)
            await settle(pilot)
            assert app.screen is app.screen_stack[0]  # no types view, no panel
            assert any("one process's heap" in m and "101 102" in m for m in told(app))
            assert not any("snapshot" in c or "types" in c for m in fakes.values() for c in m.calls)
    finally:
        group.close()


FAMILY = """
import json, subprocess, sys, time
nap = "import time; time.sleep(300)"
kids = [subprocess.Popen([sys.argv[2], "-c", nap]),
        subprocess.Popen([sys.argv[3], "-X", "disable-remote-debug", "-c", nap])]
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump({"children": [k.pid for k in kids]}, f)
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(300)
"""


def test_a_child_that_refuses_attach_leaves_the_rest_of_the_group_watched(
    short_tmp: Path,
) -> None:
    """Only the pids typed are required; a child found by --children may refuse (it opted
    out, belongs to another user, or ended meanwhile) and the group goes on without it."""
    opted_out = need_interpreter("3.14")
    script, state = short_tmp / "family.py", short_tmp / "family.json"
    script.write_text(FAMILY)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(state), sys.executable, opted_out],
        start_new_session=True,
    )
    try:
        willing, refusing = wait_state(state)["children"]
        wait_for(lambda: len(children_of(parent.pid)) == 2, 30, "both children to run Python")
        done = memtop_cli(str(parent.pid), "--children", "--json", "-n", "1", timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        line = json.loads(done.stdout.splitlines()[-1])
        assert {p["pid"] for p in line["processes"]} == {parent.pid, willing}
        assert f"child {refusing} not attached" in done.stderr
        assert "opted out" in done.stderr
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_a_stopped_worker_does_not_hold_up_the_group(plain: Plain) -> None:
    """A process that stops answering (SIGSTOP) keeps its last table; the others refresh
    on, and quitting does not wait for it."""
    proc, state = plain.start(sys.executable, "pool.py", "2")
    workers = wait_state(state, lambda s: len(s.get("workers", [])) == 2)["workers"]
    watch = Stream(str(proc.pid), "--children", "--json", "-i", "0.5", "-n", "1000")
    stopped = workers[0]
    try:
        watch.next_line(lambda line: len(line.get("processes", [])) == 3)
        os.kill(stopped, signal.SIGSTOP)
        watch.wait_note(f"pid {stopped} is not answering", timeout=20)
        seen = len(watch.lines)
        # The client's own timeout is 60 s: three refreshes in 20 s means nobody waited it.
        wait_for(lambda: len(watch.lines) >= seen + 3, 20, "refreshes with a worker stopped")
        assert {p["pid"] for p in watch.lines[-1]["processes"]} == {proc.pid, *workers}
        # The table merged with a stopped process's last one is as old as that one: it ages.
        wait_for(lambda: watch.lines[-1]["table"]["age"] > 5, 20, "the stopped table to age")
        assert not watch.lines[-1]["table"]["fresh"]
        watch.proc.send_signal(signal.SIGINT)
        code = watch.proc.wait(timeout=20)
    finally:
        os.kill(stopped, signal.SIGCONT)
        watch.stop()
    assert code == 130, watch.notes
    assert not any("Traceback" in note for note in watch.notes)


def test_a_rows_tracebacks_come_from_the_processes_that_still_answer(plain: Plain) -> None:
    """Enter on a row held by two workers, one killed and one stopped meanwhile: the panel
    gets what the answering processes hold, promptly, instead of an error or a 60 s wait."""
    from memtop.attach.chain import attach
    from memtop.group import GroupSource
    from memtop.source import LiveSource

    _, state = plain.start(sys.executable, "pool.py", "3")
    workers = wait_state(state, lambda s: len(s.get("workers", [])) == 3)["workers"]

    def attach_member(pid: int) -> LiveSource:
        attached = attach(pid, "auto", 4, 30.0, False)
        return LiveSource(attached.client, pid, attached.how, token=attached.token)

    notes: list[str] = []
    group = GroupSource({pid: attach_member(pid) for pid in workers}, attach_member, notes.append)
    query = Query()
    killed, stopped, _ = workers  # the third answers
    try:

        def leak_row() -> object:
            sample = group.refresh(query, 0.5)
            row = next(
                (r for r in sample.rows if (r.filename, r.lineno) == (POOL, WORKER_LEAK)), None
            )
            return row if row is not None and len(row.procs) == 3 else None

        row = wait_for(leak_row, 30, "the leaking line in all three workers")
        os.kill(killed, signal.SIGKILL)
        os.kill(stopped, signal.SIGSTOP)
        wait_for(lambda: not psutil_alive(killed), 10, "the killed worker to end")
        got: list[object] = []
        asking = threading.Thread(target=lambda: got.append(group.tracebacks(query, row)))
        asking.start()
        # The client's own timeout is 60 s: an answer within 30 s means nobody waited it.
        wait_for(lambda: got, 30, "the row's tracebacks")
        entries = got[0]
        assert isinstance(entries, list) and entries
        assert all(e.frames[-1].lineno == WORKER_LEAK for e in entries)
    finally:
        os.kill(stopped, signal.SIGCONT)
        group.close()


def psutil_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_a_baseline_is_set_in_the_processes_that_still_answer(plain: Plain) -> None:
    """`b` with one worker killed and one stopped: the others take the baseline, at once."""
    from memtop.attach.chain import attach
    from memtop.group import GroupSource
    from memtop.source import LiveSource

    _, state = plain.start(sys.executable, "pool.py", "3")
    workers = wait_state(state, lambda s: len(s.get("workers", [])) == 3)["workers"]

    def attach_member(pid: int) -> LiveSource:
        attached = attach(pid, "auto", 4, 30.0, False)
        return LiveSource(attached.client, pid, attached.how, token=attached.token)

    group = GroupSource({pid: attach_member(pid) for pid in workers}, attach_member, print)
    killed, stopped, answering = workers
    try:
        group.refresh(Query(), 0.5)
        os.kill(killed, signal.SIGKILL)
        os.kill(stopped, signal.SIGSTOP)
        wait_for(lambda: not psutil_alive(killed), 10, "the killed worker to end")
        outcome: list[object] = []

        def set_baseline() -> None:
            try:
                group.set_baseline()
                outcome.append("set")
            except Exception as exc:
                outcome.append(exc)

        threading.Thread(target=set_baseline).start()
        # The client's own timeout is 60 s: an answer within 30 s means nobody waited it.
        wait_for(lambda: outcome, 30, "the baseline")
        assert outcome == ["set"]
        sample = group.refresh(Query(compare="baseline"), 0.5)
        assert answering in {p.pid for p in sample.processes}
    finally:
        os.kill(stopped, signal.SIGCONT)
        group.close()


def ranked(limit: int, total: int, *rows: tuple[str, int]) -> Refresh:
    """A process's reply: its top `limit` of `total` rows, as (key, size_diff)."""
    table = TableInfo(1, T0, 0.0, True, 0.0, 1.0, 0.05)
    return Refresh(
        pid=0, time=T0, query=Query(limit=limit, sort="size_diff"), rss=None, uss=None,
        traced_current=0, traced_peak=0, tracemalloc_memory=0, traced_blocks=None, nframe=1,
        work_ms=0.0, table=table, total_rows=total,
        rows=tuple(
            Row(key, key, 1, max(diff, 0), 1, diff, 0, "", (Frame(key, 1),)) for key, diff in rows
        ),
    )  # fmt: skip


def test_changes_that_may_cancel_out_are_asked_of_every_process() -> None:
    """Sorted by the size of a change, a process's unsent rows may have grown or shrunk
    by as much as its last sent row: a row's sum over processes may cancel out or add up,
    so each process is asked for what the other sent, and for deeper ranks."""
    query = Query(limit=1, sort="size_diff")
    grew, shrank = ranked(1, 10, ("a.py", 100)), ranked(1, 10, ("b.py", -90))
    asks = completions({1: grew, 2: shrank}, query)
    assert {pid: (ask.depth, [r.key for r in ask.rows]) for pid, ask in asks.items()} == {
        1: (4, ["b.py"]),
        2: (4, ["a.py"]),
    }
    # Every row sent by both, and nothing left unsent: nothing to ask.
    both = ("a.py", 100), ("b.py", -90)
    assert completions({1: ranked(2, 2, *both), 2: ranked(2, 2, *both)}, query) == {}


def test_a_groups_table_id_grows_when_a_worker_leaves(plain: Plain) -> None:
    """The history takes a trend point per new table id: a worker that leaves must not
    make the id fall back or repeat one the group already showed."""
    from memtop.attach.chain import attach
    from memtop.group import GroupSource
    from memtop.source import LiveSource

    _, state = plain.start(sys.executable, "pool.py", "3")
    workers = wait_state(state, lambda s: len(s.get("workers", [])) == 3)["workers"]

    def attach_member(pid: int) -> LiveSource:
        attached = attach(pid, "auto", 4, 30.0, False)
        return LiveSource(attached.client, pid, attached.how, token=attached.token)

    members = {pid: attach_member(pid) for pid in workers}
    for member in members.values():  # each agent some tables ahead of the group's first
        wait_for(lambda m=member: m.refresh(Query(), 0.0).table.sample_id >= 5, 60, "tables")  # type: ignore[misc]
    group = GroupSource(members, attach_member, print)
    ids: list[int] = []

    def refresh() -> Refresh:
        sample = group.refresh(Query(), 0.0)
        ids.append(sample.table.sample_id)
        return sample

    try:
        refresh()
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: len(refresh().processes) == 2, 30, "the killed worker to drop out")
        dropped = len(ids) - 1
        wait_for(lambda: refresh().table.sample_id > ids[dropped], 30, "a table after that")
    finally:
        group.close()
    assert ids == sorted(ids), ids
    assert ids[dropped] > max(ids[:dropped]), ids


def reuse_pids(short_tmp: Path, watcher: str) -> dict:
    """What tests/pid_reuse_driver.py saw `watcher` (group or export) take in, the driver run
    as pid 1 of a pid namespace of its own, where it hands pids out for real."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to hand pids out in a pid namespace (CI runs as root)")
    run = short_tmp / "run"
    run.mkdir(mode=0o700)  # the namespace's agents' sockets: apart from everyone else's
    driver = subprocess.Popen(
        [unshare, "--pid", "--fork", "--mount-proc", sys.executable,
         str(ROOT / "tests" / "pid_reuse_driver.py"), watcher],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(run)}, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    if "Operation not permitted" in err:
        pytest.skip(f"pid namespaces are not allowed here: {err.strip()}")
    assert driver.returncode == 0, err
    return dict(json.loads(out.splitlines()[-1]))


def test_a_pid_that_names_another_process_by_now_is_not_taken_in(short_tmp: Path) -> None:
    """--children follows processes, not pids: a child that ends between being found and
    being attached, its pid given to an unrelated program, is not attached as that child;
    and once the parent ends, the children of the next program given its pid are not
    adopted. The pids are really reused, in a pid namespace of the test's own."""
    seen = reuse_pids(short_tmp, "group")
    assert seen["first"] in seen["after_swap"]
    assert seen["second"] not in seen["after_swap"], seen
    assert any(f"child {seen['second']} not attached" in n for n in seen["notes"]), seen
    assert seen["its_child"] not in seen["after_parent"], seen
    assert seen["after_parent"] == sorted([seen["first"], seen["other"]]), seen


def test_export_children_follows_processes_not_pids(short_tmp: Path) -> None:
    """`memtop export --children` as the group view: the stranger given a listed child's pid
    before it was attached is neither attached nor served, a new child given an ended
    child's pid is, and the child of the program given the ended parent's pid is not; the
    parent's series go, a later child's come."""
    seen = reuse_pids(short_tmp, "export")
    assert "failed" not in seen and seen["code"] == 0, seen
    first, second, its_child = seen["first"], seen["second"], seen["its_child"]
    assert seen["after_swap"] == sorted([seen["family"], seen["other"], first]), seen
    assert f"new child {second} not attached: it ended" in seen["err"], seen["err"]
    assert f"attached to pid {second} " not in seen["err"], seen["err"]
    assert seen["reborn"] == seen["after_swap"], seen
    assert seen["err"].count(f"attached to pid {first} ") == 2, seen["err"]
    assert f"attached to pid {its_child} " not in seen["err"], seen["err"]
    assert seen["after_parent"] == sorted([seen["other"], first, seen["later"]]), seen
    assert f"pid {seen['family']} ended: its new children are not looked for" in seen["err"]


async def test_the_live_view_says_when_a_worker_drops_out(plain: Plain) -> None:
    """The text view writes the group's notes to stderr; on screen they are notices."""
    from memtop.attach.chain import attach
    from memtop.group import GroupSource
    from memtop.source import LiveSource

    _, state = plain.start(sys.executable, "pool.py", "2")
    workers = wait_state(state, lambda s: len(s.get("workers", [])) == 2)["workers"]

    def attach_member(pid: int) -> LiveSource:
        attached = attach(pid, "auto", 4, 30.0, False)
        return LiveSource(attached.client, pid, attached.how, token=attached.token)

    group = GroupSource({pid: attach_member(pid) for pid in workers}, attach_member, print)
    app = MemtopApp(group, Query(), 0.3, cwd=CWD)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            for _ in range(300):  # up to 30 s for the first table
                if app.sample is not None:
                    break
                await pilot.pause(0.1)
            assert app.sample is not None
            os.kill(workers[0], signal.SIGKILL)
            wanted = f"pid {workers[0]}"
            seen: list[str] = []  # toasts expire: every one shown is kept here
            for _ in range(300):  # up to 30 s
                seen += [n.message for n in app._notifications if n.message not in seen]
                if any(wanted in m and "dropped from the group" in m for m in seen):
                    break
                await pilot.pause(0.1)
            assert any(wanted in m and "dropped from the group" in m for m in seen), seen
    finally:
        group.close()
