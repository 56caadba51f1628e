"""`memtop export PID [PID…] --listen HOST:PORT`: stay attached, refresh at the interval,
and serve the heap metrics of every watched process on /metrics (memtop.fleet.metrics)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TextIO

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import start_http_server

from memtop.children import Children
from memtop.errors import EXIT_OK, EXIT_TARGET_GONE, ConnectionLost, MemtopError, UsageError
from memtop.fleet.metrics import HeapCollector, ProcessMetrics
from memtop.group import MEMBER_WAIT
from memtop.history import History
from memtop.model import Query, Refresh
from memtop.sink import feed
from memtop.source import LiveSource, wait_for_exit

DEFAULT_LISTEN = "127.0.0.1:9464"


def parse_listen(text: str) -> tuple[str, int]:
    """('127.0.0.1', 9464) from '127.0.0.1:9464' or '[::1]:9464'; a clear error otherwise."""
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        number = int(port)
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(
            f"--listen {text!r}: expected ADDRESS:PORT with a numeric address, such as "
            f"{DEFAULT_LISTEN} or [::1]:9464"
        ) from None
    if not 0 < number < 65536:
        raise UsageError(f"--listen {text!r}: the port must be between 1 and 65535")
    return host, number


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


def run_export(
    pids: list[int],
    listen: str,
    query: Query,
    *,
    top: int,
    interval: float,
    keep_agent: bool,
    attach_member: Callable[[int], LiveSource],
    err: TextIO,
    hung_up: object = lambda: False,
    children: bool = False,
) -> int:
    """Attach to every pid through `attach_member` (with `children`, their Python children
    too, and new ones as they appear), serve until interrupted or until every process
    ended."""
    host, port = parse_listen(listen)
    pids = list(dict.fromkeys(pids))  # a pid given twice is watched once
    if not is_loopback(host):
        err.write(
            f"memtop: serving on {host}:{port}, beyond this machine: the labels name the "
            "program's source files and lines\n"
        )
    sources: dict[int, LiveSource] = {}
    watched: dict[int, tuple[History, ProcessMetrics]] = {}  # each its history and sink
    collector = HeapCollector(top)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server = None
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="memtop-export")
    pending: dict[int, Future[Refresh]] = {}  # refreshes under way
    asked: dict[int, float] = {}  # when each refresh under way was asked for
    slow: set[int] = set()  # processes said not to answer
    patience = max(MEMBER_WAIT, 3 * interval)

    def note(text: str) -> None:
        err.write(f"memtop: {text}\n")

    family = Children(pids if children else (), attach_member, note)

    def watch(pid: int, source: LiveSource) -> None:
        sources[pid] = source
        watched[pid] = (History(), ProcessMetrics(collector, pid))
        family.watching(pid)
        note(f"attached to pid {pid} via {source.info.how}")

    try:
        for pid in pids:
            watch(pid, attach_member(pid))
        for pid, source in family.adopt(limit=64).items():
            watch(pid, source)
        try:
            server, _ = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise UsageError(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
        err.write(f"memtop: serving heap metrics at http://{listen}/metrics\n")
        next_at = time.monotonic()
        while sources:
            for pid, source in family.adopt().items():
                watch(pid, source)
            # Every process at once; one that does not answer (stopped) holds up nobody:
            # its request stays under way, its last refresh stays served.
            for pid in sources:
                if pid not in pending:
                    pending[pid] = pool.submit(sources[pid].refresh, query, interval * 0.9)
                    asked[pid] = time.monotonic()
            next_at += interval
            wait(pending.values(), timeout=max(0.0, next_at - time.monotonic()))
            for pid, future in list(pending.items()):
                if not future.done():
                    if pid not in slow and time.monotonic() - asked[pid] > patience:
                        slow.add(pid)
                        err.write(f"memtop: pid {pid} is not answering (stopped?)\n")
                    continue
                del pending[pid]
                slow.discard(pid)
                _refresh(pid, future, sources, watched, collector, err)
                if pid not in sources:
                    family.left(pid)
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - interval)  # no burst after a stall
        return EXIT_TARGET_GONE
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        keep = keep_agent or bool(hung_up() if callable(hung_up) else False)
        for pid, source in sources.items():
            if pid in pending and not pending[pid].done():
                source.client.abort()  # a stopped process: do not wait for its answer
            source.close(keep_agent=keep)
            if keep:
                err.write(f"memtop: the agent keeps serving in pid {pid}\n")
        pool.shutdown(wait=False)


def _refresh(
    pid: int,
    done: Future[Refresh],
    sources: dict[int, LiveSource],
    watched: dict[int, tuple[History, ProcessMetrics]],
    collector: HeapCollector,
    err: TextIO,
) -> None:
    """Take one process's finished refresh; a process that ended drops out with a note."""
    source = sources[pid]
    try:
        sample = done.result()
    except ConnectionLost:
        status = wait_for_exit(source, 2.0)
        err.write(f"memtop: pid {pid} {status or 'closed the agent connection'}; dropped\n")
        collector.forget(pid)
        source.close()
        del sources[pid]
        return
    except MemtopError as exc:
        err.write(f"memtop: pid {pid}: {exc.message}\n")
        return
    history, metrics = watched[pid]
    history.add(sample)
    feed([metrics], sample, history)
