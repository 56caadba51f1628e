"""The native byte sampler in real interpreters, 3.9 to 3.15: the layout self-test, estimates
against tracemalloc's exact figures, the tracemalloc start/stop orders, threads and fork
under load, refusals with a reason, and what the built library needs from glibc."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import DISTRIBUTION, ROOT, TARGETS, interpreters, need_interpreter

from memtop.agent import bytesampler

TARGET = TARGETS / "sampled.py"
MINORS = ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15"]
# The oldest glibc the library is claimed to load on (manylinux2014, see README).
OLDEST_GLIBC = (2, 17)


def need_library() -> None:
    if shutil.which(shlex.split(os.environ.get("CC") or "cc")[0]) is None:
        pytest.skip("no C compiler here, so no sampler library (CI installs cc)")


def python_for(minor: str) -> str:
    need_library()
    if minor == DISTRIBUTION:
        return need_interpreter(minor)
    python = interpreters().get(minor)
    if python is None:
        pytest.skip(f"CPython {minor} is not installed here (CI installs it)")
    return python


def run_target(
    python: str, *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> Any:
    """Run the target in `python`; its one JSON line, after checking it exited cleanly."""
    done = subprocess.run(
        [python, str(TARGET), str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Fatal Python error" not in done.stderr, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("minor", MINORS)
def test_the_library_loads_and_passes_its_layout_self_test(minor: str) -> None:
    """The walk matches sys._getframe() (code objects and line numbers) on each version."""
    result = run_target(python_for(minor), "selftest")
    assert result["ok"], result
    assert ".".join(map(str, result["version"][:2])) == minor


def test_the_distribution_python_passes_the_self_test_and_the_stress() -> None:
    """Debian's own /usr/bin/python3 is an optimized distribution build."""
    need_library()
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 here")
    assert run_target("/usr/bin/python3", "selftest")["ok"]
    assert run_target("/usr/bin/python3", "stress", "12")["walk_errors"] == 0


@pytest.mark.parametrize("minor", ["3.9", "3.12", "3.14"])
def test_a_wrong_frame_layout_is_refused_with_the_reason(minor: str) -> None:
    """A layout that walks one frame short fails the self-test: sampled mode says why."""
    result = run_target(python_for(minor), "layout-fault")
    assert not result["ok"]
    assert result["reason"].startswith(
        "sampled mode unavailable: the frame layout self-test failed"
    )
    assert "frames where Python has" in result["reason"]


@pytest.mark.parametrize("allocator", ["debug", "malloc"])
@pytest.mark.parametrize("minor", ["3.9", "3.13", "3.15"])
def test_other_allocators_still_load(minor: str, allocator: str) -> None:
    """PYTHONMALLOC=debug (which checks the GIL and domains on every call) and =malloc."""
    result = run_target(python_for(minor), "selftest", env={"PYTHONMALLOC": allocator})
    assert result["ok"], result


@pytest.mark.parametrize("minor", [*MINORS, DISTRIBUTION])
def test_estimates_cover_tracemallocs_exact_sizes(minor: str) -> None:
    """Per marked line and round (fixed seeds, R = 32 KiB, about 100 samples a line), the
    exact size lies within the 95 % interval in at least 14 of 18 cases (missing more
    has a probability under 0.2 % if the intervals are right), and the mean relative
    error stays within ±12 % (unbiased estimates)."""
    rows = run_target(python_for(minor), "accuracy", "6", "32768")["rows"]
    assert len(rows) == 18
    covered = [abs(r["size"] - r["truth"]) <= r["size_error"] for r in rows]
    assert sum(covered) >= 14, rows
    mean_error = sum((r["size"] - r["truth"]) / r["truth"] for r in rows) / len(rows)
    assert abs(mean_error) < 0.12, rows
    counted = [abs(r["count"] - r["truth_count"]) <= r["count_error"] for r in rows]
    assert sum(counted) >= 14, rows


