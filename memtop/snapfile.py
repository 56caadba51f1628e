"""Saved snapshots: memtop's own file format, and tracemalloc's (pickle) for exchange.

memtop's format is gzip-compressed JSON lines, safe to open from anywhere: nothing in it
is executed, every field is checked, and limits stop oversized or truncated files.

    line 1   {"format": "memtop-snapshot", "version": 1, "meta": {...}, "counts": {...}}
    then     {"frames": [[filename, lineno], ...]}
             {"tracebacks": [[frame index, ...], ...]}     most recent frame first
             {"entries": [[traceback index, size, count], ...]}
             {"sources": [[frame index, source line], ...]}

Each entry says: `count` blocks of `size` bytes were allocated with that traceback. Every
block's size survives, so a file converts back to tracemalloc's Snapshot.dump() format.
"""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
import zlib
from dataclasses import dataclass, field
from typing import Any

from memtop import __version__
from memtop.client import AgentClient
from memtop.errors import MemtopError, UsageError
from memtop.procinfo import ProcInfo

FORMAT = "memtop-snapshot"
VERSION = 1
MAX_LINE = 64 * 1024 * 1024
MAX_TOTAL = 2 * 1024**3
MAX_ITEMS = 50_000_000
MAX_NUMBER = 2**48
MAX_FRAMES_PER_TRACEBACK = 1000
PICKLE_WARNING = (
    "loading a pickle (--trust-pickle): a pickle can run any code when it is opened; "
    "do this only for a file you trust"
)

Traceback = tuple[tuple[str, int], ...]  # raw order: most recent frame first


class SnapshotFileError(MemtopError):
    """A file memtop cannot read as a snapshot; the message says why."""

    exit_code = 1


@dataclass
class SavedSnapshot:
    """One snapshot in memory: what the file says, in the collector's terms."""

    meta: dict[str, Any]
    entries: list[tuple[Traceback, int, int]] = field(default_factory=list)
    sources: dict[tuple[str, int], str] = field(default_factory=dict)

    def by_traceback(self) -> dict[Traceback, tuple[int, int]]:
        """{traceback: (size, count)}, the collector's Sample.by_traceback."""
        totals: dict[Traceback, tuple[int, int]] = {}
        for tb, size, count in self.entries:
            old = totals.get(tb, (0, 0))
            totals[tb] = (old[0] + size * count, old[1] + count)
        return totals


def snapshot_of(client: AgentClient, pid: int) -> SavedSnapshot:
    """A whole snapshot from a connected agent, with what memtop knows of the process."""
    proc = ProcInfo(pid)
    memory = proc.memory()
    greeting = client.greeting
    meta = {
        "pid": pid,
        "python": greeting.get("py"),
        "cmdline": proc.cmdline(),
        "rss": memory.rss,
        "uss": memory.uss,
        "tracing_owner": greeting.get("tracing_owner"),
        "memtop": __version__,
    }
    try:
        return fetch(client, meta)
    except ValueError as exc:
        raise MemtopError(f"the agent sent an invalid snapshot: {exc}") from exc


def fetch(client: AgentClient, meta: dict[str, Any]) -> SavedSnapshot:
    """Ask a connected agent for a whole snapshot (in parts)."""
    first = client.request("snapshot", part=0)
    header = first["header"]
    parts = [first]
    for part in range(1, int(first["parts"])):
        parts.append(client.request("snapshot", part=part, snapshot=first["snapshot"]))
    tables: dict[str, list[Any]] = {"frames": [], "tracebacks": [], "entries": [], "sources": []}
    for reply in parts:
        for name in tables:
            tables[name].extend(reply.get(name, ()))
    merged = dict(meta)
    merged.update({k: v for k, v in header.items() if k not in ("counts", "parts")})
    return _assemble(merged, tables, header["counts"])


