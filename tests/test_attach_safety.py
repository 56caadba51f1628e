"""What attaching refuses to do, and what it never does (attach-and-safety.md §6): squatted
run dirs (case 18), stale sockets and long paths (19), ptrace refusals (23), traced
targets (24), a root viewer facing a hostile user (26), unusual builds (28), and never
running Python in a thread that holds the GIL (4). Every live test drives real processes;
most need root (to run targets as `nobody` with setpriv) and skip without it.

Not runnable on this machine, so covered otherwise:
* ptrace_scope 1/2/3: this kernel has no Yama. The live cases need an Ubuntu runner with
  Yama; here `diagnose.ptrace_advice` is unit-tested for every scope/root/capability
  combination.
* free-threaded 3.13t/3.14t builds are not installed: the preflight is fed fake /proc and
  ELF data and must refuse them by name.
* musl/Alpine targets: no musl interpreter here; not covered.
"""

from __future__ import annotations

import ast
import fcntl
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    TARGETS,
    Plain,
    memtop_cli,
    need_gdb,
    need_interpreter,
    state_of,
    wait_for,
    wait_state,
)

from memtop.agent import rundir
from memtop.attach import gdb, procfs, pyversion, remote_exec
from memtop.attach.diagnose import ptrace_advice
from memtop.attach.elfinfo import ElfFile
from memtop.attach.preflight import Target, preflight
from memtop.attach.pyversion import PythonInfo
from memtop.errors import AttachError

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
PATH_ONLY = {"PATH": "/usr/bin:/bin"}
PYTHON_314 = "/opt/memtop-python3.14/usr/bin/python3.14"
LOADER_314 = "/opt/memtop-python3.14/usr/lib64/ld-linux-x86-64.so.2"


# --- helpers -------------------------------------------------------------------------


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (to run targets as another user)")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed here (CI installs it)")
    return path


