"""A root viewer in a hostile user's run directory: whatever that user swaps, links or
plants there, root changes nothing outside it, reads nothing through it and connects
nowhere else. Attacks come from a real racer running as another uid (4100-4199 are this
file's), against real root attaches; then each attack once, deterministically.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TARGETS, Plain, need_interpreter, read_state, wait_state

from memtop.agent import rundir
from memtop.attach import discovery
from memtop.attach.chain import attach
from memtop.errors import AttachError, MemtopError

RACER_UID = 4101
PLANTER_UID = 4102  # the deterministic cases' target user


def as_user(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


AS_RACER = as_user(RACER_UID)
PATH_ONLY = {"PATH": "/usr/bin:/bin"}
ATTACHES = 40
MIN_ATTACHED = 3
RACE_SECONDS = 12.0
ATTACH_SECONDS = 120.0
RACER_SECONDS = 300  # a bound only: the racer stops as soon as the attaches are done
IN_ACCESS, IN_OPEN = 0x1, 0x20


def need_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (the viewer under attack is root; the racer is another uid)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed here (CI installs it)")
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs /usr/bin/python3 to run the racer as another uid")


def owned(path: Path, uid: int, mode: int) -> Path:
    path.mkdir(exist_ok=True)
    os.chown(path, uid, uid)
    os.chmod(path, mode)
    return path


@dataclass
class Decoys:
    """Things outside the run dir that root must leave exactly as they are."""

    directory: Path  # root's, like /etc: must never be chowned, chmodded or written into
    writable: Path  # root's, 0666: the user may hard-link it (and write it), never own it
    secret: Path  # root's, 0600: must never be opened by root on the user's behalf
    listener: socket.socket  # root's, in a root dir: root must never connect to it
    socket_path: Path

    def fingerprint(self) -> dict[str, tuple]:
        """Owner, mode, type, mtime and content of every decoy (and of /etc/passwd)."""
        found: dict[str, tuple] = {}
        paths = [self.directory, *sorted(self.directory.iterdir()), self.secret]
        for path in [*paths, Path("/etc/passwd"), Path("/etc/shadow")]:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                content: object = sorted(os.listdir(path))
            elif stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = stat.filemode(st.st_mode)
            found[str(path)] = (st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns, content)
        # The user may write this one through a hard link, as anyone may: not its content.
        st = os.lstat(self.writable)
        found[str(self.writable)] = (st.st_uid, st.st_gid, st.st_mode)
        return found


@pytest.fixture
def decoys(short_tmp: Path) -> Iterator[Decoys]:
    need_root_and_tools()
    with made_decoys(short_tmp) as made:
        yield made


@contextlib.contextmanager
def made_decoys(short_tmp: Path) -> Iterator[Decoys]:
    """Root's things in `short_tmp` that nobody acting for a user may touch."""
    os.chmod(short_tmp, 0o755)
    directory = owned(short_tmp / "decoy-dir", 0, 0o755)
    (directory / "keep").write_text("root's file\n")
    writable = short_tmp / "decoy-rw"
    writable.write_text("anyone may write this\n")
    os.chmod(writable, 0o666)
    secret = short_tmp / "decoy-secret"
    secret.write_text(os.urandom(16).hex() + "\n")
    os.chmod(secret, 0o600)
    socket_path = owned(short_tmp / "decoy-sock", 0, 0o755) / "s"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(64)
    listener.setblocking(False)
    try:
        yield Decoys(directory, writable, secret, listener, socket_path)
    finally:
        listener.close()


class OpenWatch:
    """inotify on a file: did anyone open or read it?"""

    def __init__(self, path: Path) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        watch = self.libc.inotify_add_watch(self.fd, str(path).encode(), IN_OPEN | IN_ACCESS)
        assert watch >= 0, os.strerror(ctypes.get_errno())

    def events(self) -> int:
        try:
            return len(os.read(self.fd, 65536))
        except BlockingIOError:
            return 0

    def close(self) -> None:
        os.close(self.fd)


