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
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from memtop.errors import MemtopError, UsageError

FORMAT = "memtop-snapshot"
FORMATS = ("memtop", "tracemalloc", "pprof")  # what memtop writes
VERSION = 1
TABLES = ("frames", "tracebacks", "entries", "sources")  # in the order a file holds them
MAX_LINE = 16 * 1024 * 1024
# Memory follows what the file really holds, never what it declares: reading costs about
# 10-20 times the uncompressed size, so that is capped, and so is the compression ratio
# (real files compress 5-10 times; a "gzip bomb" compresses thousands of times).
MAX_TOTAL = 512 * 1024**2
MAX_RATIO = 50
RATIO_FLOOR = 4 * 1024**2  # a small file may always expand to this much
MAX_SECONDS = 60.0
# memtop writes lines of about 1 MiB (older versions: 100,000 items), so even the largest
# real file has a few hundred; millions of tiny lines would only cost time.
MAX_RECORDS = 10_000
MAX_ITEMS = 50_000_000
MAX_NUMBER = 2**48
MAX_TIME = 2**33  # seconds since the epoch (year 2242): anything later is not a time
MAX_FRAMES_PER_TRACEBACK = 65535  # tracemalloc's own limit on nframe
MAX_EXPORT_BLOCKS = 20_000_000  # tracemalloc's format stores one record per block
WRITE_CHUNK = 1024 * 1024  # characters of JSON per line memtop writes
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


def assemble(meta: dict[str, Any], parts: list[dict[str, Any]]) -> SavedSnapshot:
    """A snapshot from the parts of an agent's `snapshot` replies (the first carries the
    header), checked like a file's; `meta` is what the viewer knows of the process."""
    header = parts[0]["header"]
    merged = dict(meta)
    merged.update({k: v for k, v in header.items() if k not in ("counts", "parts")})
    builder = _Builder(merged, header["counts"])
    for name in TABLES:
        for reply in parts:
            items = reply.get(name)
            if items:
                if not isinstance(items, list):
                    raise ValueError(f"its {name} are not a list")
                builder.add(name, items)
    return builder.done()


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


def convert(source: str, target: str, to: str | None, trust_pickle: bool) -> str:
    """`memtop convert IN OUT`: between formats; without `to`, the output's name says
    which (see format_for)."""
    if to is None:
        to = format_for(target)
    if to not in FORMATS:
        raise UsageError(f"--to must be one of {', '.join(FORMATS)}")
    write(load(source, trust_pickle), target, to)
    return f"wrote {target} ({to} format)"


def default_snapshot_path(pid: int) -> str:
    """memtop-PID-YYYYmmdd-HHMMSS.memtop."""
    return time.strftime(f"memtop-{pid}-%Y%m%d-%H%M%S.memtop")


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
                for line in _chunks(name, items):
                    out.write(line)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _chunks(name: str, items: list[Any]) -> Iterator[str]:
    """One table as JSON lines of about WRITE_CHUNK characters (the reader's MAX_LINE
    stays far away, whatever the items hold)."""
    encoded: list[str] = []
    size = 0
    for item in items:
        text = json.dumps(item)
        encoded.append(text)
        size += len(text) + 1
        if size >= WRITE_CHUNK:
            yield f'{{"{name}": [{",".join(encoded)}]}}\n'
            encoded, size = [], 0
    if encoded:
        yield f'{{"{name}": [{",".join(encoded)}]}}\n'


