"""pprof heap profiles, read by the real `go tool pprof` (Debian's golang-go): the lines a
program reports about itself, to the byte and the block."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    TARGETS,
    Targets,
    marked_lines,
    memtop_cli,
    state_of,
    wait_for,
    wait_state,
)

from memtop import snapfile
from memtop.fleet.pprof import _profile_class

LINES = marked_lines(TARGETS / "known_lines.py")


def go() -> str:
    path = shutil.which("go")
    if path is None:
        pytest.skip("go is not installed (CI installs golang-go)")
    return path


def pprof_top(profile: Path, index: str) -> dict[str, int]:
    """{'file:line': flat value} as `go tool pprof -top` prints it, in bytes or blocks."""
    result = subprocess.run(
        [go(), "tool", "pprof", "-top", "-unit=B", "-nodecount=1000", "-sample_index", index,
         str(profile)],
        capture_output=True, text=True, timeout=120,
        env={"HOME": str(profile.parent), "PATH": "/usr/bin:/bin", "GOFLAGS": "-mod=mod"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    flat = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[1].endswith("%"):
            flat[fields[5]] = int(fields[0].rstrip("B"))
    return flat


def test_go_tool_pprof_reads_the_known_lines_exactly(targets: Targets, tmp_path: Path) -> None:
    program, state = targets.start("known_lines.py")
    wait_state(state)
    profile = tmp_path / "heap.pb.gz"
    done = memtop_cli("snapshot", str(program.pid), "--format", "pprof", "-o", str(profile))
    assert done.returncode == 0, done.stderr
    expected = state_of(state)["expected"]
    space, objects = pprof_top(profile, "inuse_space"), pprof_top(profile, "inuse_objects")
    for name in ("records", "buffers"):
        key = f"{state_of(state)['file']}:{LINES[name]}"
        assert [space[key], objects[key]] == expected[key], key
    # The line that holds the most is listed first.
    assert next(iter(space)) == max(space, key=lambda k: space[k])


def test_convert_writes_the_same_totals_as_the_memtop_file(
    targets: Targets, tmp_path: Path
) -> None:
    program, state = targets.start("known_lines.py")
    wait_state(state)
    saved, profile = tmp_path / "a.memtop", tmp_path / "a.pb.gz"
    assert memtop_cli("snapshot", str(program.pid), "-o", str(saved)).returncode == 0
    done = memtop_cli("convert", str(saved), str(profile), "--to", "pprof")
    assert done.returncode == 0, done.stderr
    snapshot = snapfile.load(str(saved))
    message = _profile_class()()
    message.ParseFromString(gzip.decompress(profile.read_bytes()))
    strings = list(message.string_table)
    assert [strings[t.type] for t in message.sample_type] == ["inuse_objects", "inuse_space"]
    assert sum(s.value[1] for s in message.sample) == sum(
        size * count for _, size, count in snapshot.entries
    )
    assert sum(s.value[0] for s in message.sample) == sum(c for _, _, c in snapshot.entries)
    # One location per frame, leaf first, each with its file and line.
    functions = {f.id: f for f in message.function}
    sample = max(message.sample, key=lambda s: s.value[1])
    leaf = functions[sample.location_id[0]]
    assert strings[leaf.name] == f"{strings[leaf.filename]}:{leaf.start_line}"


def test_a_program_file_named_in_bytes_that_are_not_utf8_gives_a_readable_profile(
    tmp_path: Path,
) -> None:
    """proto strings must be UTF-8; Python keeps such a name's bytes as lone surrogates."""
    script = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.py"))
    ready = tmp_path / "ready"
    script.write_text(
        "import sys, time\n"
        "held = [bytearray(4096) for _ in range(2000)]\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(120)\n"
    )
    program = subprocess.Popen([sys.executable, "-X", "tracemalloc=1", str(script)])
    try:
        wait_for(ready.exists, what="the program to allocate")
        profile = tmp_path / "heap.pb.gz"
        done = memtop_cli("snapshot", str(program.pid), "--format", "pprof", "-o", str(profile))
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        space = pprof_top(profile, "inuse_space")
        assert space[f"{tmp_path}/caf\\xe9.py:2"] >= 2000 * 4096
    finally:
        program.kill()
        program.wait()


def test_convert_of_a_file_with_absurd_numbers_writes_a_readable_profile(
    tmp_path: Path,
) -> None:
    """A saved file is input from anywhere: size x count beyond a proto int64."""
    saved, profile = tmp_path / "odd.memtop", tmp_path / "odd.pb.gz"
    big = snapfile.MAX_NUMBER
    snapfile.save(
        snapfile.SavedSnapshot(
            meta={"pid": 7, "time": 1.7e9},
            entries=[((("/srv/app.py", 3),), big, big), ((("/srv/\udcff.py", 9),), 8, 2)],
        ),
        str(saved),
    )
    done = memtop_cli("convert", str(saved), str(profile), "--to", "pprof")
    assert done.returncode == 0, done.stderr
    message = _profile_class()()
    message.ParseFromString(gzip.decompress(profile.read_bytes()))
    assert sorted(list(s.value) for s in message.sample) == [[2, 16], [big, 2**63 - 1]]
    assert message.time_nanos > 0
    assert "/srv/\\xff.py:9" in list(message.string_table)