def run_clean(command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`command` with `args`, from / with only PATH set, its output captured."""
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, env=PATH_ONLY, cwd="/"
    )


def need_nobody_python(minor: str) -> str:
    """CPython `minor`, checked to start as `nobody` (pyenv builds under a 0700 /root may
    not: their libpython is out of nobody's reach)."""
    need_root()
    need_tool("setpriv")
    python = need_interpreter(minor)
    probe = run_clean(AS_NOBODY, python, "-c", "import ctypes, json")
    if probe.returncode != 0:
        pytest.skip(f"CPython {minor} ({python}) cannot run as nobody: {probe.stderr[-200:]}")
    return python


def owned_dir(path: Path, uid: int, mode: int = 0o700) -> Path:
    """A directory owned by `uid` with exactly `mode`."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    os.chmod(path, mode)
    return path


def nobody_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a `nobody` target, with its own XDG_RUNTIME_DIR under `tmp`
    (so it never shares /tmp/memtop-65534 with another test)."""
    xdg = owned_dir(tmp / "xdg-nobody", NOBODY)
    return {**PATH_ONLY, "XDG_RUNTIME_DIR": str(xdg), **extra}


def untouched(state: Path) -> dict:
    """The target's state a few turns later: still running, no agent, not tracing."""
    counter = state_of(state)["counter"]
    after = wait_state(state, lambda s: s["counter"] > counter + 2)
    assert after["agent_loaded"] is False
    assert after["tracing"] is False
    return after


def started(state: Path) -> dict:
    return wait_state(state, lambda s: s.get("counter", 0) >= 3, timeout=20)


def remove_path(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def attach_cli(pid: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return memtop_cli("attach", str(pid), *extra, "--json", "-n", "1", timeout=90)


# --- case 18: squatted run directory -------------------------------------------------

SQUATTED = f"/tmp/memtop-{NOBODY}"


@pytest.fixture
def squat_path() -> Iterator[str]:
    """/tmp/memtop-65534, free for the test to squat; whatever was there comes back.
    Squatting tests take turns (pytest-xdist workers): a lock on this file."""
    need_root()
    turn = os.open(__file__, os.O_RDONLY)
    saved = None
    ours = False  # never remove what was there before the test
    try:
        fcntl.flock(turn, fcntl.LOCK_EX)
        if os.path.lexists(SQUATTED):
            os.rename(SQUATTED, f"{SQUATTED}.saved-{os.getpid()}")
            saved = f"{SQUATTED}.saved-{os.getpid()}"
        ours = True
        yield SQUATTED
    finally:
        if ours:
            remove_path(SQUATTED)
        if saved is not None:
            os.rename(saved, SQUATTED)
        os.close(turn)


@pytest.mark.parametrize(
    ("squat", "message"),
    [
        ("owned by root", f"is owned by uid 0, not {NOBODY} (possible squatting)"),
        ("symlink to the user's dir", "is a symlink (possible squatting)"),
        ("dangling symlink", "is a symlink (possible squatting)"),
        ("mode 0777", "has mode 777, not 700"),
    ],
)
def test_squatted_run_dir_is_refused_and_left_empty(
    plain: Plain, short_tmp: Path, squat_path: str, squat: str, message: str
) -> None:
    python = need_nobody_python("3.14")
    proc, state = plain.start(python, "attachable.py", "sleeping", user=NOBODY, env=PATH_ONLY)
    started(state)
    elsewhere = short_tmp / "elsewhere"
    if squat == "owned by root":
        owned_dir(Path(squat_path), 0)
    elif squat == "symlink to the user's dir":
        owned_dir(elsewhere, NOBODY)
        os.symlink(elsewhere, squat_path)
    elif squat == "dangling symlink":
        os.symlink(elsewhere, squat_path)
    else:
        owned_dir(Path(squat_path), NOBODY, 0o777)
    result = attach_cli(proc.pid)
    assert result.returncode == 2, result.stderr
    assert "refusing to use the run directory" in result.stderr
    assert message in result.stderr
    # Nothing was written there, nor through the link.
    if "symlink" in squat:
        assert os.readlink(squat_path) == str(elsewhere)
    if squat == "dangling symlink":
        assert not elsewhere.exists()
    else:
        assert os.listdir(squat_path) == []
    untouched(state)


# --- case 19: stale sockets, reused pids, long paths ---------------------------------


def test_stale_sockets_are_removed_and_never_connected_to(plain: Plain, short_tmp: Path) -> None:
    need_root()
    python = need_interpreter("3.14")
    xdg = owned_dir(short_tmp / "xdg", 0)
    run_dir = owned_dir(xdg / "memtop", 0)
    proc, state = plain.start(
        python, "attachable.py", "sleeping", env={**PATH_ONLY, "XDG_RUNTIME_DIR": str(xdg)}
    )
    started(state)
    start = rundir.process_start_time(proc.pid)
    # A process that had this pid before: its socket is still served (by us), so any
    # connection memtop made would sit in the backlog.
    reused = run_dir / rundir.socket_name(proc.pid, start - 1)
    old_owner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_owner.bind(str(reused))
    old_owner.listen(8)
    old_owner.setblocking(False)
    # This process's own name, left by an agent that died: nobody serves it.
    dead = run_dir / rundir.socket_name(proc.pid, start)
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(dead))
    leftover.close()
    try:
        result = attach_cli(proc.pid)
        assert result.returncode == 0, result.stderr
        assert "via remote-exec" in result.stderr
        assert not reused.exists()
        with pytest.raises(BlockingIOError):
            old_owner.accept()  # never connected to
    finally:
        old_owner.close()
    # The dead socket made way for the agent's, which left with it on detach.
    wait_for(lambda: not dead.exists(), 5, "the agent's socket to go")


def test_too_long_xdg_runtime_dir_falls_back_to_tmp(plain: Plain, short_tmp: Path) -> None:
    need_root()
    python = need_interpreter("3.14")
    xdg = short_tmp / ("x" * (rundir.MAX_SOCKET_PATH - len(str(short_tmp)) - 20))
    owned_dir(xdg, 0)  # a valid XDG_RUNTIME_DIR, only too long for a socket path below it
    assert len(str(xdg / "memtop" / "4194304-99999999999.sock")) > rundir.MAX_SOCKET_PATH
    proc, state = plain.start(
        python, "attachable.py", "sleeping", env={**PATH_ONLY, "XDG_RUNTIME_DIR": str(xdg)}
    )
    before = started(state)
    from memtop.attach.chain import attach

    attached = attach(proc.pid)
    try:
        assert os.path.dirname(attached.client.path) == "/tmp/memtop-0"
        assert len(attached.client.path) <= rundir.MAX_SOCKET_PATH
        assert attached.client.request("ping")
        assert not (xdg / "memtop").exists()
        attached.client.request("detach")
    finally:
        attached.client.close()
    wait_state(state, lambda s: not s["tracing"] and s["threads"] == before["threads"])


# --- case 23: ptrace refused ----------------------------------------------------------


@pytest.fixture(scope="session")
def nobody_memtop() -> Iterator[list[str]]:
    """A command running `python -m memtop` as nobody: a venv of Debian's python3 under
    /tmp (the test venv's python lives in root's 0700 home), with a copy of this checkout's
    package beside it (the checkout itself may sit where nobody cannot read)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run memtop as nobody")
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs /usr/bin/python3 to build a venv nobody can run")
    base = Path(tempfile.mkdtemp(prefix="mt-viewer-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        venv = base / "venv"
        steps = [
            ["/usr/bin/python3", "-m", "venv", str(venv)],
            [str(venv / "bin" / "pip"), "install", "-q", "psutil", "textual==8.2.8"],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                pytest.skip(f"cannot build a venv for nobody ({step[:3]}): {done.stderr[-300:]}")
        source = base / "src"
        shutil.copytree(
            ROOT / "memtop", source / "memtop", ignore=shutil.ignore_patterns("__pycache__")
        )
        for path in [source, *source.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        command = [*AS_NOBODY, "env", f"PYTHONPATH={source}", str(venv / "bin" / "python")]
        check = run_clean(command, "-c", "import memtop.cli")
        if check.returncode != 0:
            pytest.skip(f"nobody cannot import memtop from {source}: {check.stderr[-300:]}")
        yield [*command, "-m", "memtop"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_target_of_another_user_is_refused(plain: Plain, nobody_memtop: list[str]) -> None:
    proc, state = plain.start(sys.executable, "attachable.py", "sleeping")
    started(state)
    began = time.monotonic()
    result = run_clean(nobody_memtop, "attach", str(proc.pid), "--json", "-n", "1")
    assert result.returncode == 2, result.stderr
    assert f"pid {proc.pid} runs as root; run memtop as that user or as root" in result.stderr
    assert time.monotonic() - began < 5
    untouched(state)


def test_non_dumpable_target_is_refused(
    plain: Plain, short_tmp: Path, nobody_memtop: list[str]
) -> None:
    python = need_nobody_python("3.14")
    proc, state = plain.start(
        python, "attachable.py", "nondumpable", user=NOBODY, env=nobody_env(short_tmp)
    )
    started(state)
    began = time.monotonic()
    result = run_clean(nobody_memtop, "attach", str(proc.pid), "--json", "-n", "1")
    assert result.returncode == 2, result.stderr
    assert f"pid {proc.pid} is non-dumpable" in result.stderr
    assert "only root with CAP_SYS_PTRACE can attach" in result.stderr
    assert time.monotonic() - began < 5
    untouched(state)


def without_cap_sys_ptrace(*args: str) -> list[str]:
    """`memtop ARGS` as root, with CAP_SYS_PTRACE dropped (a container's default)."""
    capsh = need_tool("capsh")
    probe = subprocess.run(
        [capsh, "--drop=cap_sys_ptrace", "--", "-c", "grep CapEff /proc/self/status"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if probe.returncode != 0 or int(probe.stdout.split()[1], 16) & (1 << 19):
        pytest.skip(f"capsh cannot drop CAP_SYS_PTRACE here: {probe.stderr[-200:]}")
    inner = shlex.join([sys.executable, "-m", "memtop", *args])
    return [capsh, "--drop=cap_sys_ptrace", "--", "-c", inner]


@pytest.mark.parametrize(("minor", "route"), [("3.11", "gdb"), ("3.14", "remote-exec")])
def test_root_without_cap_sys_ptrace_is_told_to_add_it(
    plain: Plain, short_tmp: Path, minor: str, route: str
) -> None:
    python = need_nobody_python(minor)
    if route == "gdb":
        need_gdb()
    proc, state = plain.start(
        python, "attachable.py", "sleeping", user=NOBODY, env=nobody_env(short_tmp)
    )
    started(state)
    began = time.monotonic()
    result = subprocess.run(
        without_cap_sys_ptrace("attach", str(proc.pid), "--json", "-n", "1"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr
    assert "without CAP_SYS_PTRACE" in result.stderr
    assert "--cap-add=SYS_PTRACE" in result.stderr
    assert 'securityContext: {capabilities: {add: ["SYS_PTRACE"]}}' in result.stderr
    assert time.monotonic() - began < 5
    untouched(state)


CAP_ADVICE = "--cap-add=SYS_PTRACE"
LSM_ADVICE = "an LSM such as SELinux or AppArmor"
YAMA_1 = "ptrace_scope is 1: only a parent may attach to its children"
YAMA_2 = "ptrace_scope is 2: attaching needs CAP_SYS_PTRACE; run memtop as root"
YAMA_3 = "ptrace_scope is 3: ptrace is disabled until reboot"


@pytest.mark.parametrize(
    ("scope", "root", "has_cap", "expected"),
    [
        # A viewer that is not root: Yama decides (it has no CAP_SYS_PTRACE of its own).
        (None, False, False, LSM_ADVICE),
        (0, False, False, LSM_ADVICE),
        (1, False, False, YAMA_1),
        (2, False, False, YAMA_2),
        (3, False, False, YAMA_3),
        # Root with CAP_SYS_PTRACE passes Yama 0-2: something else refused.
        (None, True, True, LSM_ADVICE),
        (0, True, True, LSM_ADVICE),
        (1, True, True, LSM_ADVICE),
        (2, True, True, LSM_ADVICE),
        (3, True, True, YAMA_3),
        # Root without it: a container that did not grant it.
        (None, True, False, CAP_ADVICE),
        (0, True, False, CAP_ADVICE),
        (1, True, False, CAP_ADVICE),
        (2, True, False, CAP_ADVICE),
        (3, True, False, YAMA_3),
    ],
)
def test_ptrace_advice_names_the_gate_and_the_fix(
    scope: int | None, root: bool, has_cap: bool, expected: str
) -> None:
    advice = ptrace_advice(scope, root, has_cap, 4242)
    assert expected in advice
    if expected == YAMA_1:
        assert "sudo memtop attach 4242" in advice
        assert "sudo sysctl kernel.yama.ptrace_scope=0" in advice
    if expected == CAP_ADVICE:
        assert "without CAP_SYS_PTRACE" in advice and '["SYS_PTRACE"]' in advice
    # Every refusal points to a route that needs no ptrace at all.
    assert "memtop run" in advice


# --- case 24: a target already under ptrace ------------------------------------------


def test_traced_target_is_refused_untouched(plain: Plain) -> None:
    need_root()
    proc, state = plain.start(sys.executable, "attachable.py", "sleeping")
    started(state)
    tracer = subprocess.Popen(
        [sys.executable, str(TARGETS / "ptrace_holder.py"), str(proc.pid)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tracer.stdout is not None
        line = tracer.stdout.readline().strip()
        if line != "traced":
            pytest.skip(f"cannot PTRACE_SEIZE here: {tracer.communicate(timeout=5)[1]}")
        assert procfs.read_status(proc.pid).tracer_pid == tracer.pid
        result = attach_cli(proc.pid)
        assert result.returncode == 2, result.stderr
        assert f"process {proc.pid} is already traced by pid {tracer.pid}" in result.stderr
        untouched(state)
    finally:
        tracer.kill()
        tracer.wait()
    assert procfs.read_status(proc.pid).tracer_pid == 0


# --- case 26: root viewer, user target ------------------------------------------------


def foreign_target(executable: str, uid: int = NOBODY) -> Target:
    """A Target of another version than memtop's own, so the target's binary is run."""
    version = (sys.version_info[0], sys.version_info[1] + 1)
    info = PythonInfo(version, f"{version[0]}.{version[1]}.0", False, executable, executable)
    return Target(4242, 1, uid, uid, "python", info)


@pytest.mark.parametrize("layout", ["user-owned binary", "root-owned binary in a user's dir"])
def test_interpreter_the_user_could_replace_runs_as_the_user(short_tmp: Path, layout: str) -> None:
    need_root()
    bindir = owned_dir(short_tmp / "bin", NOBODY, 0o755)
    binary = bindir / "python3"
    shutil.copy("/bin/true", binary)
    if layout == "user-owned binary":
        os.chown(binary, NOBODY, NOBODY)
    command = remote_exec.caller_command(foreign_target(str(binary)), "/run/boot.py")
    assert command is not None
    assert command[:4] == AS_NOBODY
    assert command[4:7] == [str(binary), "-I", "-S"]


def test_root_owned_interpreter_runs_directly() -> None:
    need_root()
    binary = os.path.realpath("/usr/bin/python3")
    if not remote_exec.trusted_binary(binary):
        pytest.skip(f"{binary} is not root-owned in root-owned directories here")
    command = remote_exec.caller_command(foreign_target(binary), "/run/boot.py")
    assert command is not None
    assert command[:3] == [binary, "-I", "-S"]


def planted_prefix(base: Path, sentinel: Path) -> Path:
    """A copy of the 3.14 interpreter in a prefix its user owns, whose `encodings` package
    (imported at every start, even with -I -S) appends the euid that ran it to
    `sentinel`. Returns the binary."""
    real = Path(PYTHON_314).parent.parent / "lib" / "python3.14"
    stdlib = base / "lib" / "python3.14"
    stdlib.mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name != "encodings":
            (stdlib / entry.name).symlink_to(entry)
    (stdlib / "encodings").mkdir()
    for entry in (real / "encodings").iterdir():
        if entry.name != "__init__.py":
            (stdlib / "encodings" / entry.name).symlink_to(entry)
    plant = (
        "import posix as _p\n"
        f"_fd = _p.open({str(sentinel)!r}, _p.O_WRONLY | _p.O_APPEND | _p.O_CREAT, 0o666)\n"
        '_p.write(_fd, b"%d\\n" % _p.geteuid())\n'
        "_p.close(_fd)\n"
    )
    original = (real / "encodings" / "__init__.py").read_text()
    (stdlib / "encodings" / "__init__.py").write_text(plant + original)
    (base / "bin").mkdir()
    binary = base / "bin" / "python3.14"
    shutil.copy2(PYTHON_314, binary)
    for path in [base, *base.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    return binary


def test_user_writable_target_interpreter_never_runs_as_root(plain: Plain, short_tmp: Path) -> None:
    need_nobody_python("3.14")
    if sys.version_info[:2] == (3, 14):
        pytest.skip("memtop runs on 3.14 itself here: it never runs the target's binary")
    home = owned_dir(short_tmp / "user", NOBODY, 0o755)
    sentinel = home / "runs"
    binary = planted_prefix(home / "prefix", sentinel)
    proc, state = plain.start(
        str(binary), "attachable.py", "sleeping", user=NOBODY, env=nobody_env(short_tmp)
    )
    started(state)
    assert sentinel.read_text() == f"{NOBODY}\n"  # the plant runs at every start
    result = attach_cli(proc.pid)
    assert result.returncode == 0, result.stderr
    assert "via remote-exec" in result.stderr
    runs = sentinel.read_text().split()
    assert len(runs) >= 2, "memtop did not run the target's interpreter at all"
    assert set(runs) == {str(NOBODY)}, f"the user's interpreter ran as {runs}"


def test_planted_gdb_init_files_and_scripts_are_never_loaded(plain: Plain, short_tmp: Path) -> None:
    python = need_nobody_python("3.11")
    need_gdb()
    user = owned_dir(short_tmp / "user", NOBODY, 0o755)
    home, cwd, libdir = (owned_dir(user / name, NOBODY, 0o755) for name in ("home", "cwd", "lib"))
    marks = owned_dir(short_tmp / "marks", NOBODY, 0o777)
    sentinels = {name: marks / name for name in ("home-gdbinit", "cwd-gdbinit", "lib-gdb-py")}
    (home / ".gdbinit").write_text(f"shell touch {sentinels['home-gdbinit']}\n")
    (cwd / ".gdbinit").write_text(f"shell touch {sentinels['cwd-gdbinit']}\n")
    # The libpython the target loads, copied where its user controls the neighbours.
    probe = run_clean(
        AS_NOBODY,
        python,
        "-c",
        "print([l.split()[-1] for l in open('/proc/self/maps') if 'libpython' in l][0])",
    )
    if probe.returncode != 0:
        pytest.skip(f"{python} has no shared libpython: {probe.stderr[-200:]}")
    library = libdir / os.path.basename(probe.stdout.strip())
    shutil.copy2(probe.stdout.strip(), library)
    script = Path(f"{library}-gdb.py")
    script.write_text(f"open({str(sentinels['lib-gdb-py'])!r}, 'w').close()\n")
    for path in (home / ".gdbinit", cwd / ".gdbinit", library, script):
        os.chown(path, NOBODY, NOBODY)
    env = nobody_env(short_tmp, HOME=str(home), LD_LIBRARY_PATH=str(libdir))
    proc, state = plain.start(python, "attachable.py", "sleeping", user=NOBODY, env=env, cwd=cwd)
    started(state)
    assert str(library) in procfs.mapped_files(proc.pid)
    result = attach_cli(proc.pid)
    assert result.returncode == 0, result.stderr
    assert "via gdb" in result.stderr
    assert [name for name, path in sentinels.items() if path.exists()] == []
    # The same files, given to a gdb that loads what it finds, do run: the plants are live.
    subprocess.run(
        ["gdb", "-batch", "-iex", "set auto-load safe-path /", str(library)],
        capture_output=True,
        timeout=60,
        env={**PATH_ONLY, "HOME": str(home)},
        cwd=cwd,
    )
    assert [name for name, path in sentinels.items() if not path.exists()] == []


def test_gdb_is_run_without_init_files_or_auto_load() -> None:
    need_gdb()
    info = PythonInfo((3, 11), "3.11.0", False, "/x/libpython3.11.so.1.0", "/x/python3.11")
    command = gdb.gdb_command(Target(4242, 1, NOBODY, NOBODY, "python", info))
    assert {"-nx", "-nh"} <= set(command)
    settings = [command[i + 1] for i, arg in enumerate(command) if arg == "-iex"]
    assert "set auto-load off" in settings
    assert "set debuginfod enabled off" in settings


def test_fake_agent_planted_by_the_user_is_refused(plain: Plain, short_tmp: Path) -> None:
    python = need_nobody_python("3.14")
    env = nobody_env(short_tmp)
    proc, state = plain.start(python, "attachable.py", "sleeping", user=NOBODY, env=env)
    started(state)
    run_dir = owned_dir(Path(env["XDG_RUNTIME_DIR"]) / "memtop", NOBODY)
    start = rundir.process_start_time(proc.pid)
    path = run_dir / rundir.socket_name(proc.pid, start)
    log = owned_dir(short_tmp / "impostor", NOBODY) / "log"
    impostor = subprocess.Popen(
        [
            *AS_NOBODY,
            python,
            str(TARGETS / "impostor.py"),
            str(path),
            str(run_dir / rundir.token_name(proc.pid, start)),
            str(log),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=PATH_ONLY,
        cwd="/",
    )
    try:
        assert impostor.stdout is not None
        assert impostor.stdout.readline().strip() == "listening"
        result = attach_cli(proc.pid)
        assert result.returncode == 2, result.stderr
        assert f"is served by pid {impostor.pid}, not by the target {proc.pid}" in result.stderr
        # A last connection of ours: once it is logged, memtop's were too (handled in order).
        marker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        marker.connect(str(path))
        marker.sendall(b"end")
        marker.close()
        lines = wait_for(
            lambda: log.exists() and log.read_text().split()[-1:] == ["3"] and log.read_text(),
            5,
            "the impostor's log",
        ).split()
        assert lines[:-1] and set(lines[:-1]) == {"0"}, "memtop talked to the impostor"
        untouched(state)
    finally:
        impostor.kill()
        impostor.wait()


# --- case 28: unusual builds ----------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "loader", "route"),
    [
        ("3.14", LOADER_314, "remote-exec"),
        ("3.13", "/lib64/ld-linux-x86-64.so.2", "gdb"),
    ],
)
def test_interpreter_started_through_an_explicit_loader(
    plain: Plain, minor: str, loader: str, route: str
) -> None:
    python = need_interpreter(minor)
    if route == "gdb":
        need_gdb()
    if not os.path.exists(loader):
        pytest.skip(f"{loader} is missing")
    proc, state = plain.start(python, "attachable.py", "sleeping", prefix=[loader])
    started(state)
    assert procfs.exe_path(proc.pid) == os.path.realpath(loader)  # the case under test
    result = attach_cli(proc.pid)
    assert result.returncode == 0, result.stderr
    assert f"CPython {minor}" in result.stderr
    assert f"via {route} in" in result.stderr


def test_stripped_libpython_is_attached_through_its_dynamic_symbols(
    plain: Plain, short_tmp: Path
) -> None:
    python = need_interpreter("3.11")
    need_gdb()
    strip = need_tool("strip")
    original = Path(python).resolve().parent.parent / "lib" / "libpython3.11.so.1.0"
    if not original.exists():
        pytest.skip(f"{python} has no shared libpython beside it")
    libdir = short_tmp / "stripped"
    libdir.mkdir()
    library = libdir / original.name
    shutil.copy2(original, library)
    subprocess.run([strip, "--strip-all", str(library)], check=True, timeout=60)
    elf = ElfFile(str(library))
    assert ".symtab" not in {section.name for section in elf.sections}
    assert elf.has("PyRun_SimpleString")  # exported for extension modules: still in .dynsym
    proc, state = plain.start(
        python, "attachable.py", "sleeping", env={**os.environ, "LD_LIBRARY_PATH": str(libdir)}
    )
    started(state)
    assert str(library) in procfs.mapped_files(proc.pid)
    result = attach_cli(proc.pid)
    assert result.returncode == 0, result.stderr
    assert "via gdb in" in result.stderr


class FakeElf:
    """The exported symbols of a static free-threaded 3.14t binary."""

    def __init__(self, path: str) -> None:
        if "python3.14t" not in path:
            raise OSError(path)

    def has(self, name: str) -> bool:
        return name in ("PyRun_SimpleString", "Py_BytesMain", "_Py_MergeZeroLocalRefcount")

    def read_symbol(self, name: str) -> bytes | None:
        return struct.pack("<I", 0x030E01F0) if name == "Py_Version" else None


@pytest.mark.parametrize(
    ("exe", "mapped", "label"),
    [
        ("/usr/bin/python3.13t", ["/usr/lib/libpython3.13t.so.1.0"], "3.13t"),
        ("/usr/bin/python3.14t", [], "3.14.1t"),
    ],
)
def test_free_threaded_target_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, exe: str, mapped: list[str], label: str
) -> None:
    status = procfs.ProcStatus("python", "S", 0, os.geteuid(), os.getegid(), 0)
    monkeypatch.setattr(procfs, "read_status", lambda pid: status)
    monkeypatch.setattr(procfs, "start_time", lambda pid: 1)
    monkeypatch.setattr(procfs, "exe_path", lambda pid: exe)
    monkeypatch.setattr(procfs, "mapped_files", lambda pid: [exe, *mapped, "/usr/lib/libc.so.6"])
    monkeypatch.setattr(pyversion, "ElfFile", FakeElf)
    with pytest.raises(AttachError) as refused:
        preflight(4242)
    assert f"pid 4242 runs free-threaded CPython {label}" in refused.value.message
    assert "`memtop run` works for it" in refused.value.message


# --- case 4: never PyRun_* in a thread that holds the GIL ----------------------------

GDB_INJECT = ROOT / "memtop" / "attach" / "gdb_inject.py"
PENDING_CALL = re.compile(
    r"^\(int\)Py_AddPendingCall\(\(int\(\*\)\(void\*\)\)PyRun_SimpleString, \(void\*\)%d\)$"
)


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _mentions(node: ast.AST, text: str) -> list[ast.Constant]:
    return [
        n
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and text in n.value
    ]


def _assigns_chosen(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "chosen" for t in n.targets)
        for n in ast.walk(node)
    )


def _gil_checked_loop(loop: ast.For) -> bool:
    """The loop stores PyGILState_Check() in X and `continue`s when X != 0 before any
    statement that picks a thread (`chosen = ...`)."""
    body = loop.body
    for i, stmt in enumerate(body):
        if not (
            isinstance(stmt, ast.Assign)
            and _mentions(stmt.value, "(int)PyGILState_Check()")
            and len(stmt.targets) == 1
        ):
            continue
        following = body[i + 1] if i + 1 < len(body) else None
        if not (
            isinstance(following, ast.If)
            and isinstance(following.test, ast.Compare)
            and ast.unparse(following.test.left) == ast.unparse(stmt.targets[0])
            and isinstance(following.test.ops[0], ast.NotEq)
            and ast.literal_eval(following.test.comparators[0]) == 0
            and isinstance(following.body[-1], ast.Continue)
        ):
            return False
        picks = [j for j, later in enumerate(body) if _assigns_chosen(later)]
        return bool(picks) and min(picks) > i + 1
    return False


def check_python_runs_only_safely(source: str) -> None:
    """Every PyRun_* named in the gdb script is either the function pointer handed to
    Py_AddPendingCall (pending), or called in parked() in a thread chosen only after its
    PyGILState_Check() was 0, between PyGILState_Ensure and PyGILState_Release."""
    tree = ast.parse(source)
    functions = _functions(tree)
    mentions = {name: _mentions(node, "PyRun_") for name, node in functions.items()}
    found = [c for found in mentions.values() for c in found]
    # Every "PyRun_" in the code (not the comments) is one of these string constants.
    code_lines = [line.split("#", 1)[0] for line in source.splitlines()]
    assert sum(line.count("PyRun_") for line in code_lines) == len(found)
    assert _mentions(tree, "PyRun_") == found  # none at module level
    assert {name for name, hits in mentions.items() if hits} == {"pending", "parked"}

    # pending(): PyRun_SimpleString is only the function pointer given to Py_AddPendingCall
    # (the interpreter calls it later, in the main thread, at a safe point).
    for constant in mentions["pending"]:
        assert isinstance(constant.value, str) and PENDING_CALL.match(constant.value), constant

    # parked(): the thread loop skips every thread whose PyGILState_Check() is not 0, and
    # PyRun_* runs only when it chose one, in that thread, holding a GILState of its own.
    body = functions["parked"].body
    loops = [i for i, stmt in enumerate(body) if isinstance(stmt, ast.For)]
    assert loops and _gil_checked_loop(body[loops[0]])  # type: ignore[arg-type]
    for i, stmt in enumerate(body):
        if i != loops[0] and _assigns_chosen(stmt):
            assert ast.unparse(stmt) == "chosen = None" and i < loops[0], ast.unparse(stmt)

    def first(what: str, matches: Callable[[int, ast.stmt], bool]) -> int:
        found = [i for i, stmt in enumerate(body) if matches(i, stmt)]
        assert found, f"parked() has no {what}"
        return found[0]

    guard = first(
        "`if chosen is None: return`",
        lambda i, s: (
            isinstance(s, ast.If)
            and ast.unparse(s.test) == "chosen is None"
            and isinstance(s.body[-1], ast.Return)
        ),
    )
    unpack = first(
        "`thread, entry = chosen`", lambda i, s: ast.unparse(s) == "thread, entry = chosen"
    )
    switch = first(
        "switch to the chosen thread",
        lambda i, s: i > unpack and ast.unparse(s) == "thread.switch()",
    )
    ensure = first("PyGILState_Ensure", lambda i, s: bool(_mentions(s, "PyGILState_Ensure()")))
    release = first("PyGILState_Release", lambda i, s: bool(_mentions(s, "PyGILState_Release(")))
    runs = [i for i, s in enumerate(body) if _mentions(s, "PyRun_")]
    assert len(runs) == len(mentions["parked"])  # all at the top level of parked()
    assert all(loops[0] < guard < unpack < switch < ensure < i < release for i in runs)
    assert not any(isinstance(s, ast.For) for s in body[loops[0] + 1 : release])


def test_gdb_script_runs_python_only_by_pending_call_or_in_a_thread_without_the_gil() -> None:
    check_python_runs_only_safely(GDB_INJECT.read_text())


def test_parked_method_refuses_a_busy_target_whose_only_thread_holds_the_gil(
    plain: Plain,
) -> None:
    python = need_interpreter("3.11")
    need_gdb()
    proc, state = plain.start(python, "attachable.py", "busy")
    started(state)
    result = attach_cli(proc.pid, "--method", "gdb-parked")
    assert result.returncode == 2, result.stderr
    assert f"no thread of pid {proc.pid} is safely parked" in result.stderr
    listed = re.search(rf"thread {proc.pid} in [^:;)]+: ([^;)]+)", result.stderr)
    assert listed, result.stderr
    assert listed.group(1) in ("holds the GIL", "not in a blocking call")
    untouched(state)
    assert proc.poll() is None
