"""Python processes in containers built by the test (`unshare`: their own user, mount, PID
and network namespaces and a root of their own, nothing of memtop's installed), attached
from the host on both routes: gdb (3.11, Debian's own build) and sys.remote_exec (3.14).

Two kinds of container: one made by root (its root user is the host's root, as with
Docker without user namespaces) and one made by an unprivileged user (4300 here: its root
user is host uid 4300 and the host's root is nobody inside, as with rootless Podman or
user-namespaced Kubernetes pods). memtop must attach, read rows at the known line, and
leave nothing in the container's files; a symlink the container planted is never followed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TARGETS, marked_lines, memtop_cli, need_gdb, need_interpreter, stream_json
from conftest import wait_for as wait_until
from test_rundir_races import Decoys, OpenWatch, connections_to, made_decoys

from memtop.attach.chain import attach
from memtop.errors import MemtopError

MAKER_UID = 4300  # the unprivileged user who makes the rootless containers (4300-4399)
DEBIAN_PYTHON = "/usr/bin/python3"
LEAK_LINE = marked_lines(TARGETS / "leaky.py")["list_leak"]

CONTAINER = """
set -e
root={root}
mount -t tmpfs none "$root"
for d in usr lib lib64 bin etc {python_top}; do
  [ -e "/$d" ] || continue
  mkdir -p "$root/$d"; mount --rbind "/$d" "$root/$d"
done
mkdir -p "$root/tmp" "$root/proc" "$root/dev" "$root/app"
{proc}
mount --rbind /dev "$root/dev"
cp {source}/leaky.py {source}/_state.py {source}/rundir_racer.py "$root/app/"
{prepare}
exec {launch} chroot "$root" env -i PATH=/usr/bin:/bin {python} /app/leaky.py /app/state.json list
"""


PROC_OF_HOST = 'mount --rbind /proc "$root/proc"'
FEWER_CAPABILITIES = "setpriv --bounding-set=-sys_admin,-sys_ptrace,-sys_module"


@dataclass
class Box:
    """A leaking Python in its own container: its pid as the host sees it."""

    pid: int
    python: str

    def state(self) -> dict:
        try:
            state = Path(f"/proc/{self.pid}/root/app/state.json")
            return json.loads(state.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def files(self) -> list[str]:
        """Everything in the container's own files (its /tmp and /app), but the state."""
        found = []
        for part in ("tmp", "app"):
            top = Path(f"/proc/{self.pid}/root/{part}")
            for where, dirs, names in os.walk(top):
                for name in dirs + names:
                    found.append(os.path.relpath(os.path.join(where, name), top.parent))
        return sorted(name for name in found if not name.startswith("app/state.json"))