def load(path: str, trust_pickle: bool = False) -> SavedSnapshot:
    """Read a snapshot file: memtop's format, or (with trust_pickle) tracemalloc's."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
            compressed = os.fstat(f.fileno()).st_size
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
    limit = min(MAX_TOTAL, max(RATIO_FLOOR, MAX_RATIO * compressed))
    try:
        return _load_memtop(path, limit)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise SnapshotFileError(f"{path} is truncated or corrupt ({exc})") from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise SnapshotFileError(f"{path} is corrupt: {exc}") from exc
    except OSError as exc:
        raise SnapshotFileError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _load_memtop(path: str, limit: int) -> SavedSnapshot:
    total = 0
    deadline = time.monotonic() + MAX_SECONDS
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
        builder = _Builder(meta, counts)
        records = 0
        while True:
            line = f.readline(MAX_LINE + 1)
            if not line:
                break
            records += 1
            if records > MAX_RECORDS:
                raise ValueError(f"it has more than {MAX_RECORDS} lines (memtop writes a few)")
            total += len(line)
            if total > limit:
                raise ValueError(
                    f"it expands to more than {limit >> 20} MiB ({MAX_RATIO} times its "
                    f"compressed size at most, {MAX_TOTAL >> 20} MiB in all)"
                )
            if time.monotonic() > deadline:
                raise ValueError(f"reading it took longer than {MAX_SECONDS:.0f} s")
            record = _json_line(line, "record")
            if not isinstance(record, dict) or len(record) != 1:
                raise ValueError("a record is not a single table chunk")
            ((name, items),) = record.items()
            if name not in TABLES or not isinstance(items, list):
                raise ValueError(f"unknown record {str(name)[:40]!r}")
            builder.add(name, items)
    return builder.done()


def _json_line(line: bytes, what: str) -> Any:
    if len(line) > MAX_LINE:
        raise ValueError(f"a {what} line is longer than {MAX_LINE >> 20} MiB")
    if not line.endswith(b"\n"):
        raise EOFError("the last line is cut short")
    return json.loads(line, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"it holds {name}, which is not a number")


class _Builder:
    """Checks each table chunk as it arrives and keeps only the checked result, so memory
    follows the items really present, never the counts a header announces."""

    def __init__(self, meta: dict[str, Any], counts: Any) -> None:
        if not isinstance(counts, dict):
            raise ValueError("the header's counts are not a mapping")
        for name in TABLES:
            if not _is_int(counts.get(name), 0, MAX_ITEMS):
                raise ValueError(f"the header's count of {name} is not a valid number")
        self.counts: dict[str, int] = {name: counts[name] for name in TABLES}
        self.seen = dict.fromkeys(TABLES, 0)
        self.frames: list[tuple[str, int]] = []
        self.tracebacks: list[Traceback] = []
        self.snapshot = SavedSnapshot(checked_meta(meta))
        self.table = 0

    def add(self, name: str, items: list[Any]) -> None:
        """One chunk of table `name`; tables come in TABLES order, chunks are not empty."""
        index = TABLES.index(name)
        if index < self.table:
            raise ValueError(f"its {name} come after {TABLES[self.table]} (out of order)")
        if not items:
            raise ValueError(f"it holds an empty chunk of {name}")
        self.table = index
        self.seen[name] += len(items)
        if self.seen[name] > self.counts[name]:
            raise ValueError(f"it holds more {name} than its header says")
        getattr(self, "_add_" + name)(items)

    def _add_frames(self, items: list[Any]) -> None:
        for item in items:
            if not (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], str)
                and len(item[0]) <= 4096
                and _is_int(item[1], 0, 2**31)
            ):
                raise ValueError("a frame is not [filename, lineno]")
            self.frames.append((item[0], item[1]))

    def _add_tracebacks(self, items: list[Any]) -> None:
        self._complete("frames")
        frames = self.frames
        for item in items:
            if not (
                isinstance(item, list)
                and 1 <= len(item) <= MAX_FRAMES_PER_TRACEBACK
                and all(_is_int(i, 0, len(frames) - 1) for i in item)
            ):
                raise ValueError("a traceback is not a list of frame indices")
            self.tracebacks.append(tuple(frames[i] for i in item))

    def _add_entries(self, items: list[Any]) -> None:
        self._complete("tracebacks")
        tracebacks, entries = self.tracebacks, self.snapshot.entries
        for item in items:
            if not (
                isinstance(item, list)
                and len(item) == 3
                and _is_int(item[0], 0, len(tracebacks) - 1)
                and _is_int(item[1], 0, MAX_NUMBER)
                and _is_int(item[2], 1, MAX_NUMBER)
            ):
                raise ValueError("an entry is not [traceback index, size, count] within limits")
            entries.append((tracebacks[item[0]], item[1], item[2]))

    def _add_sources(self, items: list[Any]) -> None:
        self._complete("entries")
        for item in items:
            if not (
                isinstance(item, list)
                and len(item) == 2
                and _is_int(item[0], 0, len(self.frames) - 1)
                and isinstance(item[1], str)
            ):
                raise ValueError("a source line is not [frame index, text]")
            self.snapshot.sources[self.frames[item[0]]] = item[1][:1000]

    def _complete(self, name: str) -> None:
        if self.seen[name] != self.counts[name]:
            raise ValueError(
                f"it is truncated: its header announces {self.counts[name]} {name}, "
                f"found {self.seen[name]}"
            )

    def done(self) -> SavedSnapshot:
        for name in TABLES:
            self._complete(name)
        self.frames, self.tracebacks = [], []
        return self.snapshot


# What memtop reads from a file's meta, and what each must be. Other fields are kept (a
# newer memtop may add some) but never used.
_META_INTS = {
    "pid": 2**31,
    "nframe": MAX_FRAMES_PER_TRACEBACK,
    "rss": MAX_NUMBER,
    "uss": MAX_NUMBER,
    "traced_current": MAX_NUMBER,
    "traced_peak": MAX_NUMBER,
    "traced_size": MAX_NUMBER,
    "traced_blocks": MAX_NUMBER,
    "tracemalloc_memory": MAX_NUMBER,
}
_META_NUMBERS = {"time": MAX_TIME, "cost_ms": 1e9}
_META_TEXTS = {
    "python": 4096,
    "cmdline": 64 * 1024,
    "tracing_owner": 40,
    "memtop": 40,
    "source_file": 4096,
    "imported_from": 40,
}


def checked_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` if every field memtop uses has the right type and range (null: unknown),
    over-long texts cut (a program sets its own sys.version and command line); ValueError
    naming the first field that does not."""
    for name, value in meta.items():
        if name in _META_TEXTS and isinstance(value, str):
            meta[name] = value = value[: _META_TEXTS[name]]
        if value is None:
            continue
        if name in _META_INTS and not _is_int(value, 0, _META_INTS[name]):
            raise ValueError(f"its meta field {name!r} is not an integer in 0..{_META_INTS[name]}")
        if name in _META_NUMBERS and not (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and 0 <= value <= _META_NUMBERS[name]
        ):
            raise ValueError(f"its meta field {name!r} is not a number in range")
        if name in _META_TEXTS and not isinstance(value, str):
            raise ValueError(f"its meta field {name!r} is not a text")
    return meta


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
    blocks = sum(count for _, _, count in snapshot.entries)
    if blocks > MAX_EXPORT_BLOCKS:
        raise SnapshotFileError(
            f"the snapshot holds {blocks} blocks; tracemalloc's format stores one record per "
            f"block and memtop writes at most {MAX_EXPORT_BLOCKS}: keep it in memtop's format "
            "(an output name ending in .memtop)"
        )
    nframe = int(
        snapshot.meta.get("nframe") or max((len(tb) for tb, _, _ in snapshot.entries), default=1)
    )
    traces = _Blocks(snapshot.entries)
    try:
        tracemalloc.Snapshot(traces, nframe).dump(path)  # type: ignore[arg-type]
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc


class _Blocks:
    """The one-record-per-block list tracemalloc's format wants, pickled as a plain list
    without ever being built: each entry's record is one object, repeated `count` times."""

    def __init__(self, entries: list[tuple[Traceback, int, int]]) -> None:
        self.entries = entries

    def __iter__(self) -> Iterator[tuple[int, int, Traceback, int]]:
        for tb, size, count in self.entries:
            record = (0, size, tb, len(tb))
            for _ in range(count):
                yield record

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (), None, iter(self))
