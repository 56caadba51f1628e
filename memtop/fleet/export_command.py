"""`memtop export PID [PID…] --listen HOST:PORT`: stay attached, refresh at the interval,
and serve the heap metrics of every watched process on /metrics (memtop.fleet.metrics)."""

from __future__ import annotations

import ipaddress
import time
from typing import TextIO

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import start_http_server

from memtop.attach.chain import attach
from memtop.errors import EXIT_OK, EXIT_TARGET_GONE, ConnectionLost, MemtopError, UsageError
from memtop.fleet.metrics import HeapCollector, Watched
from memtop.group import MAX_ADOPTED_PER_REFRESH, children_of
from memtop.model import Query
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
    attach_options: dict[str, object],
    err: TextIO,
    hung_up: object = lambda: False,
    children: bool = False,
) -> int:
    """Attach to every pid (with `children`, their Python children too, and new ones as
    they appear), serve until interrupted or until every process ended."""
    host, port = parse_listen(listen)
    if not is_loopback(host):
        err.write(
            f"memtop: serving on {host}:{port}, beyond this machine: the labels name the "
            "program's source files and lines\n"
        )
    sources: dict[int, LiveSource] = {}
    watched: dict[int, Watched] = {}
    collector = HeapCollector(top)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server = None
    try:
        refused: set[int] = set()  # children that could not be attached, or ended

        def adopt(pid: int) -> None:
            attached = attach(pid, **attach_options)  # type: ignore[arg-type]
            sources[pid] = LiveSource(attached.client, pid, attached.how, token=attached.token)
            watched[pid] = Watched(pid)
            err.write(f"memtop: attached to pid {pid} via {attached.how}\n")

        def adopt_children(limit: int) -> None:
            for parent in pids if children else ():
                for child in children_of(parent, set(sources) | refused):
                    if limit <= 0:
                        break
                    limit -= 1
                    try:
                        adopt(child)
                    except MemtopError as exc:
                        refused.add(child)
                        err.write(f"memtop: child {child} not attached: {exc.message}\n")

        for pid in pids:
            adopt(pid)
        adopt_children(limit=64)
        try:
            server, _ = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise UsageError(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
        err.write(f"memtop: serving heap metrics at http://{listen}/metrics\n")
        next_at = time.monotonic()
        while sources:
            adopt_children(limit=MAX_ADOPTED_PER_REFRESH)
            for pid in list(sources):
                _refresh(pid, sources, watched, collector, query, interval, err)
                if pid not in sources:
                    refused.add(pid)  # ended: never attached again
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        return EXIT_TARGET_GONE
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        keep = keep_agent or bool(hung_up() if callable(hung_up) else False)
        for pid, source in sources.items():
            source.close(keep_agent=keep)
            if keep:
                err.write(f"memtop: the agent keeps serving in pid {pid}\n")


def _refresh(
    pid: int,
    sources: dict[int, LiveSource],
    watched: dict[int, Watched],
    collector: HeapCollector,
    query: Query,
    interval: float,
    err: TextIO,
) -> None:
    """One refresh of one process; a process that ended drops out with a note."""
    source = sources[pid]
    try:
        sample = source.refresh(query, max_age=interval * 0.9)
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
    entry = watched[pid]
    entry.history.add(sample)
    entry.sample = sample
    collector.update(entry)