@pytest.mark.parametrize("minor", ["3.9", "3.11", "3.12", "3.13", "3.14", "3.15"])
def test_tracemalloc_orders_keep_the_sampler_honest(minor: str) -> None:
    """Both tracers see allocations in every order; tracemalloc.stop() after the sampler
    started unhooks it, the probe sees that and ensure_live() hooks it again; hook
    contexts are not used up by start/stop cycles."""
    result = run_target(python_for(minor), "interplay")
    steps = result["steps"]
    expected = [
        ["S T T.stop S.stop"],
        ["S+", True, None],
        ["T+", True, True],
        ["T-", True, None],  # tracemalloc gave the sampler back its place
        ["S-", False, None],
        ["T S T.stop"],
        ["T+", False, True],
        ["S+", True, True],
        ["T-", False, None],  # unhooked by tracemalloc.stop()
        ["re-hooked"],
        ["S-", False, None],
        ["S T S.stop T.stop"],
        ["S+", True, None],
        ["T+", True, True],
        ["S-", False, True],  # left as a pass-through below tracemalloc
        ["T-", False, None],  # tracemalloc restored the inactive pass-through
        ["S+", True, None],  # the pass-through on top is reused
        ["S-", False, None],
        ["T S S.stop T.stop"],
        ["T+", False, True],
        ["S+", True, True],
        ["S-", False, True],
        ["T-", False, None],
    ]
    assert steps == expected
    assert result["gaps"] == 1
    # Contexts the sampler unhooked itself are reused: 200 more starts, no more contexts
    # than the orders above needed (one per domain and clobbering tracemalloc.stop()).
    assert result["hooks"] <= 6
    # Detached, the allocators are the very ones found before (ctx and functions).
    assert result["hooked"] is True
    assert result["restored"] is True
    assert result["restored_again"] is True


@pytest.mark.parametrize("minor", MINORS)
def test_threads_fork_and_tracemalloc_under_load_crash_nothing(minor: str) -> None:
    """8 threads allocate (lists, dicts, generators, coroutines, exceptions, big
    bytearrays) while the sampler and tracemalloc start and stop in six orders; a fork in
    the middle leaves the child without sampling; the process exits while sampling."""
    result = run_target(python_for(minor), "stress", "12")
    assert result == {"cycles": 12, "live_samples": result["live_samples"], "walk_errors": 0}


@pytest.mark.parametrize("minor", ["3.9", "3.12", "3.15"])
def test_the_stress_holds_under_the_debug_allocator(minor: str) -> None:
    """PYTHONMALLOC=debug aborts on a MEM/OBJ call without the GIL or a wrong-domain free."""
    result = run_target(python_for(minor), "stress", "12", env={"PYTHONMALLOC": "debug"})
    assert result["walk_errors"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("minor", MINORS)
@pytest.mark.parametrize("allocator", ["pymalloc", "debug"])
def test_the_long_stress(minor: str, allocator: str) -> None:
    """100 cycles, as in the research notes."""
    result = run_target(
        python_for(minor), "stress", "100", env={"PYTHONMALLOC": allocator}, timeout=900
    )
    assert result["walk_errors"] == 0


def build_with(compiler: str | None, out_dir: Path) -> None:
    """Run the build step of `pip install` (setup.py) with CC set to `compiler`."""
    sys.path.insert(0, str(ROOT))
    try:
        import setup
    finally:
        sys.path.remove(str(ROOT))
    saved = os.environ.pop("CC", None)
    if compiler is not None:
        os.environ["CC"] = compiler
    try:
        setup.build_sampler(str(out_dir))
    finally:
        os.environ.pop("CC", None)
        if saved is not None:
            os.environ["CC"] = saved


def test_without_a_compiler_the_install_says_why(tmp_path: Path) -> None:
    """The build step with CC=false leaves the reason, and loading reports it."""
    build_with("false", tmp_path)
    assert not (tmp_path / bytesampler.LIBRARY_NAME).exists()
    with pytest.raises(bytesampler.Unavailable) as caught:
        bytesampler.library_path(str(tmp_path))
    message = str(caught.value)
    assert message.startswith(
        "sampled mode unavailable: the native sampler was not built (false failed"
    )
    assert "reinstall with a C compiler" in message


def test_the_wheel_is_tagged_for_its_platform(tmp_path: Path) -> None:
    """A wheel holding the native library claims this platform (and any Python 3), not
    `any`: pip elsewhere would install a library for the wrong machine."""
    need_library()
    # From a copy: pip builds in the source tree, and the checkout must stay as it is.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "*.so"
        ),
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert wheel.name.endswith(f"-py3-none-{platform}.whl"), wheel.name
    with zipfile.ZipFile(wheel) as archive:
        assert "memtop/agent/native/libmemtopsampler.so" in archive.namelist()


