"""A Python process in a container built by the test (`unshare`: its own user, mount, PID
and network namespaces and a root of its own): `memtop ps` says where it runs and its pid
there, and an attach is refused with what to do instead, touching nothing in it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TARGETS, memtop_cli, wait_for

PYTHON = Path(sys.base_prefix).resolve()

CONTAINER = """
set -e
root={root}
mount -t tmpfs none "$root"
for d in usr lib lib64 bin etc {python_top}; do
  [ -e "/$d" ] || continue
  mkdir -p "$root/$d"; mount --rbind "/$d" "$root/$d"
done
mkdir -p "$root/tmp" "$root/proc" "$root/dev"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
cp {leaky} {state_module} "$root/tmp/"
exec chroot "$root" {python} /tmp/leaky.py /tmp/state.json list
"""


@pytest.fixture
def contained(short_tmp: Path) -> Iterator[tuple[int, Path]]:
    """(host pid of a leaking Python inside its own container, its state file seen from
    the host)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    root = short_tmp / "root"
    root.mkdir()
    script = CONTAINER.format(
        root=root,
        python_top=str(PYTHON).strip("/").split("/")[0],
        leaky=TARGETS / "leaky.py",
        state_module=TARGETS / "_state.py",
        python=Path(sys.executable).resolve(),
    )
    box = subprocess.Popen(
        [unshare, "--user", "--map-root-user", "--mount", "--pid", "--net", "--fork",
         "bash", "-c", script],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip

    def inside() -> int | None:
        if box.poll() is not None:
            pytest.skip(f"no namespaces here: {box.stderr.read().decode()[-300:]}")  # type: ignore[union-attr]
        for child in _descendants(box.pid):
            if "leaky.py" in " ".join(_cmdline(child)):
                return child
        return None

    try:
        pid = int(wait_for(inside, 30, "the contained program"))
        state = Path(f"/proc/{pid}/root/tmp/state.json")
        wait_for(lambda: state.exists(), 30, "the contained program's state")
        yield pid, state
    finally:
        os.killpg(box.pid, signal.SIGKILL)
        box.wait()


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def test_ps_says_where_a_contained_process_runs(contained: tuple[int, Path]) -> None:
    pid, _ = contained
    listed = json.loads(memtop_cli("ps", "--json").stdout)
    row = next(r for r in listed if r["pid"] == pid)
    assert row["container"]["pid_inside"] == 1
    assert row["container"]["namespace"].startswith("pid:[")
    text = memtop_cli("ps", env={**os.environ, "COLUMNS": "300"}).stdout
    line = next(line for line in text.splitlines() if line.split()[0] == str(pid))
    assert "[container pid:[" in line and "pid 1 there]" in line


def test_an_attach_across_containers_is_refused_with_what_to_do(
    contained: tuple[int, Path],
) -> None:
    pid, state = contained
    before = sorted(os.listdir(f"/proc/{pid}/root/tmp"))
    result = memtop_cli(str(pid), "--json", "-n", "1", timeout=60)
    assert result.returncode == 2, result.stderr
    assert "runs in another container" in result.stderr
    assert "mount and PID namespace" in result.stderr and "Run memtop inside" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing reached the program: no agent, no tracing, no file in its filesystem.
    counter = json.loads(state.read_text())["counter"]
    after = wait_for(
        lambda: (s := json.loads(state.read_text() or "{}")).get("counter", 0) > counter + 2 and s,
        30,
        "the contained program to go on",
    )
    assert after["agent_loaded"] is False and after["tracing"] is False
    assert sorted(os.listdir(f"/proc/{pid}/root/tmp")) == before
