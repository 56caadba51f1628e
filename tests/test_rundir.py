"""The run directory's fd-only operations (memtop.agent.rundir, memtop.agent.nofollow): what
each does with a symlink, a hard link, a FIFO or a foreign file at its name. As root, the
directory is handed to uid 4103 (4100-4199 are the run-dir tests' uids)."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from memtop.agent import nofollow, rundir
from memtop.agent.rundir import RunDir, RunDirError, RunDirMissing, open_run_dir
from memtop.attach.session import agent_files, remove_stale, stage_agent

OWNER = 4103


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (to create files for another uid)")


@pytest.fixture
def base(short_tmp: Path) -> Path:
    need_root()
    os.chmod(short_tmp, 0o755)
    return short_tmp


@pytest.fixture
def run_dir(base: Path) -> Iterator[RunDir]:
    """A run dir of OWNER, created by root through open_run_dir."""
    with open_run_dir(str(base / "run"), OWNER, OWNER, create=True) as opened:
        yield opened


def test_root_creates_the_run_dir_for_its_user(base: Path) -> None:
    path = base / "run"
    open_run_dir(str(path), OWNER, OWNER, create=True).close()
    info = path.lstat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (OWNER, OWNER, 0o700)
    with pytest.raises(RunDirMissing):
        open_run_dir(str(base / "absent"), OWNER)


def test_a_symlink_anywhere_on_the_way_is_refused(base: Path) -> None:
    real = base / "real"
    real.mkdir()
    (base / "link").symlink_to(real)
    with pytest.raises(RunDirError, match="link is a symlink, not a directory"):
        open_run_dir(str(base / "link" / "run"), OWNER, create=True)
    assert not (real / "run").exists()


def test_a_directory_swapped_in_after_mkdir_is_not_taken_for_ours(base: Path) -> None:
    theirs = base / "theirs"
    theirs.mkdir(0o700)
    os.chown(theirs, OWNER, OWNER)
    parent = os.open(base, nofollow.DIR_FLAGS)
    try:
        with pytest.raises(nofollow.UnsafePath, match="changed while it was being created"):
            nofollow.open_fresh_dir(parent, "theirs", str(theirs))
    finally:
        os.close(parent)


def test_write_replaces_a_link_without_writing_through_it(run_dir: RunDir, base: Path) -> None:
    victim = base / "victim"
    victim.write_text("root's\n")
    (base / "run" / "a.session").symlink_to(victim)
    os.link(victim, base / "run" / "b.session")
    for name in ("a.session", "b.session"):
        run_dir.write(name, b"{}")
        info = (base / "run" / name).lstat()
        assert stat.S_ISREG(info.st_mode) and info.st_uid == OWNER
        assert stat.S_IMODE(info.st_mode) == 0o600
    assert victim.read_text() == "root's\n" and victim.stat().st_uid == 0


@pytest.mark.parametrize(
    ("plant", "message"),
    [
        ("symlink", "is a symlink"),
        ("hard link", "belongs to uid 0"),
        ("hard link of the owner's", "has 2 hard links"),
        ("fifo", "is not a regular file"),
        ("root's file", "belongs to uid 0"),
        ("too large", "is larger than 1024 bytes"),
    ],
)
def test_read_refuses_what_the_owner_did_not_write(
    run_dir: RunDir, base: Path, plant: str, message: str
) -> None:
    secret = base / "secret"
    secret.write_text("root only\n")
    os.chmod(secret, 0o600)
    theirs = base / "theirs"
    theirs.write_text("x")
    os.chown(theirs, OWNER, OWNER)
    name = base / "run" / "1-2-ab.session.result"
    if plant == "symlink":
        name.symlink_to(secret)
    elif plant == "hard link":
        os.link(secret, name)
    elif plant == "hard link of the owner's":
        os.link(theirs, name)
    elif plant == "fifo":
        os.mkfifo(name)  # must not block the open
        os.chown(name, OWNER, OWNER)
    elif plant == "root's file":
        name.write_text("{}")
    else:
        name.write_bytes(b" " * 1025)
        os.chown(name, OWNER, OWNER)
    with pytest.raises(RunDirError, match=message):
        run_dir.read(name.name, limit=1024)
    assert run_dir.read("absent") is None
    run_dir.write("ok.result", b'{"ok": true}')
    assert run_dir.read("ok.result") == b'{"ok": true}'


@pytest.mark.parametrize("plant", ["symlink", "hard link", "directory"])
def test_lock_refuses_a_planted_name(run_dir: RunDir, base: Path, plant: str) -> None:
    victim = base / "victim"
    victim.write_text("x")
    os.chmod(victim, 0o666)
    lock = base / "run" / "1-2.lock"
    if plant == "symlink":
        lock.symlink_to(victim)
    elif plant == "hard link":
        os.link(victim, lock)
    else:
        lock.mkdir()
    with pytest.raises(RunDirError, match="remove it and retry"):
        run_dir.open_lock(lock.name)
    assert victim.stat().st_uid == 0


def test_lock_is_created_for_the_owner_and_reused(run_dir: RunDir, base: Path) -> None:
    first = run_dir.open_lock("1-2.lock")
    second = run_dir.open_lock("1-2.lock")
    try:
        assert os.fstat(first).st_ino == os.fstat(second).st_ino
        info = (base / "run" / "1-2.lock").lstat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (OWNER, 0o600)
    finally:
        os.close(first)
        os.close(second)


def listening(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    server.setblocking(False)
    return server


def test_sockets_are_reached_only_when_they_are_the_owners(run_dir: RunDir, base: Path) -> None:
    roots = listening(base / "root.sock")
    owners = listening(base / "run" / "1-2.sock")
    os.chown(base / "run" / "1-2.sock", OWNER, OWNER)
    (base / "run" / "3-4.sock").symlink_to(base / "root.sock")
    try:
        with pytest.raises(RunDirError, match="is a symlink, not a socket"):
            run_dir.open_socket("3-4.sock")
        for path in (base / "run" / "3-4.sock", base / "root.sock"):
            with pytest.raises(RunDirError), socket.socket(socket.AF_UNIX) as probe:
                rundir.connect_path(probe, str(path), OWNER)
        with pytest.raises(BlockingIOError):
            roots.accept()  # never connected
        with socket.socket(socket.AF_UNIX) as probe:
            rundir.connect_path(probe, str(base / "run" / "1-2.sock"), OWNER)
            owners.accept()[0].close()
        assert run_dir.open_socket("5-6.sock") is None
    finally:
        roots.close()
        owners.close()


def test_staging_copies_any_files_and_gives_them_to_the_owner_when_complete(
    run_dir: RunDir, base: Path
) -> None:
    library = bytes(range(256)) * 4  # a native library is not text
    files = [
        *agent_files(),
        ("native/libsampler.so", library, 0o700),
        ("native/data/table.bin", b"\0\1\2", 0o600),
    ]
    staged = Path(stage_agent(run_dir, files))
    assert staged.parent == base / "run"
    assert (staged / "native" / "libsampler.so").read_bytes() == library
    assert (staged / "__init__.py").read_bytes() == (
        Path(rundir.__file__).parent / "__init__.py"
    ).read_bytes()
    for path in [staged, *staged.rglob("*")]:
        info = path.lstat()
        assert info.st_uid == OWNER, path
        # Libraries keep their execute bit (the built sampler among agent_files() too).
        expected = 0o700 if path.is_dir() or path.suffix == ".so" else 0o600
        assert stat.S_IMODE(info.st_mode) == expected, path
    assert [p.name for p in (base / "run").iterdir()] == [staged.name]  # no temporary left
    assert stage_agent(run_dir, files) == str(staged)  # unchanged: staged once


def test_staging_never_writes_through_a_planted_name(run_dir: RunDir, base: Path) -> None:
    decoy = base / "decoy"
    decoy.mkdir()
    files = [("__init__.py", b"", 0o600)]
    name = Path(stage_agent(run_dir, files)).name
    (base / "run" / name).rename(base / "run" / "moved")
    (base / "run" / name).symlink_to(decoy)
    staged = Path(stage_agent(run_dir, files))
    assert not staged.is_symlink() and staged.lstat().st_uid == OWNER
    assert list(decoy.iterdir()) == [] and decoy.stat().st_uid == 0


def test_stale_files_and_abandoned_copies_are_removed(run_dir: RunDir, base: Path) -> None:
    dead = ["4194303-5.sock", "4194303-5-cd34.session.result", "4194303-5.boot.py"]
    for name in dead:
        run_dir.write(name, b"x")
    abandoned = base / "run" / "agent-0123456789abcdef.0123456789ab.tmp"
    (abandoned / "sub").mkdir(parents=True)
    (abandoned / "sub" / "f.py").write_text("x")
    os.utime(abandoned, (0, 0))
    fresh = base / "run" / "agent-0123456789abcdef.ffffffffffff.tmp"
    fresh.mkdir()  # another memtop may be building this one right now
    remove_stale(run_dir)
    assert sorted(p.name for p in (base / "run").iterdir()) == [fresh.name]


def test_the_agent_reaches_its_own_run_dir_with_the_same_functions(short_tmp: Path) -> None:
    # As its own user, no chown: the agent in the target and `memtop run` take this path.
    path = short_tmp / "own"
    rundir.ensure_private_dir(str(path), os.geteuid())
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    server = listening(path / "1-2.sock")
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            rundir.connect_path(probe, str(path / "1-2.sock"), os.geteuid())
            server.accept()[0].close()
    finally:
        server.close()