def test_a_failed_rebuild_does_not_leave_the_older_library(tmp_path: Path) -> None:
    """An older build must not pass for this one: a failed build removes it."""
    need_library()
    build_with(None, tmp_path)
    assert bytesampler.library_path(str(tmp_path)) == str(tmp_path / bytesampler.LIBRARY_NAME)
    build_with("false", tmp_path)
    with pytest.raises(bytesampler.Unavailable, match="not built"):
        bytesampler.library_path(str(tmp_path))


def test_the_library_needs_nothing_newer_than_the_oldest_glibc_claimed() -> None:
    """Undefined symbols of the built library, by glibc version (objdump -T)."""
    need_library()
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump is not installed here (binutils; CI installs it)")
    library = bytesampler.library_path()
    table = subprocess.run(
        [objdump, "-T", library], capture_output=True, text=True, check=True
    ).stdout
    versions = [
        tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_([0-9.]+)\)", table)
    ]
    assert versions, table
    assert max(versions) <= OLDEST_GLIBC, table
    undefined = {line.split()[-1] for line in table.splitlines() if "*UND*" in line}
    assert not {name for name in undefined if name.startswith(("Py", "_Py", "dl"))}, undefined


@pytest.mark.parametrize("minor", ["3.9", "3.11", "3.13", "3.15"])
def test_samples_go_with_their_blocks_and_code_objects_are_given_back(minor: str) -> None:
    """A freed or reallocated block leaves the table; the code objects of sampled stacks
    are held while sampling, released by compact() once no live sample uses them, and
    all released by stop()."""
    result = run_target(python_for(minor), "lifecycle")
    assert 1_500_000 < result["made_size"] < 2_600_000  # 4000 × bytes(500) ≈ 2.1 MB
    assert result["refs_held"] >= 1
    assert result["made_after_free"] == 0
    assert result["compacted"] > 0  # stacks of freed samples, dropped while sampling goes on
    assert result["refs_after_compact"] == 0
    length, estimate, _ = result["grow"]
    assert length <= estimate <= 1.2 * length  # one block, grown by realloc: counted once
    assert result["grow_after_free"] == 0
    assert result["released"] > 0
    assert result["refs_after_stop"] == 0


@pytest.mark.parametrize("minor", ["3.9", "3.12", "3.14", DISTRIBUTION])
def test_rows_group_by_line_file_and_traceback(minor: str) -> None:
    """The caller's line appears in cumulative rows; tracebacks run oldest frame first and
    end at the allocating line; every row, and every traceback of a row's panel, carries
    its 95 % half-width."""
    result = run_target(python_for(minor), "lifecycle")
    target = str(TARGET)
    lines = {lineno for (_, lineno), *_ in result["lineno-cumulative"]}
    caller_line = next(
        n for n, text in enumerate(TARGET.read_text().splitlines(), 1) if "# LINE: caller" in text
    )
    buffers_line = next(
        n for n, text in enumerate(TARGET.read_text().splitlines(), 1) if "# LINE: buffers" in text
    )
    assert {caller_line, buffers_line} <= lines
    (file_key, size, error, _), *_ = result["filename"]
    assert file_key == target and size > 0 and error > 0
    tracebacks = [tb for _, _, _, tb in result["traceback"]]
    assert any(
        tb[-1] == [target, buffers_line] and [target, caller_line] in tb for tb in tracebacks
    )
    panel = result["panel"]  # the traceback panel of the allocating line's row
    assert panel and all(entry["traceback"][-1] == [target, buffers_line] for entry in panel)
    assert any([target, caller_line] in entry["traceback"] for entry in panel)
    assert all(entry["size"] > 0 and entry["size_error"] > 0 for entry in panel)