def connections_to(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def python_314_as(uid: int) -> str:
    """CPython 3.14 (attached by sys.remote_exec: fast), checked to run as `uid`."""
    python = need_interpreter("3.14")
    probe = subprocess.run(
        [*as_user(uid), python, "-c", "import json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=PATH_ONLY,
        cwd="/",
    )
    if probe.returncode != 0:
        pytest.skip(f"{python} cannot run as uid {uid}: {probe.stderr[-200:]}")
    return python


def test_root_attaches_change_nothing_outside_a_raced_run_dir(
    plain: Plain, short_tmp: Path, decoys: Decoys
) -> None:
    python = python_314_as(RACER_UID)
    xdg = owned(short_tmp / "xdg", RACER_UID, 0o700)
    run = xdg / "memtop"
    proc, state = plain.start(
        python,
        "attachable.py",
        "sleeping",
        user=RACER_UID,
        env={**PATH_ONLY, "XDG_RUNTIME_DIR": str(xdg)},
    )
    wait_state(state, lambda s: s.get("counter", 0) >= 3, timeout=20)
    before = decoys.fingerprint()
    watch = OpenWatch(decoys.secret)
    stop = short_tmp / "stop"
    report = owned(short_tmp / "racer", RACER_UID, 0o755) / "report.json"
    start = rundir.process_start_time(proc.pid)
    racer = subprocess.Popen(
        [
            *AS_RACER,
            "/usr/bin/python3",
            str(TARGETS / "rundir_racer.py"),
            str(run),
            str(proc.pid),
            str(start),
            str(decoys.directory),
            str(decoys.writable),
            str(decoys.secret),
            str(decoys.socket_path),
            str(stop),
            str(RACER_SECONDS),
            "8",
            str(report),
        ],
        env=PATH_ONLY,
        cwd="/",
        stderr=subprocess.PIPE,
        text=True,
    )
    refusals: list[str] = []
    unclear: list[str] = []
    attached = number = 0
    # At least ATTACHES attaches, and on until some got through: refused ones take
    # milliseconds, so 40 of them can all fall inside one attack phase.
    deadline = time.monotonic() + ATTACH_SECONDS
    # And for some seconds: the racer's attack and quiet phases last up to 0.5 and 2 s,
    # and its rarer attacks need an attach in flight during an attack phase.
    least = time.monotonic() + RACE_SECONDS
    try:
        while (
            number < ATTACHES or time.monotonic() < least or attached < MIN_ATTACHED
        ) and time.monotonic() < deadline:
            number += 1
            try:
                done = attach(proc.pid, timeout=2.0)
            except MemtopError as exc:
                refusals.append(exc.message)
                continue
            except Exception as exc:  # what the old code did: a traceback, not a message
                unclear.append(repr(exc))
                continue
            attached += 1
            try:
                done.client.request("ping")
                if number % 2 == 0:
                    done.client.request("detach")  # else the next attach reuses the agent
            except MemtopError as exc:
                refusals.append(exc.message)
            finally:
                done.client.close()
    finally:
        stop.touch()
        try:
            _, errors = racer.communicate(timeout=30)
        finally:
            racer.kill()
            racer.wait()
        opened = watch.events()
        watch.close()
    counts = json.loads(report.read_text())
    assert racer.returncode == 0, errors
    assert decoys.fingerprint() == before, "root changed a file or directory outside the run dir"
    assert opened == 0, "root opened a file the user linked into the run dir"
    assert connections_to(decoys.listener) == 0, "root connected to a socket the user linked"
    assert unclear == [], unclear
    assert proc.poll() is None and read_state(state) is not None
    # The racer really raced: each kind of attack happened.
    for what in ("run dir swapped for a symlink", "lock planted", "token planted"):
        assert counts.get(what, 0) > 0, counts
    assert counts.get("staging swapped", 0) + counts.get("result planted", 0) > 0, counts
    assert attached >= MIN_ATTACHED, refusals  # quiet phases let attaches through


# --- each attack once ------------------------------------------------------------------


@dataclass
class Planted:
    """A target of PLANTER_UID with its run dir, where the test plants things as root."""

    proc: subprocess.Popen[bytes]
    state: Path
    run: Path
    start: int

    def name(self, ext: str) -> Path:
        return self.run / f"{self.proc.pid}-{self.start}{ext}"


@pytest.fixture
def planted(plain: Plain, short_tmp: Path, decoys: Decoys) -> Planted:
    python = python_314_as(PLANTER_UID)
    xdg = owned(short_tmp / "xdg", PLANTER_UID, 0o700)
    run = owned(xdg / "memtop", PLANTER_UID, 0o700)
    proc, state = plain.start(
        python,
        "attachable.py",
        "sleeping",
        user=PLANTER_UID,
        env={**PATH_ONLY, "XDG_RUNTIME_DIR": str(xdg)},
    )
    wait_state(state, lambda s: s.get("counter", 0) >= 3, timeout=20)
    return Planted(proc, state, run, rundir.process_start_time(proc.pid))


def test_lock_hard_linked_to_a_root_file_is_refused_and_the_file_stays_roots(
    planted: Planted, decoys: Decoys
) -> None:
    os.link(decoys.writable, planted.name(".lock"))
    before = decoys.fingerprint()
    with pytest.raises(AttachError, match=r"\.lock belongs to uid 0, not 4102"):
        attach(planted.proc.pid, timeout=2.0)
    assert decoys.fingerprint() == before


def test_token_linked_to_a_secret_is_never_read(planted: Planted, decoys: Decoys) -> None:
    first = attach(planted.proc.pid, timeout=5.0)
    first.client.close()  # no detach: the next attach finds the agent serving
    planted.name(".token").symlink_to(decoys.secret)
    watch = OpenWatch(decoys.secret)
    try:
        with pytest.raises(AttachError, match=r"\.token is a symlink"):
            attach(planted.proc.pid, timeout=2.0)
        assert watch.events() == 0, "root read the file the token name points to"
    finally:
        watch.close()


def test_socket_name_linked_to_a_root_socket_is_never_connected(
    planted: Planted, decoys: Decoys
) -> None:
    planted.name(".sock").symlink_to(decoys.socket_path)
    assert not discovery.agent_serving(planted.proc.pid, PLANTER_UID, PLANTER_UID)  # `memtop ps`
    done = attach(planted.proc.pid, timeout=5.0)  # the link is stale: removed, then inject
    try:
        assert done.how == "remote-exec"
        assert done.client.request("ping")
        done.client.request("detach")
    finally:
        done.client.close()
    assert connections_to(decoys.listener) == 0


@pytest.mark.parametrize(
    "layout",
    [
        "world-writable",
        "group-writable",
        "a symlink to a private dir",
        "under a symlinked directory",
        "another user's",
        "under another user's directory",
    ],
)
def test_unsafe_xdg_runtime_dir_is_not_used(short_tmp: Path, layout: str) -> None:
    need_root_and_tools()
    uid = PLANTER_UID
    os.chmod(short_tmp, 0o755)
    private = owned(short_tmp / "private", uid, 0o700)
    xdg = short_tmp / "xdg"
    if layout == "world-writable":
        owned(xdg, uid, 0o777)
    elif layout == "group-writable":
        owned(xdg, uid, 0o770)
    elif layout == "a symlink to a private dir":
        xdg.symlink_to(private)
    elif layout == "under a symlinked directory":
        (short_tmp / "link").symlink_to(short_tmp)
        xdg = short_tmp / "link" / "private"
    elif layout == "another user's":
        owned(xdg, uid + 1, 0o700)
    else:
        parent = owned(short_tmp / "theirs", uid + 1, 0o755)
        xdg = owned(parent / "xdg", uid, 0o700)
    assert rundir.default_run_dir(uid, {"XDG_RUNTIME_DIR": str(xdg)}) == f"/tmp/memtop-{uid}"
    # The same directory, private and reached without links, is used.
    assert rundir.default_run_dir(uid, {"XDG_RUNTIME_DIR": str(private)}) == f"{private}/memtop"