def save(snapshot: SavedSnapshot, path: str) -> None:
    """Write `snapshot` in memtop's format (atomically: a partial file never appears)."""
    frames: dict[tuple[str, int], int] = {}
    tracebacks: dict[Traceback, int] = {}
    for tb, _, _ in snapshot.entries:
        if tb not in tracebacks:
            tracebacks[tb] = len(tracebacks)
            for frame in tb:
                frames.setdefault(frame, len(frames))
    for frame in snapshot.sources:
        frames.setdefault(frame, len(frames))
    tables: dict[str, list[Any]] = {
        "frames": [[f, n] for f, n in frames],
        "tracebacks": [[frames[frame] for frame in tb] for tb in tracebacks],
        "entries": [[tracebacks[tb], size, count] for tb, size, count in snapshot.entries],
        "sources": [[frames[frame], text] for frame, text in snapshot.sources.items()],
    }
    counts = {name: len(items) for name, items in tables.items()}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as out:
            header = {"format": FORMAT, "version": VERSION, "meta": snapshot.meta, "counts": counts}
            out.write(json.dumps(header) + "\n")
            for name, items in tables.items():
                for start in range(0, len(items), 100_000):
                    out.write(json.dumps({name: items[start : start + 100_000]}) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def load(path: str, trust_pickle: bool = False) -> SavedSnapshot:
    """Read a snapshot file: memtop's format, or (with trust_pickle) tracemalloc's."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except OSError as exc:
        raise SnapshotFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if magic[:1] == b"\x80":
        if not trust_pickle:
            raise SnapshotFileError(
                f"{path} is a pickle (tracemalloc's Snapshot.dump format). Opening a pickle "
                "can run any code it contains: pass --trust-pickle only if you trust where "
                "the file comes from"
            )
        return _load_pickle(path)
    if magic != b"\x1f\x8b":
        raise SnapshotFileError(f"{path} is not a memtop snapshot (not gzip data)")
    try:
        return _load_memtop(path)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise SnapshotFileError(f"{path} is truncated or corrupt ({exc})") from exc
    except (ValueError, RecursionError) as exc:
        raise SnapshotFileError(f"{path} is corrupt: {exc}") from exc


def _load_memtop(path: str) -> SavedSnapshot:
    tables: dict[str, list[Any]] = {"frames": [], "tracebacks": [], "entries": [], "sources": []}
    total = 0
    with gzip.open(path, "rb") as f:
        header = _json_line(f.readline(MAX_LINE + 1), "header")
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError("it is not a memtop snapshot (no memtop header)")
        version = header.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError("the header has no valid format version")
        if version > VERSION:
            raise ValueError(
                f"it was written by a newer memtop (format version {version}; this memtop "
                f"reads version {VERSION}): upgrade memtop"
            )
        meta, counts = header.get("meta"), header.get("counts")
        if not isinstance(meta, dict) or not isinstance(counts, dict):
            raise ValueError("the header lacks meta or counts")
        for name in tables:
            expected = counts.get(name)
            if not _is_int(expected, 0, MAX_ITEMS):
                raise ValueError(f"the header's count of {name} is not a valid number")
        while True:
            line = f.readline(MAX_LINE + 1)
            if not line:
                break
            total += len(line)
            if total > MAX_TOTAL:
                raise ValueError(f"it is larger than {MAX_TOTAL >> 30} GiB uncompressed")
            record = _json_line(line, "record")
            if not isinstance(record, dict) or len(record) != 1:
                raise ValueError("a record is not a single table chunk")
            ((name, items),) = record.items()
            if name not in tables or not isinstance(items, list):
                raise ValueError(f"unknown record {str(name)[:40]!r}")
            tables[name].extend(items)
            if len(tables[name]) > counts[name]:
                raise ValueError(f"it holds more {name} than its header says")
    return _assemble(meta, tables, counts)


def _json_line(line: bytes, what: str) -> Any:
    if len(line) > MAX_LINE:
        raise ValueError(f"a {what} line is longer than {MAX_LINE >> 20} MiB")
    if not line.endswith(b"\n"):
        raise EOFError("the last line is cut short")
    return json.loads(line)


def _assemble(
    meta: dict[str, Any], tables: dict[str, list[Any]], counts: dict[str, Any]
) -> SavedSnapshot:
    """Check every table against the schema and build the snapshot."""
    for name, items in tables.items():
        if len(items) != counts.get(name):
            raise ValueError(
                f"it is truncated: its header announces {counts.get(name)} {name}, "
                f"found {len(items)}"
            )
    frames: list[tuple[str, int]] = []
    for item in tables["frames"]:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and len(item[0]) <= 4096
            and _is_int(item[1], 0, 2**31)
        ):
            raise ValueError("a frame is not [filename, lineno]")
        frames.append((item[0], item[1]))
    tracebacks: list[Traceback] = []
    for item in tables["tracebacks"]:
        if not (
            isinstance(item, list)
            and 1 <= len(item) <= MAX_FRAMES_PER_TRACEBACK
            and all(_is_int(i, 0, len(frames) - 1) for i in item)
        ):
            raise ValueError("a traceback is not a list of frame indices")
        tracebacks.append(tuple(frames[i] for i in item))
    snapshot = SavedSnapshot(meta)
    for item in tables["entries"]:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and _is_int(item[0], 0, len(tracebacks) - 1)
            and _is_int(item[1], 0, MAX_NUMBER)
            and _is_int(item[2], 1, MAX_NUMBER)
        ):
            raise ValueError("an entry is not [traceback index, size, count] within limits")
        snapshot.entries.append((tracebacks[item[0]], item[1], item[2]))
    for item in tables["sources"]:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and _is_int(item[0], 0, len(frames) - 1)
            and isinstance(item[1], str)
        ):
            raise ValueError("a source line is not [frame index, text]")
        snapshot.sources[frames[item[0]]] = item[1][:1000]
    return snapshot


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _load_pickle(path: str) -> SavedSnapshot:
    try:
        loaded = tracemalloc.Snapshot.load(path)
    except Exception as exc:  # a foreign pickle can fail in any way
        raise SnapshotFileError(f"{path}: not a tracemalloc snapshot ({exc})") from exc
    if not isinstance(loaded, tracemalloc.Snapshot):
        raise SnapshotFileError(f"{path}: the pickle is not a tracemalloc.Snapshot")
    traces = [
        (
            trace.domain,
            trace.size,
            tuple((f.filename, f.lineno) for f in reversed(trace.traceback)),
            0,
        )
        for trace in loaded.traces
    ]
    meta = {
        "nframe": loaded.traceback_limit,
        "source_file": os.path.basename(path),
        "imported_from": "tracemalloc",
    }
    return from_raw_traces(traces, meta)


def from_raw_traces(
    traces: list[tuple[int, int, Traceback, int]], meta: dict[str, Any]
) -> SavedSnapshot:
    """A snapshot from traces in `_tracemalloc._get_traces()` form."""
    counts: dict[tuple[Traceback, int], int] = {}
    for _, size, tb, _ in traces:
        counts[(tb, size)] = counts.get((tb, size), 0) + 1
    return SavedSnapshot(meta, [(tb, size, count) for (tb, size), count in counts.items()])


def export_tracemalloc(snapshot: SavedSnapshot, path: str) -> None:
    """Write `snapshot` in tracemalloc's Snapshot.dump() format (domain 0 for all)."""
    traces = []
    for tb, size, count in snapshot.entries:
        traces.extend([(0, size, tb, len(tb))] * count)
    nframe = int(
        snapshot.meta.get("nframe") or max((len(tb) for tb, _, _ in snapshot.entries), default=1)
    )
    try:
        tracemalloc.Snapshot(traces, nframe).dump(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
