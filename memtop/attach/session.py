"""What an attach leaves in the target's run directory: a copy of the agent the target's
user can read, a one-shot session file, the bootstrap, and a lock.

Files are created 0600 and, when memtop runs as root, owned by the target's user: the
target must read them, and nobody else may.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from memtop.agent import rundir
from memtop.attach.procfs import read_environ
from memtop.errors import AttachError

AGENT_SOURCE = Path(__file__).resolve().parent.parent / "agent"
SESSION_LIFETIME = 60.0
PAGE_PLACEHOLDER = "0x0000000000000000"

# Runs in a fresh namespace inside the target (sys.remote_exec, or exec() of a gdb pending
# call); kept under 1 KB. It frees the gdb page it was written into (through
# ctypes.pythonapi, a handle on the whole process that ctypes keeps: a new CDLL per attach
# would leave objects behind), does nothing if the
# viewer withdrew its session (a late run), loads the agent by path at most once per
# process (a second attach reuses it), and never lets an exception out.
_BOOTSTRAP = """import sys,os
def _memtop(s,a,p):
 try:
  if p:
   import ctypes
   ctypes.pythonapi.munmap(ctypes.c_void_p(p),4096)
  if not os.path.exists(s):return
  m=sys.modules.get('_memtop_agent') or sys.modules.get('memtop.agent')
  if m is None:
   import importlib.util as u
   q=u.spec_from_file_location('_memtop_agent',a+'/__init__.py',submodule_search_locations=[a])
   m=u.module_from_spec(q);sys.modules[q.name]=m
   try:q.loader.exec_module(m)
   except BaseException:
    del sys.modules[q.name];raise
  m.boot(s)
 except BaseException:pass
_memtop(%r,%r,%s)
"""


def target_run_dir(pid: int, uid: int) -> str:
    """The run directory the target's agent uses: derived from the target's environment."""
    return rundir.default_run_dir(uid, read_environ(pid))


def prepare_run_dir(path: str, uid: int) -> None:
    """Create (0700, owned by `uid`) and verify the run directory, or refuse."""
    try:
        rundir.ensure_private_dir(path, uid)
    except rundir.RunDirError as exc:
        raise AttachError(f"refusing to use the run directory: {exc}") from exc
    except OSError as exc:
        raise AttachError(f"cannot create the run directory {path}: {exc.strerror}") from exc


def write_private(path: str, data: bytes, uid: int, gid: int) -> None:
    """Write a new 0600 file owned by the target's user (never through a symlink)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def stage_agent(run_dir: str, uid: int, gid: int) -> str:
    """A copy of the agent package in the run dir, readable by the target's user.

    memtop itself may be installed where the target cannot read it (root's home); the
    copy is named after its content, so an unchanged agent is staged once."""
    files = sorted(AGENT_SOURCE.glob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    staged = os.path.join(run_dir, f"agent-{digest.hexdigest()[:16]}")
    if os.path.isdir(staged) and not os.path.islink(staged):
        return staged
    building = f"{staged}.{os.getpid()}.tmp"
    shutil.rmtree(building, ignore_errors=True)
    os.mkdir(building, 0o700)
    try:
        for path in files:
            write_private(os.path.join(building, path.name), path.read_bytes(), uid, gid)
        if os.geteuid() == 0:
            os.chown(building, uid, gid)
        os.rename(building, staged)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        if not os.path.isdir(staged):
            raise
    return staged


@dataclass
class Session:
    """One attach request: its token, its files, and the bootstrap that reads them."""

    path: str  # the session file the bootstrap consumes
    token: str
    agent_dir: str

    @property
    def result_path(self) -> str:
        return self.path + ".result"

    def bootstrap(self, gdb_page: bool = False) -> str:
        """Python source that hands this session to the agent inside the target."""
        return _BOOTSTRAP % (self.path, self.agent_dir, PAGE_PLACEHOLDER if gdb_page else "0")

    def withdraw(self) -> None:
        """Delete the session: a bootstrap that runs later finds nothing to do."""
        for path in (self.path, self.result_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def result(self) -> dict | None:
        """The agent's answer, once it has written one."""
        try:
            with open(self.result_path) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None


def new_session(
    run_dir: str, pid: int, start: int, uid: int, gid: int, agent_dir: str, request: dict
) -> Session:
    """Write a one-shot session file for `request` ({"config": ...} or {"action": "stop"})."""
    token = secrets.token_hex(32)
    nonce = secrets.token_hex(4)
    path = os.path.join(run_dir, f"{pid}-{start}-{nonce}.session")
    body = dict(request, expires=time.time() + SESSION_LIFETIME)
    if "config" in body:
        body["config"] = dict(body["config"], token=token, rundir=run_dir, origin="attach")
    write_private(path, json.dumps(body).encode(), uid, gid)
    return Session(path, token, agent_dir)


class AttachLock:
    """One attach at a time per target process (flock on `<pid>-<start>.lock`)."""

    def __init__(self, run_dir: str, pid: int, start: int, uid: int, gid: int) -> None:
        self.path = os.path.join(run_dir, f"{pid}-{start}.lock")
        self.uid, self.gid = uid, gid
        self.fd: int | None = None

    def __enter__(self) -> AttachLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        if os.geteuid() == 0:
            os.fchown(fd, self.uid, self.gid)
        deadline = time.monotonic() + 60
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


def remove_stale(run_dir: str) -> None:
    """Remove files of processes that no longer exist (same pid, other start time too)."""
    try:
        names = os.listdir(run_dir)
    except OSError:
        return
    for name in names:
        head = name.split(".", 1)[0]
        parts = head.split("-")
        if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
            continue
        pid, start = int(parts[0]), int(parts[1])
        try:
            alive = rundir.process_start_time(pid) == start
        except (OSError, ValueError, IndexError):
            alive = False
        if not alive:
            path = os.path.join(run_dir, name)
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    continue
                os.unlink(path)
            except OSError:
                pass
