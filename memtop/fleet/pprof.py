"""Saved snapshots as pprof heap profiles: gzipped `profile.proto` (perftools.profiles),
as `go tool pprof`, Grafana Pyroscope and speedscope read them.

Sample types `inuse_objects` (count) and `inuse_space` (bytes), one sample per traceback,
one location per (file, line), one function per location. tracemalloc records no function
names, so a function is named after its line: `app/cache.py:42`, which is also what
`pprof -top` lists. Encoded with the protobuf library from a descriptor built here (the
schema of google/pprof's proto/profile.proto, the fields memtop writes).
"""

from __future__ import annotations

import gzip
import math
import time
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from memtop.errors import UsageError
from memtop.formatting import utf8_text
from memtop.snapfile import SavedSnapshot

_INT64 = descriptor_pb2.FieldDescriptorProto.TYPE_INT64
_UINT64 = descriptor_pb2.FieldDescriptorProto.TYPE_UINT64
_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL

# message name -> [(field, number, type, repeated, message type)], as in profile.proto.
_SCHEMA: dict[str, list[tuple[str, int, int, bool, str]]] = {
    "Profile": [
        ("sample_type", 1, _MESSAGE, True, "ValueType"),
        ("sample", 2, _MESSAGE, True, "Sample"),
        ("location", 4, _MESSAGE, True, "Location"),
        ("function", 5, _MESSAGE, True, "Function"),
        ("string_table", 6, _STRING, True, ""),
        ("time_nanos", 9, _INT64, False, ""),
        ("period_type", 11, _MESSAGE, False, "ValueType"),
        ("period", 12, _INT64, False, ""),
        ("comment", 13, _INT64, True, ""),
        ("default_sample_type", 14, _INT64, False, ""),
    ],
    "ValueType": [("type", 1, _INT64, False, ""), ("unit", 2, _INT64, False, "")],
    "Sample": [
        ("location_id", 1, _UINT64, True, ""),
        ("value", 2, _INT64, True, ""),
    ],
    "Location": [
        ("id", 1, _UINT64, False, ""),
        ("line", 4, _MESSAGE, True, "Line"),
    ],
    "Line": [("function_id", 1, _UINT64, False, ""), ("line", 2, _INT64, False, "")],
    "Function": [
        ("id", 1, _UINT64, False, ""),
        ("name", 2, _INT64, False, ""),
        ("system_name", 3, _INT64, False, ""),
        ("filename", 4, _INT64, False, ""),
        ("start_line", 5, _INT64, False, ""),
    ],
}
_PACKAGE = "perftools.profiles"
_INT64_MAX = 2**63 - 1  # a saved file may hold size x count beyond a proto int64


def _profile_class() -> Any:
    """The Profile message class, from a descriptor of profile.proto's fields."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="memtop/profile.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in _SCHEMA.items():
        message = proto.message_type.add(name=name)
        for field, number, kind, repeated, type_name in fields:
            added = message.field.add(
                name=field, number=number, type=kind, label=_REPEATED if repeated else _OPTIONAL
            )
            if type_name:
                added.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Profile"))


class _Strings:
    """The profile's string table: index 0 is the empty string."""

    def __init__(self) -> None:
        self.table = [""]
        self.index = {"": 0}

    def __call__(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.table)
            self.table.append(utf8_text(text))  # proto strings must be UTF-8
        return found


def _time_nanos(taken: object) -> int:
    """The snapshot's time in ns since the epoch; now when the file's is absent or absurd."""
    if isinstance(taken, (int, float)) and not isinstance(taken, bool):
        seconds = float(taken)
        if math.isfinite(seconds) and 0 <= seconds * 1e9 <= _INT64_MAX:
            return int(seconds * 1e9)
    return int(time.time() * 1e9)


def profile_bytes(snapshot: SavedSnapshot) -> bytes:
    """The snapshot as an uncompressed profile.proto message."""
    profile = _profile_class()()
    strings = _Strings()
    profile.sample_type.add(type=strings("inuse_objects"), unit=strings("count"))
    space = profile.sample_type.add(type=strings("inuse_space"), unit=strings("bytes"))
    profile.default_sample_type = space.type
    profile.period_type.type, profile.period_type.unit = strings("space"), strings("bytes")
    profile.period = 1  # exact: every block counted (tracemalloc), not sampled
    profile.time_nanos = _time_nanos(snapshot.meta.get("time"))
    pid = snapshot.meta.get("pid")
    profile.comment.append(strings(f"memtop snapshot of pid {pid}" if pid else "memtop snapshot"))
    locations: dict[tuple[str, int], int] = {}
    for tb, (size, count) in snapshot.by_traceback().items():
        ids = []
        for filename, lineno in tb:  # most recent frame first, as pprof wants
            key = (filename, lineno)
            location_id = locations.get(key)
            if location_id is None:
                location_id = locations[key] = len(locations) + 1
                name = strings(f"{filename}:{lineno}")
                profile.function.add(
                    id=location_id, name=name, system_name=name, filename=strings(filename),
                    start_line=lineno,
                )  # fmt: skip
                location = profile.location.add(id=location_id)
                location.line.add(function_id=location_id, line=lineno)
            ids.append(location_id)
        profile.sample.add(location_id=ids, value=[min(count, _INT64_MAX), min(size, _INT64_MAX)])
    profile.string_table.extend(strings.table)
    return bytes(profile.SerializeToString())


def write_pprof(snapshot: SavedSnapshot, path: str) -> None:
    """Write the snapshot as a gzipped pprof heap profile."""
    data = gzip.compress(profile_bytes(snapshot), mtime=0)
    try:
        with open(path, "wb") as out:
            out.write(data)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