@pytest.mark.parametrize("minor", ["3.12", "3.13", "3.14", "3.15"])
def test_interpreters_with_their_own_gil_are_refused(minor: str) -> None:
    """Their threads would race the sampler's tables: refused with the reason; a legacy
    subinterpreter shares the GIL and its concurrent allocations are left alone."""
    result = run_target(python_for(minor), "subinterpreters")
    assert result["isolated"].startswith("sampled mode unavailable: several interpreters")
    if minor != "3.12":
        assert result["legacy_live"] is True
        assert result["legacy_samples"] > 0


LINE_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
from memtop.agent import nativelib

def cleanup(x):
    try:
        return x()
    except ValueError:
        pass
    with open(x) as handle:
        return handle

code = cleanup.__code__
lines = [nativelib.line_of(code, offset) for offset in range(0, len(code.co_code), 2)]
print(min(lines), sorted(set(lines)))
"""


@pytest.mark.parametrize("minor", [*MINORS, DISTRIBUTION])
def test_instructions_without_a_line_get_line_0_as_in_tracemalloc(minor: str) -> None:
    """A sample taken in exception cleanup code (no line number since 3.11) is shown at
    line 0, as tracemalloc shows it, never at -1 (which the viewer rightly refuses)."""
    done = subprocess.run(
        [python_for(minor), "-c", LINE_PROBE, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lowest, seen = done.stdout.split(" ", 1)
    assert int(lowest) >= 0, seen
    assert len(json.loads(seen)) >= 4, seen  # the function's own lines were found


OWN_WORK_PROBE = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from memtop.agent import bytesampler, collector
sampler = bytesampler.load()
sampler.start(256)
# The agent's own work as its thread does it: the stdlib's json called from an agent file.
agent_file = os.path.join(os.path.dirname(collector.__file__), "protocol.py")
source = "def work(text):\\n    return [json.loads(text) for _ in range(3000)]\\n"
space = {"json": json}
exec(compile(source, agent_file, "exec"), space)
held = space["work"]("[" + ",".join(["1.5"] * 40) + "]")
table = sampler.table()
sampler.stop()
shown = [tb for tb in table.by_traceback if any(f[0].endswith("decoder.py") for f in tb)]
print(json.dumps({"shown": len(shown), "own_size": table.own_size}))
"""


@pytest.mark.parametrize("minor", ["3.9", "3.12", "3.14"])
def test_the_agents_own_work_is_never_a_row_wherever_it_allocates(minor: str) -> None:
    """Blocks the stdlib allocates for the agent (json decoding a request) count as the
    agent's own, not as a row of the program's: their stacks pass through agent files."""
    done = subprocess.run(
        [python_for(minor), "-c", OWN_WORK_PROBE, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["shown"] == 0, result
    assert result["own_size"] > 0, result


NOEXEC_PROBE = """
import ctypes, os, sys
sys.path.insert(0, sys.argv[1])
from memtop.agent import bytesampler
copy = sys.argv[2]
try:
    ctypes.PyDLL(copy)
    print("mapped directly")
except OSError:
    fds = len(os.listdir("/proc/self/fd"))
    lib = bytesampler.open_library(copy)
    print("version", lib.mts_version(), "fds", len(os.listdir("/proc/self/fd")) - fds)
"""


def test_a_library_on_a_noexec_mount_is_loaded_from_memory(tmp_path: Path) -> None:
    """dlopen cannot map a file on a noexec mount; a memfd copy can, and leaves no fd."""
    need_library()
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to mount a noexec tmpfs of its own (CI runs as root)")
    mount = tmp_path / "noexec"
    mount.mkdir()
    copy = mount / bytesampler.LIBRARY_NAME
    script = (
        f"mount -t tmpfs -o noexec,size=4m tmpfs {mount} && "
        f"cp {bytesampler.library_path()} {copy} && "
        f'{sys.executable} -c "$0" {ROOT} {copy}'
    )
    done = subprocess.run(
        [unshare, "--mount", "sh", "-c", script, NOEXEC_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "Operation not permitted" in done.stderr or "permission denied" in done.stderr.lower():
        pytest.skip(f"mounting is not allowed here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["version", str(bytesampler.API_VERSION), "fds", "0"]
