"""Compiled code charges its allocations to the Python line that called it: memtop says so
when one line holds most of the traced memory and extension modules are loaded. The
extension here is a real one, built with gcc against the interpreter memtop runs."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from conftest import ROOT, TARGETS, marked_lines, wait_for
from ui_fakes import CWD, T0, FakeSource, settle, status

from memtop.compiled import extension_modules, read_extension_modules
from memtop.model import Query, Refresh
from memtop.ui.app import MemtopApp

CALLER = TARGETS / "compiled" / "caller.py"
LINES = marked_lines(CALLER)
ABI = ".cpython-312-x86_64-linux-gnu.so"


@pytest.fixture(scope="module")
def extension(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding allocmod, compiled for the interpreter `memtop run` uses."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (CI installs it)")
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        pytest.skip(f"no Python.h in {include}")
    out = tmp_path_factory.mktemp("ext")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O1", f"-I{include}", str(TARGETS / "compiled" / "allocmod.c"),
         "-o", str(out / f"allocmod{suffix}")],
        check=True,
    )  # fmt: skip
    return out


def watch(mode_args: list[str], held: str, *, text: bool = False, timeout: float = 90) -> str:
    """`memtop run` of caller.py until a refresh shows the line `held` holding most of
    the traced memory (the program allocates as it starts; the first refreshes may come
    before that); returns that refresh (a JSON line, or with `text` the text view's)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "memtop", "run", "-b" if text else "--json", "-i", "0.3",
         str(CALLER), *mode_args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    found = ""
    try:
        block: list[str] = []
        for line in proc.stdout:
            if time.monotonic() > deadline:
                break
            if not text:
                refresh = json.loads(line)
                top = max(refresh["rows"], key=lambda r: r["size"], default=None)
                if (
                    top
                    and top["key"].endswith(held)
                    and top["size"] * 2 >= refresh["traced_current"]
                ):
                    found = line
                    break
                continue
            if line.strip():
                block.append(line)
                continue
            if any(held in b for b in block) and any(b.startswith("note: ") for b in block):
                found = "".join(block)
                break
            block = []
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert found, f"no refresh with {held} holding most memory: {err[-500:]}"
    return found


def test_memory_allocated_in_compiled_code_is_explained(extension: Path, tmp_path: Path) -> None:
    held = f"caller.py:{LINES['compiled_call']}"
    args = [str(tmp_path / "s"), "compiled", str(extension)]
    line = json.loads(watch(args, held))
    hint = line["compiled_code"]
    assert hint is not None, line["rows"][:3]
    assert hint["key"] == f"{CALLER}:{LINES['compiled_call']}"
    assert hint["share"] >= 0.5 and hint["extension_modules"] >= 1
    text = watch(args, held, text=True)
    note = next(t for t in text.splitlines() if t.startswith("note: "))
    assert held in note
    assert "charged to the Python line that called it" in note
    assert "a deeper nframe does not help" in note


def test_the_same_memory_from_python_code_gets_no_such_note(tmp_path: Path) -> None:
    line = json.loads(watch([str(tmp_path / "s"), "python"], f"caller.py:{LINES['python_call']}"))
    assert line["compiled_code"] is None


def test_extension_modules_are_read_from_the_maps_and_the_stdlibs_are_left_out() -> None:
    numpy = "/venv/lib/python3.12/site-packages/numpy/core/_multiarray_umath" + ABI
    maps = "\n".join(
        [
            f"7f00-7f01 r-xp 0 08:01 1 /usr/lib/python3.12/lib-dynload/_json{ABI}",
            f"7f01-7f02 r-xp 0 08:01 2 {numpy}",
            f"7f02-7f03 r--p 0 08:01 2 {numpy}",
            "7f03-7f04 r-xp 0 08:01 3 /srv/app/fast.abi3.so",
            "7f04-7f05 r-xp 0 08:01 4 /venv/lib/python3.12/site-packages/pkg/libhelper.so",
            "7f05-7f06 r-xp 0 08:01 5 /usr/lib/x86_64-linux-gnu/libc.so.6",
            "7f06-7f07 rw-p 0 00:00 0 [heap]",
            f"7f07-7f08 r-xp 0 08:01 6 /tmp/odd name{ABI}",
        ]
    )
    assert extension_modules(maps) == {
        numpy,
        "/srv/app/fast.abi3.so",
        "/venv/lib/python3.12/site-packages/pkg/libhelper.so",
        f"/tmp/odd name{ABI}",
    }


class CompiledProgram(FakeSource):
    """The fake program, with its biggest line holding most memory and extensions loaded."""

    def sample(self, query: Query, n: int) -> Refresh:
        sample = super().sample(query, n)
        top = max(sample.rows, key=lambda row: row.size)
        return dataclasses.replace(
            sample, traced_current=int(top.size * 1.25), extension_modules=12
        )


async def test_the_live_view_says_where_compiled_code_put_its_memory() -> None:
    app = MemtopApp(
        CompiledProgram(), Query(), 1.0, clock=lambda: T0 + 90, cwd=CWD, autorefresh=False
    )
    async with app.run_test(size=(220, 40)) as pilot:
        await settle(pilot)
        line = status(app)
        assert "80% of traced memory is charged to app/cache.py:42" in line
        assert "(12 extension modules loaded)" in line and "deeper nframe" in line


def test_an_extension_replaced_on_disk_still_counts(extension: Path, tmp_path: Path) -> None:
    """After a deploy or `pip install -U`, the maps name the loaded module '(deleted)'."""
    moved = tmp_path / "ext"
    shutil.copytree(extension, moved)
    ready = tmp_path / "ready"
    program = subprocess.Popen(
        [sys.executable, "-c",
         f"import sys, time; sys.path.insert(0, {str(moved)!r}); import allocmod; "
         f"open({str(ready)!r}, 'w').close(); time.sleep(120)"],
    )  # fmt: skip
    try:
        wait_for(ready.exists, 30, "the program to load the extension")
        (loaded,) = moved.glob("allocmod*")
        loaded.unlink()
        assert str(loaded) in (read_extension_modules(program.pid) or ())
    finally:
        program.kill()
        program.wait()