class Boxes:
    def __init__(self, short_tmp: Path) -> None:
        self.short_tmp = short_tmp
        self.started: list[subprocess.Popen] = []

    def start(
        self,
        python: str,
        maker: int = 0,
        prepare: str = "",
        pid_ns: bool = True,
        user_ns: bool = True,
    ) -> Box:
        """A container running `python` on leaky.py, made by `maker` (0: root), with a PID
        namespace of its own unless not `pid_ns` (then the host's /proc is bound in), and
        a user namespace unless not `user_ns` (then, as with Docker, its root is the
        host's root with fewer capabilities)."""
        unshare = shutil.which("unshare")
        if unshare is None:
            pytest.skip("unshare (util-linux) is not installed (CI installs it)")
        if maker and shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is not installed (CI installs it)")
        os.chmod(self.short_tmp, 0o755)
        source = self.short_tmp / "src"
        source.mkdir(mode=0o755, exist_ok=True)
        for name in ("leaky.py", "_state.py", "rundir_racer.py"):
            shutil.copy(TARGETS / name, source / name)
            os.chmod(source / name, 0o644)
        root = self.short_tmp / f"root{len(self.started)}"
        root.mkdir()
        if maker:
            os.chown(root, maker, maker)
        top = python.strip("/").split("/")[0]
        script = CONTAINER.format(
            root=root,
            python_top=top if top not in ("usr", "bin", "lib") else "",
            source=source,
            prepare=prepare,
            python=python,
            proc='mount -t proc proc "$root/proc"' if pid_ns else PROC_OF_HOST,
            launch="" if user_ns else FEWER_CAPABILITIES,
        )
        as_maker = (
            ["setpriv", f"--reuid={maker}", f"--regid={maker}", "--clear-groups"] if maker else []
        )
        box = subprocess.Popen(
            [*as_maker, unshare, *(["--user", "--map-root-user"] if user_ns else []), "--mount",
             *(["--pid", "--net"] if pid_ns else []), "--fork", "bash", "-c", script],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        self.started.append(box)

        def inside() -> int | None:
            if box.poll() is not None:
                reason = box.stderr.read().decode()[-300:]  # type: ignore[union-attr]
                pytest.skip(f"no namespaces here: {reason}")
            for child in _descendants(box.pid):
                if "leaky.py" in " ".join(_cmdline(child)):
                    return child
            return None

        pid = int(wait_until(inside, 30, "the contained program"))
        contained = Box(pid, python)
        wait_until(lambda: contained.state().get("counter", 0) >= 2, 30, "its state")
        return contained

    def close(self) -> None:
        for box in self.started:
            os.killpg(box.pid, signal.SIGKILL)  # its PID 1 ignores SIGTERM
            box.wait()


@pytest.fixture
def boxes(short_tmp: Path) -> Iterator[Boxes]:
    if os.geteuid() != 0:
        pytest.skip("needs root: memtop attaches from the host into other namespaces")
    made = Boxes(short_tmp)
    try:
        yield made
    finally:
        made.close()


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def python_for(route: str) -> str:
    """The interpreter a route is tried with, runnable by the unprivileged maker too."""
    if route == "gdb":
        need_gdb()
        if not os.path.exists(DEBIAN_PYTHON):
            pytest.skip("needs Debian's /usr/bin/python3 (CI has it)")
        return DEBIAN_PYTHON
    return need_interpreter("3.14")


def with_host_python(python: str) -> dict[str, str]:
    """The environment in which memtop finds a host interpreter of `python`'s version
    (sys.remote_exec into a container is called by one)."""
    return {**os.environ, "PATH": f"{Path(python).parent}:{os.environ.get('PATH', '')}"}


def leak_row(line: dict) -> bool:
    return any(
        row["filename"] == "/app/leaky.py" and row["lineno"] == LEAK_LINE
        for row in line.get("rows", [])
    )


def test_ps_says_where_a_contained_process_runs(boxes: Boxes) -> None:
    box = boxes.start(python_for("gdb"))
    listed = json.loads(memtop_cli("ps", "--json").stdout)
    row = next(r for r in listed if r["pid"] == box.pid)
    assert row["container"]["pid_inside"] == 1
    assert row["container"]["namespace"].startswith("pid:[")
    assert row["python"].startswith("3.")
    text = memtop_cli("ps", env={**os.environ, "COLUMNS": "300"}).stdout
    line = next(line for line in text.splitlines() if line.split()[0] == str(box.pid))
    assert "[container pid:[" in line and "pid 1 there]" in line


@pytest.mark.parametrize("maker", [0, MAKER_UID], ids=["made-by-root", "rootless"])
@pytest.mark.parametrize("route", ["gdb", "remote-exec"])
def test_an_attach_into_a_container_reads_the_leaking_line_and_leaves_nothing(
    boxes: Boxes, route: str, maker: int
) -> None:
    box = boxes.start(python_for(route), maker)
    before = box.files()
    line, err = stream_json(
        [str(box.pid), "--json", "-i", "0.3", "--mode", "exact"],
        leak_row,
        env=with_host_python(box.python),
    )
    assert f"via {route} in" in err, err
    assert line["pid"] == box.pid
    assert "memtop: detached from pid" in err
    # Its files are as they were: no run dir, no agent copy, no session, socket or lock.
    assert box.files() == before
    wait_until(lambda: box.state().get("tracing") is False, 30, "tracing to stop")
    assert box.state()["agent_loaded"] is True  # loaded once; the next attach reuses it


@pytest.mark.parametrize("route", ["gdb", "remote-exec"])
def test_a_process_sharing_the_pid_namespace_is_attached_through_its_root(
    boxes: Boxes, route: str
) -> None:
    """Another mount (and user) namespace only, as seen from a debug container sharing
    the pod's PID namespace (`kubectl debug --target`): same pid, files from its root."""
    box = boxes.start(python_for(route), MAKER_UID, pid_ns=False)
    before = box.files()
    line, err = stream_json(
        [str(box.pid), "--json", "-i", "0.3", "--mode", "exact"],
        leak_row,
        env=with_host_python(box.python),
    )
    assert f"via {route} in" in err, err
    assert box.state()["pid"] == box.pid == line["pid"]
    assert box.files() == before


@pytest.mark.parametrize("route", ["gdb", "remote-exec"])
def test_a_docker_like_container_of_roots_with_fewer_capabilities(boxes: Boxes, route: str) -> None:
    """No user namespace: its root is the host's, without CAP_SYS_ADMIN or CAP_SYS_PTRACE.
    The remote_exec caller takes on exactly its capabilities, and that is enough."""
    box = boxes.start(python_for(route), user_ns=False)
    status = Path(f"/proc/{box.pid}/status").read_text().splitlines()
    effective = int(next(x for x in status if x.startswith("CapEff:")).split()[1], 16)
    assert not effective & (1 << 19)  # CAP_SYS_PTRACE
    before = box.files()
    _, err = stream_json(
        [str(box.pid), "--json", "-i", "0.3", "--mode", "exact"],
        leak_row,
        env=with_host_python(box.python),
    )
    assert f"via {route} in" in err, err
    assert box.files() == before


@pytest.mark.parametrize("tmp", ["exec", "noexec"])
def test_sampled_mode_runs_in_a_rootless_container(boxes: Boxes, tmp: str) -> None:
    """The sampler library is staged in the container's /tmp like the rest, and loaded
    from there, or from a memfd copy where /tmp is mounted noexec."""
    noexec = 'mount -t tmpfs -o noexec none "$root/tmp"' if tmp == "noexec" else ""
    box = boxes.start(python_for("remote-exec"), MAKER_UID, prepare=noexec)
    before = box.files()
    line, err = stream_json(
        [str(box.pid), "--json", "-i", "0.3", "--mode", "sampled", "--rate", "4096"],
        leak_row,
        env=with_host_python(box.python),
    )
    assert line["mode"] == "sampled", err
    assert box.files() == before


def test_without_a_host_interpreter_of_its_version_gdb_attaches(boxes: Boxes) -> None:
    """sys.remote_exec into a container must be called by a host interpreter of the
    target's version; memtop's own (3.11) is not one, and none is on PATH: gdb goes in."""
    need_gdb()
    box = boxes.start(python_for("remote-exec"))
    path = ":".join(p for p in os.environ.get("PATH", "").split(":") if "python3.14" not in p)
    _, err = stream_json(
        [str(box.pid), "--json", "-i", "0.3", "--mode", "exact"],
        leak_row,
        env={**os.environ, "PATH": path},
    )
    assert "via gdb in" in err, err


def test_memtop_detach_stops_a_kept_agent_and_leaves_nothing(boxes: Boxes) -> None:
    box = boxes.start(python_for("gdb"), MAKER_UID)
    before = box.files()
    attached = attach(box.pid, timeout=10.0)
    assert attached.target.own_pid == 1 and attached.target.uid == MAKER_UID
    attached.client.close()  # the agent keeps serving, as after `Q`
    listed = json.loads(memtop_cli("ps", "--all", "--json").stdout)
    assert next(r for r in listed if r["pid"] == box.pid)["agent"] is True
    assert box.files() != before  # its run dir, holding the socket
    # Everything memtop made there is the container user's (host uid 4300), not root's.
    run_dir = Path(f"/proc/{box.pid}/root/tmp/memtop-0")
    made = [run_dir, *run_dir.rglob("*")]
    assert {os.lstat(path).st_uid for path in made} == {MAKER_UID}, made
    done = memtop_cli("detach", str(box.pid))
    assert done.returncode == 0, done.stderr
    assert "agent stopped" in done.stderr
    assert box.files() == before


def test_a_detach_leaves_the_agent_copy_that_another_process_of_the_container_uses(
    boxes: Boxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes of one container share its run dir and the staged agent. memtop
    attaches one and detaches it while the other's agent serves a viewer: the copy stays,
    so that agent still loads what it loads lazily (the sampler, on a switch of mode).
    Once the last agent stops, nothing of memtop's stays."""
    python = python_for("remote-exec")
    second = f'(chroot "$root" env -i {python} /app/leaky.py /app/other.json list &)'
    box = boxes.start(python, MAKER_UID, prepare=second)
    other = wait_until(
        lambda: next(
            (p for p in _descendants(boxes.started[-1].pid) if "/app/other.json" in _cmdline(p)),
            None,
        ),
        30,
        "the second program",
    )
    wait_until(lambda: Path(f"/proc/{other}/root/app/other.json").exists(), 30, "its state")
    before = box.files()
    monkeypatch.setenv("PATH", with_host_python(python)["PATH"])
    watched = attach(other, timeout=10.0)
    try:
        done = memtop_cli(str(box.pid), "--json", "-n", "1", "--mode", "exact")
        assert done.returncode == 0, done.stderr
        assert "detached from pid" in done.stderr
        reply = watched.client.request("mode", mode="sampled", rate=65536)
        assert reply["mode"] == "sampled", reply
    finally:
        watched.client.close()
    stopped = memtop_cli("detach", str(other))
    assert stopped.returncode == 0, stopped.stderr
    assert box.files() == before


def test_a_run_dir_symlink_planted_in_the_container_is_never_followed(
    boxes: Boxes, short_tmp: Path
) -> None:
    """The container's root user points /tmp/memtop-0 at a host directory (absolute
    symlinks in the container resolve on the host for whoever follows them from outside).
    The attach is refused, naming the symlink; nothing is created there."""
    decoy = short_tmp / "decoy"
    decoy.mkdir(mode=0o755)
    (decoy / "keep").write_text("the host's\n")
    box = boxes.start(python_for("gdb"), MAKER_UID, prepare=f'ln -s {decoy} "$root/tmp/memtop-0"')
    result = memtop_cli(str(box.pid), "--json", "-n", "1", timeout=60)
    assert result.returncode == 2, result.stderr
    assert "/tmp/memtop-0 is a symlink" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(decoy)) == ["keep"]
    assert box.state().get("agent_loaded") is False


def test_containers_sharing_tmp_keep_each_others_agents(
    boxes: Boxes, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two containers, each with a PID namespace of its own, share /tmp (as containers of
    one pod share an emptyDir): both programs are pid 1 there, and their files share a
    run dir. Attaching and detaching one leaves the other's serving agent, its socket and
    its agent copy alone; detaching that one then leaves nothing."""
    python = python_for("remote-exec")
    shared = short_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    share = f'mount --bind {shared} "$root/tmp"'
    first = boxes.start(python, MAKER_UID, prepare=share)
    second = boxes.start(python, MAKER_UID, prepare=share)
    monkeypatch.setenv("PATH", with_host_python(python)["PATH"])
    kept = attach(second.pid, timeout=10.0)
    kept.client.close()  # its agent keeps serving, as after `Q`
    done = memtop_cli(str(first.pid), "--json", "-n", "1", "--mode", "exact")
    assert done.returncode == 0, done.stderr
    assert "detached from pid" in done.stderr
    stopped = memtop_cli("detach", str(second.pid))
    assert stopped.returncode == 0, stopped.stderr
    assert "agent stopped" in stopped.stderr
    assert os.listdir(shared) == []


def test_a_directory_the_container_mounts_in_its_run_dir_is_not_emptied_by_root(
    boxes: Boxes, short_tmp: Path
) -> None:
    """A host directory the container sees but may not change (a hostPath volume of root's
    files): its root mounts it at /tmp/memtop-0/agent-x. When memtop, as root, takes the
    agent copies away after a detach, it does so with the container user's rights only:
    the host's file stays."""
    volume = short_tmp / "volume"
    volume.mkdir(mode=0o755)
    (volume / "keep").write_text("the host's\n")
    plant = (
        f'mkdir "$root/srv"; mount --bind {volume} "$root/srv"; '
        'mkdir -p "$root/tmp/memtop-0/agent-x"; chmod 700 "$root/tmp/memtop-0"; '
        'mount --bind "$root/srv" "$root/tmp/memtop-0/agent-x"; '
        '! rm "$root/srv/keep" 2>/dev/null'
    )
    python = python_for("remote-exec")
    box = boxes.start(python, MAKER_UID, prepare=plant)
    _, err = stream_json(
        [str(box.pid), "--json", "-i", "0.3", "--mode", "exact"],
        leak_row,
        env=with_host_python(python),
    )
    assert "memtop: detached from pid" in err, err
    assert "Traceback" not in err
    assert os.listdir(volume) == ["keep"]
    assert (volume / "keep").read_text() == "the host's\n"


# Run in a container: maps and unmaps a file named like a libpython, over and over.
MAP_AND_UNMAP = """
import mmap, sys
with open(sys.argv[1], "rb") as f:
    while True:
        mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ).close()
"""


def test_a_path_a_contained_process_maps_is_never_opened_on_the_host(
    boxes: Boxes, short_tmp: Path
) -> None:
    """memtop reads a contained process's binaries through /proc/PID/map_files, never at
    the paths its map names (they are the container's). A process that keeps changing its
    map cannot make root open such a path here: a FIFO on the host at that path would hold
    memtop for ever."""
    python = python_for("remote-exec")
    named = short_tmp / "lib" / "libpython3.99.so"
    script = short_tmp / "toggle.py"
    script.write_text(MAP_AND_UNMAP)
    script.chmod(0o644)
    toggling = (
        f'mkdir -p "$root{named.parent}"; head -c 8192 /dev/zero > "$root{named}"; '
        f'cp {script} "$root/app/"; (chroot "$root" {python} /app/toggle.py {named} &)'
    )
    boxes.start(python, MAKER_UID, prepare=toggling)
    import psutil

    toggler = wait_until(
        lambda: next(
            (p for p in psutil.pids() if "/app/toggle.py" in _cmdline(p)),
            None,
        ),
        30,
        "the mapping process",
    )

    # The path as this host reads it in the process's map, made a FIFO here.
    def mapped_path() -> str | None:
        with open(f"/proc/{toggler}/maps") as f:
            return next((line.split()[-1] for line in f if "libpython3.99" in line), None)

    host_path = Path(wait_until(mapped_path, 30, "the file in its map"))
    host_path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(host_path, 0o600)
    detecting = (
        "from memtop.attach.pyversion import detect_python\n"
        f"for _ in range(2000): detect_python({toggler}, contained=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", detecting], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_a_device_node_planted_in_the_run_dir_is_never_opened(boxes: Boxes) -> None:
    """Docker's root may make device nodes (CAP_MKNOD) that its device rules forbid it to
    open, and opening some acts on the device (a watchdog starts). Planted where memtop, as
    root, opens the lock and reads the token: refused by name, never opened."""
    from memtop.agent.rundir import process_start_time

    python = python_for("remote-exec")
    box = boxes.start(python, user_ns=False)
    run_dir = Path(f"/proc/{box.pid}/root/tmp/memtop-0")
    run_dir.mkdir(mode=0o700)
    stem = run_dir / f"1-{process_start_time(box.pid)}"
    null = os.makedev(1, 3)
    lock = Path(f"{stem}.lock")
    os.mknod(lock, 0o600 | stat.S_IFCHR, null)
    opened = OpenWatch(lock)
    result = memtop_cli(str(box.pid), "--json", "-n", "1", env=with_host_python(python))
    assert result.returncode == 2, result.stderr
    assert f"{lock.name} is not a regular file; remove it" in result.stderr
    assert opened.events() == 0, "root opened the device node at the lock's name"
    opened.close()
    # A socket that answers at the agent's name: memtop reads the token an agent left.
    lock.unlink()
    token = Path(f"{stem}.token")
    os.mknod(token, 0o600 | stat.S_IFCHR, null)
    opened = OpenWatch(token)
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(f"{stem}.sock")
        listener.listen()
        result = memtop_cli(str(box.pid), "--json", "-n", "1", env=with_host_python(python))
    finally:
        listener.close()
    assert result.returncode == 2, result.stderr
    assert f"{token.name} is not a regular file; remove it" in result.stderr
    assert opened.events() == 0, "root opened the device node at the token's name"
    opened.close()


def test_the_container_caller_refuses_a_process_that_ended() -> None:
    """The namespaces are those of the very process checked (its start time), never of a
    process that took its pid."""
    python = need_interpreter("3.14")
    from memtop.attach.remote_exec import ENTER_AND_CALL

    done = subprocess.run(
        [python, "-I", "-S", "-c", ENTER_AND_CALL, str(os.getpid()), "1", "1", "/x.py",
         "pid", "0", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 3
    assert f"process {os.getpid()} exited" in done.stderr


def test_a_read_only_tmp_is_refused_with_the_fix(boxes: Boxes) -> None:
    """No writable place for the agent in the container: refused, naming what to change
    in the pod; the program is untouched."""
    read_only = 'mount -t tmpfs -o ro none "$root/tmp"'
    box = boxes.start(python_for("gdb"), MAKER_UID, prepare=read_only)
    before = box.files()
    result = memtop_cli(str(box.pid), "--json", "-n", "1", timeout=60)
    assert result.returncode == 2, result.stderr
    assert "filesystem is read-only there in its container" in result.stderr
    assert "emptyDir volume mounted at /tmp" in result.stderr
    assert "Traceback" not in result.stderr
    assert box.state().get("agent_loaded") is False
    assert box.files() == before


# Runs a command under a seccomp filter that refuses ptrace and process_vm_readv/writev
# (EPERM), as a container runtime's default profile does for a container without
# CAP_SYS_PTRACE.
NO_PTRACE_FILTER = r"""
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1), \
                 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)
int main(int argc, char **argv) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        DENY(SYS_ptrace), DENY(SYS_process_vm_readv), DENY(SYS_process_vm_writev),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {sizeof filter / sizeof filter[0], filter};
    if (argc < 2 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program)) {
        perror("seccomp");
        return 111;
    }
    execvp(argv[1], argv + 1);
    perror("exec");
    return 112;
}
"""


@pytest.mark.parametrize("route", ["gdb", "remote-exec"])
def test_a_seccomp_filter_on_memtop_is_named_with_the_fix(
    boxes: Boxes, short_tmp: Path, route: str
) -> None:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler here (CI installs gcc)")
    source = short_tmp / "filter.c"
    source.write_text(NO_PTRACE_FILTER)
    built = subprocess.run(
        [compiler, "-O1", "-o", str(short_tmp / "filter"), str(source)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    box = boxes.start(python_for(route))
    before = box.files()
    result = subprocess.run(
        [str(short_tmp / "filter"), sys.executable, "-m", "memtop", str(box.pid), "--json",
         "-n", "1"],
        capture_output=True, text=True, timeout=120, env=with_host_python(box.python),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "runs under a seccomp filter" in result.stderr
    assert "seccompProfile: {type: Unconfined}" in result.stderr
    assert "Traceback" not in result.stderr
    assert box.state().get("agent_loaded") is False
    assert box.files() == before  # what the failed attach staged went with it


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        ("12:pids:/docker/" + "a1" * 32 + "\n0::/\n", "a1" * 6),
        ("0::/system.slice/docker-" + "b2" * 32 + ".scope\n", "b2" * 6),
        (
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e.slice/"
            "cri-containerd-" + "c3" * 32 + ".scope\n",
            "c3" * 6,
        ),
        ("0::/machine.slice/libpod-" + "d4" * 32 + ".scope/container\n", "d4" * 6),
        ("0::/kubepods/besteffort/pod5e6f/" + "e5" * 32 + "\n", "e5" * 6),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
        ("0::/\n", None),
    ],
)
def test_a_container_runtimes_id_is_read_from_cgroup_paths(
    cgroup: str, expected: str | None
) -> None:
    from memtop.attach.container import container_id

    assert container_id(cgroup) == expected


# Run in a container as its root: finds memtop's sys.remote_exec caller (it waits on the
# FIFO the container put at /proc/1/maps), tries to open its memory for writing, says how
# that went, and lets it go on.
PTRACE_THE_CALLER = """
import json, os, time
while True:
    for entry in os.listdir("/realproc"):
        try:
            with open("/realproc/%s/cmdline" % entry, "rb") as f:
                if b"memtop-enter" not in f.read():
                    continue
        except (OSError, ValueError):
            continue
        try:
            os.close(os.open("/realproc/%s/mem" % entry, os.O_RDWR))
            outcome = "opened"
        except OSError as exc:
            outcome = exc.strerror
        with open("/app/attack.tmp", "w") as f:
            json.dump({"mem": outcome}, f)
        os.rename("/app/attack.tmp", "/app/attack.json")
        os.close(os.open("/proc/1/maps", os.O_WRONLY))
        raise SystemExit(0)
    time.sleep(0.01)
"""


def test_the_container_caller_is_out_of_reach_of_the_containers_root(
    boxes: Boxes, short_tmp: Path
) -> None:
    """memtop's caller of sys.remote_exec is root of the host's mount namespace, chrooted,
    in the container's PID namespace with its root's uid and capabilities. The container's
    root (no CAP_SYS_PTRACE, as with Docker) holds it on a fake /proc/1/maps and tries to
    open its memory: refused, so no code of the container's runs there."""
    python = python_for("remote-exec")
    attack = short_tmp / "attack.py"
    attack.write_text(PTRACE_THE_CALLER)
    attack.chmod(0o644)
    fake_proc = (
        f'cp {attack} "$root/app/"; mkdir "$root/realproc"; '
        'mount -t proc proc "$root/realproc"; mount -t tmpfs none "$root/proc"; '
        'ln -s /realproc/self "$root/proc/self"; mkdir "$root/proc/1"; '
        'mkfifo "$root/proc/1/maps"; '
        f'({FEWER_CAPABILITIES} chroot "$root" {python} /app/attack.py &)'
    )
    box = boxes.start(python, user_ns=False, prepare=fake_proc)
    result = memtop_cli(
        str(box.pid), "--json", "-n", "1", "--method", "remote-exec", timeout=90,
        env=with_host_python(python),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    outcome = json.loads(Path(f"/proc/{box.pid}/root/app/attack.json").read_text())
    assert outcome["mem"] == "Permission denied"


def test_a_container_whose_proc_shows_no_target_is_refused_with_the_fix(boxes: Boxes) -> None:
    """A /proc in the container that is not its PID namespace's (a tmpfs, or none): the
    sys.remote_exec caller cannot find the target's map there. Refused before anything is
    sent, naming the cause and the fix; nothing stays in the container."""
    python = python_for("remote-exec")
    no_proc = (
        'mkdir "$root/realproc"; mount -t proc proc "$root/realproc"; '
        'mount -t tmpfs none "$root/proc"; ln -s /realproc/self "$root/proc/self"'
    )
    box = boxes.start(python, MAKER_UID, prepare=no_proc)
    before = box.files()
    result = memtop_cli(str(box.pid), "--json", "-n", "1", env=with_host_python(python))
    assert result.returncode == 2, result.stderr
    assert "its /proc shows no pid 1" in result.stderr
    assert "use --method gdb" in result.stderr
    assert "Traceback" not in result.stderr
    assert box.files() == before
    assert box.state().get("agent_loaded") is False


def test_a_call_held_by_the_containers_fake_proc_leaves_no_process_behind(boxes: Boxes) -> None:
    """A FIFO at the container's /proc/1/maps holds the sys.remote_exec call until memtop
    gives up on it: memtop says so, and no process of its stays in the container."""
    python = python_for("remote-exec")
    fake_proc = (
        'mkdir "$root/realproc"; mount -t proc proc "$root/realproc"; '
        'mount -t tmpfs none "$root/proc"; ln -s /realproc/self "$root/proc/self"; '
        'mkdir "$root/proc/1"; mkfifo "$root/proc/1/maps"'
    )
    box = boxes.start(python, user_ns=False, prepare=fake_proc)
    result = memtop_cli(
        str(box.pid), "--json", "-n", "1", "--method", "remote-exec", timeout=90,
        env=with_host_python(python),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "did not return within" in result.stderr
    assert "Traceback" not in result.stderr
    import psutil

    def callers() -> list[int]:
        return [p for p in psutil.pids() if "memtop-enter" in " ".join(_cmdline(p))]

    wait_until(lambda: not callers(), 10, "memtop's caller to end")


RACER_SECONDS = 12


@pytest.fixture
def host_decoys(short_tmp: Path) -> Iterator[Decoys]:
    with made_decoys(short_tmp) as made:
        yield made


def test_a_racing_container_changes_nothing_outside_it(boxes: Boxes, host_decoys: Decoys) -> None:
    """The container's root user races root's attaches from the host: it swaps the run dir
    and the agent copy being built for symlinks to host paths (absolute symlinks there
    lead to the host's files for whoever follows them from outside) and plants links at
    every name memtop uses. Nothing outside the container changes or is opened."""
    decoys = host_decoys
    python = python_for("remote-exec")
    racer = (
        f'(chroot "$root" {python} /app/rundir_racer.py /tmp/memtop-0 1 auto '
        f"{decoys.directory} {decoys.writable} {decoys.secret} {decoys.socket_path} "
        f"/app/stop {RACER_SECONDS} 8 /app/report.json >/dev/null 2>&1 &)"
    )
    box = boxes.start(python, MAKER_UID, prepare=racer)
    report = Path(f"/proc/{box.pid}/root/app/report.json")
    before = decoys.fingerprint()
    watch = OpenWatch(decoys.secret)
    refusals: list[str] = []
    unclear: list[str] = []
    attached = 0
    deadline = time.monotonic() + RACER_SECONDS + 60
    env = with_host_python(python)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = env["PATH"]  # attach() finds the host interpreter on PATH
    try:
        while not report.exists() and time.monotonic() < deadline:
            try:
                done = attach(box.pid, timeout=2.0)
            except MemtopError as exc:
                refusals.append(exc.message)
                continue
            except Exception as exc:  # a traceback, not a message
                unclear.append(repr(exc))
                continue
            attached += 1
            try:
                done.client.request("ping")
                done.client.request("detach")
            except MemtopError as exc:
                refusals.append(exc.message)
            finally:
                done.client.close()
    finally:
        os.environ["PATH"] = old_path
        opened = watch.events()
        watch.close()
    counts = json.loads(report.read_text())
    assert decoys.fingerprint() == before, "root changed something outside the container"
    assert opened == 0, "root opened a host file the container linked"
    assert connections_to(decoys.listener) == 0, "root connected to a host socket"
    assert unclear == [], unclear
    for what in ("run dir swapped for a symlink", "lock planted", "token planted"):
        assert counts.get(what, 0) > 0, counts
    assert attached > 0, refusals  # quiet phases let attaches through
    assert box.state().get("counter", 0) > 0
