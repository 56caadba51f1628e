"""Snapshots taken from a live agent and read back later: `memtop snapshot`, the viewer's
save key, `memtop view` and `memtop convert`."""

from __future__ import annotations

import time
from collections.abc import Callable

from memtop.attach.chain import attach
from memtop.errors import UsageError
from memtop.modes import ModeRequest
from memtop.snapfile import SavedSnapshot, export_tracemalloc, load, save, snapshot_of

FORMATS = ("memtop", "tracemalloc", "pprof")


def format_for(path: str) -> str:
    """The format an output name asks for: `.memtop` memtop's, `.pb.gz`/`.pprof` pprof's,
    any other name tracemalloc's pickle (what Snapshot.dump writes, whatever its name)."""
    if path.endswith(".memtop"):
        return "memtop"
    if path.endswith((".pb.gz", ".pprof", ".pprof.gz")):
        return "pprof"
    return "tracemalloc"


def write(snapshot: SavedSnapshot, path: str, file_format: str = "memtop") -> None:
    """Save in memtop's format, tracemalloc's, or as a pprof heap profile."""
    if file_format == "tracemalloc":
        export_tracemalloc(snapshot, path)
    elif file_format == "pprof":
        from memtop.fleet.pprof import write_pprof  # protobuf loads only when asked for

        write_pprof(snapshot, path)
    else:
        save(snapshot, path)


def take(
    pid: int,
    path: str,
    file_format: str,
    method: str,
    nframe: int,
    timeout: float,
    force_gdb: bool,
    wait: float = 0.0,
    warn: Callable[[str], None] | None = None,
    *,
    keep: bool = False,
    mode: ModeRequest | None = None,
) -> str:
    """`memtop snapshot PID -o FILE`: attach, save, and leave the target as it was, or,
    with `keep`, with the agent tracing on (and serving, with no idle timeout).

    tracemalloc sees only what is allocated after it starts: when this attach started it,
    waiting `wait` seconds first lets allocations accumulate, and keeping the agent lets a
    later snapshot of the same tracing session show what grew in between."""
    attached = attach(pid, method, nframe, timeout, force_gdb, mode=mode, note=warn)
    try:
        ping = attached.client.request("ping")
        fresh = (
            attached.how not in ("reuse", "opt-in")
            and attached.client.greeting.get("tracing_owner") == "agent"
            and ping["uptime"] < 5
        )
        if fresh and wait <= 0 and not keep and warn is not None:
            warn(
                "tracing started only now, so the snapshot holds just the last moments' "
                "allocations; use --wait SECONDS, or --keep and a second snapshot later "
                "(`memtop view LATER --base THIS` shows what grew)"
            )
        if wait > 0:
            time.sleep(wait)
        snapshot = snapshot_of(attached.client, pid)
        if keep:
            attached.client.request("configure", idle_timeout=None)
        elif attached.how not in ("reuse", "opt-in"):
            attached.client.request("detach")
    finally:
        attached.client.close()
    write(snapshot, path, file_format)
    blocks = sum(count for _, _, count in snapshot.entries)
    estimated = "an estimated " if snapshot.meta.get("mode") == "sampled" else ""
    entries = len(snapshot.entries)
    done = f"saved {estimated}{blocks} traced blocks of pid {pid} ({entries} entries) to {path}"
    if keep:
        done += f"; the agent keeps tracing (`memtop detach {pid}` stops it)"
    return done


def convert(source: str, target: str, to: str | None, trust_pickle: bool) -> str:
    """`memtop convert IN OUT`: between formats; without `to`, the output's name says
    which (see format_for)."""
    if to is None:
        to = format_for(target)
    if to not in FORMATS:
        raise UsageError(f"--to must be one of {', '.join(FORMATS)}")
    snapshot = load(source, trust_pickle)
    write(snapshot, target, to)
    return f"wrote {target} ({to} format)"


def default_snapshot_path(pid: int) -> str:
    return time.strftime(f"memtop-{pid}-%Y%m%d-%H%M%S.memtop")
