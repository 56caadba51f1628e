"""What an attach leaves in the target's run directory: a copy of the agent the target's
user can read, a one-shot session file, the bootstrap, and a lock.

Everything goes through an open `RunDir` (memtop.agent.rundir): as root, memtop never
resolves a path in the target user's directory by name. Files are created 0600 and, when
memtop runs as root, owned by the target's user: the target must read them, and nobody
else may. A session's files are removed as soon as they have been used.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memtop.agent import nofollow, rundir
from memtop.agent.rundir import RunDir, RunDirError, RunDirMissing
from memtop.attach.bootstrap import attach_code
from memtop.attach.preflight import Target
from memtop.attach.procfs import read_environ
from memtop.errors import AttachError

AGENT_SOURCE = Path(__file__).resolve().parent.parent / "agent"
SESSION_LIFETIME = 60.0
PAGE_PLACEHOLDER = "0x0000000000000000"


def target_run_dir(target: Target, root: rundir.ProcessRoot | None) -> str:
    """The run directory the target's agent uses: derived from the target's environment
    (a path of the target's: in a container, from its `root`)."""
    return rundir.default_run_dir(target.own_uid, read_environ(target.pid), root, target.uid)


def open_target_run_dir(path: str, target: Target, root: rundir.ProcessRoot | None) -> RunDir:
    """The target's run directory, opened and verified (created 0700 for the target's user
    if missing), or AttachError saying why it is refused."""
    try:
        return rundir.open_run_dir(
            path, target.uid, target.gid, create=True, root=root, as_owner=_as_owner(target)
        )
    except RunDirError as exc:
        raise AttachError(f"refusing to use the run directory: {exc}") from exc
    except OSError as exc:
        raise AttachError(
            f"cannot create the run directory {path}: {exc.strerror}{_fix_for(exc, target)}"
        ) from exc


def _fix_for(exc: OSError, target: Target) -> str:
    """What to do about a run dir that cannot be written, in words (or "")."""
    if exc.errno != errno.EROFS:
        return ""
    where = " in its container" if target.container else ""
    return (
        f"; pid {target.pid}'s filesystem is read-only there{where}: give the program a "
        "writable /tmp (Kubernetes: an emptyDir volume mounted at /tmp) or point "
        "XDG_RUNTIME_DIR in its environment at a writable directory, or start it with "
        "`memtop run`"
    )


def _as_owner(target: Target) -> bool:
    """Whether root creates the files of a contained target as the target's user: in the
    container's files, root only acts as the user whose files they are."""
    return (
        os.geteuid() == 0
        and target.uid != 0
        and target.container is not None
        and target.container.other_mounts
    )


def existing_target_run_dir(
    path: str, target: Target, root: rundir.ProcessRoot | None
) -> RunDir | None:
    """The target's run directory if there is one (verified), else None."""
    try:
        return rundir.open_run_dir(
            path, target.uid, target.gid, root=root, as_owner=_as_owner(target)
        )
    except RunDirMissing:
        return None
    except RunDirError as exc:
        raise AttachError(f"refusing to use the run directory: {exc}") from exc


def agent_files(paths: Sequence[Path] | None = None) -> list[tuple[str, bytes, int]]:
    """(name relative to the agent package, content, mode) of each file to stage: by
    default the agent's modules. Any file under the package may be listed (binary too)."""
    if paths is None:
        # The sampler's library (or the reason it was not built) goes with the modules:
        # the staged agent loads it from its own copy.
        native = AGENT_SOURCE / "native"
        paths = sorted(AGENT_SOURCE.glob("*.py")) + [
            path
            for path in (native / "libmemtopsampler.so", native / "build-error.txt")
            if path.is_file()
        ]
    files = []
    for path in paths:
        relative = path.resolve().relative_to(AGENT_SOURCE).as_posix()
        mode = 0o700 if path.stat().st_mode & stat.S_IXUSR else 0o600
        files.append((relative, path.read_bytes(), mode))
    return sorted(files)


def stage_agent(run_dir: RunDir, files: list[tuple[str, bytes, int]] | None = None) -> str:
    """A copy of the agent package in the run dir, readable by the target's user; returns
    its path. memtop itself may be installed where the target cannot read it (root's
    home); the copy is named after its content, so an unchanged agent is staged once."""
    files = agent_files() if files is None else files
    digest = hashlib.sha256()
    for relative, data, mode in files:
        digest.update(b"%s\0%o\0%d\0" % (relative.encode(), mode, len(data)) + data)
    try:
        return run_dir.stage(f"agent-{digest.hexdigest()[:16]}", files)
    except RunDirError as exc:
        raise AttachError(f"cannot stage the agent: {exc}") from exc
    except OSError as exc:
        raise AttachError(f"cannot stage the agent in {run_dir.path}: {exc}") from exc


@dataclass
class Session:
    """One attach request: its token, its files, and the bootstrap that reads them."""

    run_dir: RunDir
    name: str  # of the session file the bootstrap consumes
    token: str
    agent_dir: str
    script: str | None = field(default=None)  # the remote_exec script written for it

    @property
    def path(self) -> str:
        return self.run_dir.join(self.name)

    @property
    def result_name(self) -> str:
        return self.name + ".result"

    def bootstrap(self, gdb_page: bool = False) -> str:
        """Python source that hands this session to the agent inside the target."""
        return attach_code(self.path, self.agent_dir, PAGE_PLACEHOLDER if gdb_page else "0")

    def withdraw(self) -> bool:
        """Delete the session: a bootstrap that runs later finds nothing to do. False when
        the bootstrap had claimed it already (removed the file): the agent is starting."""
        withdrawn = self.run_dir.remove(self.name)
        if withdrawn:
            self.run_dir.remove(self.result_name)
        return withdrawn

    def result(self) -> dict | None:
        """The agent's answer once it has written a whole one (then its file is removed);
        AttachError when the file there is not one the target's user wrote."""
        try:
            data = self.run_dir.read(self.result_name)
        except RunDirError as exc:
            raise AttachError(str(exc)) from exc
        if data is None:
            return None
        try:
            result = json.loads(data)
        except ValueError:
            return None  # still being written
        self.run_dir.remove(self.result_name)
        if not isinstance(result, dict):
            raise AttachError(f"the agent wrote a malformed result: {data[:100]!r}")
        return result


def new_session(run_dir: RunDir, pid: int, start: int, agent_dir: str, request: dict) -> Session:
    """Write a one-shot session file for `request` ({"config": ...} or {"action": "stop"})."""
    token = secrets.token_hex(32)
    name = f"{pid}-{start}-{secrets.token_hex(4)}.session"
    body = dict(request, expires=time.time() + SESSION_LIFETIME)
    if "config" in body:
        body["config"] = dict(body["config"], token=token, rundir=run_dir.path, origin="attach")
    try:
        run_dir.write(name, json.dumps(body).encode())
    except OSError as exc:
        raise AttachError(f"cannot write a session file in {run_dir.path}: {exc}") from exc
    return Session(run_dir, name, token, agent_dir)


class AttachLock:
    """One attach at a time per target process (flock on `<pid>-<start>.lock`)."""

    def __init__(self, run_dir: RunDir, pid: int, start: int, wait: float = 60.0) -> None:
        self.run_dir = run_dir
        self.name = f"{pid}-{start}.lock"
        self.fd: int | None = None
        self.wait = wait

    def __enter__(self) -> AttachLock:
        try:
            fd = self.run_dir.open_lock(self.name)
        except RunDirError as exc:
            raise AttachError(str(exc)) from exc
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise AttachError(
                        "another memtop is still attaching to this process; retry shortly"
                    ) from None
                time.sleep(0.05)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def remove(self) -> None:
        """Remove the lock file while holding it (the last attach is over)."""
        self.run_dir.remove(self.name)


# A copy being built by a memtop that died: root's and 0700, so its user cannot remove it.
_ABANDONED_STAGING = re.compile(r"agent-[0-9a-f]{16}\.[0-9a-f]{12}\.tmp")
_STAGING_GRACE = 600.0


def alive_here(pid: int, start: int) -> bool:
    try:
        return rundir.process_start_time(pid) == start
    except (OSError, ValueError, IndexError):
        return False


def remove_stale(run_dir: RunDir, alive: Callable[[int, int], bool] = alive_here) -> None:
    """Remove files of processes that no longer exist (same pid, other start time too),
    and agent copies a crashed memtop left half-built. `alive(pid, start)`: whether the
    process a file name names still runs (the pids are the run dir's processes' own)."""
    try:
        names = run_dir.names()
    except OSError:
        return
    for name in names:
        if _ABANDONED_STAGING.fullmatch(name):
            info = run_dir.lstat(name)
            if info is not None and time.time() - info.st_mtime > _STAGING_GRACE:
                run_dir.remove_tree(name)
            continue
        head = name.split(".", 1)[0]
        parts = head.split("-")
        if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
            continue
        if not alive(int(parts[0]), int(parts[1])):
            run_dir.remove(name)  # never a directory


def tidy_container_run_dir(run_dir: RunDir, path: str, root: rundir.ProcessRoot) -> None:
    """After an agent in a container stopped: take the staged agent copies away, and the
    run dir itself once empty, so that nothing of memtop's stays in the container's files.
    (On the host the copy stays for the next attach.) Called once stale files are gone:
    anything else left names a live process whose agent, attach or request may still load
    modules from a copy (processes of one container share the run dir), so all stays."""
    try:
        names = run_dir.names()
    except OSError:
        return
    if any(not name.startswith("agent-") for name in names):
        return
    for name in names:
        if name.startswith("agent-"):
            info = run_dir.lstat(name)
            if info is not None and stat.S_ISDIR(info.st_mode):
                run_dir.remove_tree(name)
    try:
        if run_dir.names():
            return
        parent_path, name = os.path.split(path.rstrip("/"))
        parent = nofollow.open_directory(parent_path, run_dir.uid, root)
    except (OSError, nofollow.UnsafePath):
        return
    try:
        os.rmdir(name, dir_fd=parent)
    except OSError:
        pass  # a file appeared meanwhile, or it is not ours to remove
    finally:
        os.close(parent)
