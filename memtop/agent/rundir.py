"""The private run directory that holds agent sockets, and the names inside it.

Shared by the agent and the viewer, so both derive the same paths. Stdlib only.

A root viewer works in the *target user's* run directory, and that user can rename,
replace or link anything in it (even the directory itself, and every directory above an
`$XDG_RUNTIME_DIR` they chose) at any moment. So no function here resolves a path as
open(path) would. `open_run_dir` walks from "/" one component at a time with O_NOFOLLOW
and checks the directory's fd (owner, mode); every later operation is relative to that fd
(openat, mkdirat, renameat, unlinkat; chown only through fds of files created with
O_EXCL), and every fd opened is checked with fstat before use (owner, type, one link).
Sockets are reached through an O_PATH fd, never by name (`nofollow.connect_fd`).

Why fds, and not a child that drops to the target's uid for each step: the viewer is
multi-threaded (Textual), where fork() without exec is unsafe; an exec'd helper would need
an interpreter and a copy of memtop the target's user can read (memtop may live in root's
0700 home); a polling attach does dozens of steps. And the agent, a user's own process
reaching its own directory, uses the very same functions, so there is one code path.
"""

import binascii
import os
import socket
import stat
import struct

from . import nofollow
from .nofollow import UnsafePath

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
# Session results and token files are a few hundred bytes.
MAX_SMALL_FILE = 64 * 1024
_MAX_TREE_DEPTH = 8
# struct ucred: pid, uid, gid.
_CRED = struct.Struct("3i")


def _random_suffix():
    # Not `secrets`: importing it would load `random` into the target.
    return binascii.hexlify(os.urandom(6)).decode("ascii")


class RunDirError(UnsafePath):
    """The run directory is missing, foreign or unsafe; the message names the fix."""


class RunDirMissing(RunDirError):
    """The run directory does not exist (and was not to be created)."""


def default_run_dir(uid, environ, root=None, owner=None):
    """`$XDG_RUNTIME_DIR/memtop` when that is a private directory of `uid` reached without
    symlinks, else `/tmp/memtop-<uid>`. A group- or world-writable or foreign
    XDG_RUNTIME_DIR is not used: the environment is the target's, every part of it its
    user's choice. For a process in a container: `uid` as it sees it, `root` its
    ProcessRoot and `owner` its uid as memtop sees it (on files)."""
    xdg = environ.get("XDG_RUNTIME_DIR")
    if xdg and xdg.startswith("/"):
        candidate = os.path.join(xdg, "memtop")
        # Leave room for "<pid>-<starttime>.sock" (at most 7 + 1 + 20 + 5 bytes).
        if len(candidate) + 34 <= MAX_SOCKET_PATH and _private_to(
            xdg, uid if owner is None else owner, root
        ):
            return candidate
    return "/tmp/memtop-%d" % uid


def _private_to(path, uid, root=None):
    try:
        fd = nofollow.open_directory(path, uid, root)
    except (UnsafePath, OSError):
        return False
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return st.st_uid == uid and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def open_run_dir(path, uid, gid=-1, create=False, root=None, as_owner=False):
    """The run dir at `path` as a RunDir, created 0700 (and, as root, given to `uid`:`gid`)
    when `create` and missing. RunDirError unless it is a real 0700 directory of `uid`.
    With `root` (a ProcessRoot), `path` is that process's path, reached from its root.
    `as_owner` (root only): create everything as `uid`:`gid` (see OwnerIds)."""
    parent_path, name = os.path.split(path.rstrip("/"))
    try:
        nofollow.check_name(name)
        parent = nofollow.open_directory(parent_path, uid, root)
    except UnsafePath as exc:
        raise RunDirError("run directory %s: %s" % (path, exc)) from None
    try:
        created = False
        if create:
            with OwnerIds(uid, gid) if as_owner else _Unchanged():
                try:
                    os.mkdir(name, 0o700, dir_fd=parent)
                    created = True
                except FileExistsError:
                    pass
        try:
            if created:
                fd = nofollow.open_fresh_dir(parent, name, path, uid if as_owner else None)
            else:
                fd = os.open(name, nofollow.DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            raise RunDirMissing("run directory %s does not exist" % path) from None
        except (UnsafePath, OSError) as exc:
            what = nofollow.describe(parent, name)
            if what == "a symlink":
                raise RunDirError(
                    "run directory %s is a symlink (possible squatting); remove it and retry" % path
                ) from None
            if what != "a directory":
                raise RunDirError(
                    "run directory %s is not a directory; remove it and retry" % path
                ) from None
            raise RunDirError("run directory %s: %s" % (path, exc)) from None
    finally:
        os.close(parent)
    try:
        if created and os.geteuid() != uid and not as_owner:
            os.fchown(fd, uid, gid)
        _check_private(os.fstat(fd), path, uid)
    except BaseException:
        os.close(fd)
        raise
    return RunDir(path, fd, uid, gid, as_owner)


class _Unchanged:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class OwnerIds:
    """Within: this thread creates files as `uid`:`gid` (setfsuid/setfsgid, which the
    kernel keeps per thread; other threads are unaffected) and is checked as that user.

    Root needs it in a container of its own user namespace, where root is nobody: the
    kernel refuses to create a file of root there (EOVERFLOW). And what root creates
    there it creates as the container's user would, with that user's rights only."""

    def __init__(self, uid, gid):
        self.uid = uid
        self.gid = gid

    def __enter__(self):
        import ctypes  # the viewer's only: an agent never acts as another user

        self.libc = ctypes.CDLL(None, use_errno=True)
        self.old_gid = self.libc.setfsgid(self.gid)
        self.old_uid = self.libc.setfsuid(self.uid)
        # setfsuid returns the previous value even when it fails: ask again to be sure.
        if self.libc.setfsuid(-1) != self.uid or self.libc.setfsgid(-1) != self.gid:
            self.__exit__()
            raise RunDirError("cannot act as uid %d, gid %d here" % (self.uid, self.gid))
        return self

    def __exit__(self, *exc):
        self.libc.setfsuid(self.old_uid)
        self.libc.setfsgid(self.old_gid)


def _check_private(st, path, uid):
    if st.st_uid != uid:
        raise RunDirError(
            "run directory %s is owned by uid %d, not %d (possible squatting); "
            "remove it or set XDG_RUNTIME_DIR" % (path, st.st_uid, uid)
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        raise RunDirError(
            "run directory %s has mode %o, not 700; run `chmod 700 %s` or remove it"
            % (path, stat.S_IMODE(st.st_mode), path)
        )


def ensure_private_dir(path, uid):
    """Create the run dir 0700 if missing, then verify it (RunDirError if unsafe)."""
    open_run_dir(path, uid, create=True).close()


class _HoldsFd:
    """Closes its `fd` once, also as a context manager."""

    fd = -1

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RunDir(_HoldsFd):
    """An open, verified run directory of user `uid`: every operation goes through its fd.

    Files are created 0600 and, when the caller is root, owned by `uid`:`gid` (the
    target reads them, nobody else may). Names are plain entry names, never paths."""

    def __init__(self, path, fd, uid, gid=-1, as_owner=False):
        self.path = path
        self.fd = fd
        self.uid = uid
        self.gid = gid
        self.as_owner = as_owner  # creates as its owner (OwnerIds)

    def join(self, name):
        """The path others (the target) use for `name`."""
        return os.path.join(self.path, nofollow.check_name(name))

    def names(self):
        return os.listdir(self.fd)

    def lstat(self, name):
        """The entry `name` itself (a symlink is not followed), or None."""
        try:
            return os.stat(nofollow.check_name(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _give(self, fd):
        # Only fds of what we created ourselves: never a name someone else could swap.
        if os.geteuid() != self.uid and not self.as_owner:
            os.fchown(fd, self.uid, self.gid)

    def _creating(self):
        return OwnerIds(self.uid, self.gid) if self.as_owner else _Unchanged()

    def write(self, name, data, mode=0o600):
        """Replace `name` with a new file holding `data`, atomically (never through a link)."""
        with self._creating():
            self._write(name, data, mode)

    def _write(self, name, data, mode):
        nofollow.check_name(name)
        fd, temporary = self._create_temporary(name, mode)
        try:
            self._give(fd)
            nofollow.write_all(fd, data)
        finally:
            os.close(fd)
        try:
            os.rename(temporary, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError:
            self.remove(temporary)
            raise

    def _create_temporary(self, name, mode):
        # A random suffix: a name planted in advance cannot make O_EXCL fail every time.
        for _ in range(16):
            temporary = "%s.%s.tmp" % (name, _random_suffix())
            try:
                fd = os.open(temporary, nofollow.CREATE_FLAGS, mode, dir_fd=self.fd)
            except FileExistsError:
                continue
            return fd, temporary
        raise FileExistsError("cannot create a temporary file for %s" % self.join(name))

    def read(self, name, limit=MAX_SMALL_FILE):
        """The content of file `name` (a regular file of the owner with one link, at most
        `limit` bytes), or None when there is none. RunDirError for anything else."""
        try:
            return nofollow.read_at(
                self.fd, nofollow.check_name(name), self.join(name), self.uid, limit
            )
        except UnsafePath as exc:
            raise RunDirError("refusing to read %s; remove it and retry" % exc) from None

    def remove(self, name):
        """Delete the entry `name` (not a directory); True if it existed."""
        try:
            os.unlink(nofollow.check_name(name), dir_fd=self.fd)
            return True
        except FileNotFoundError:
            return False
        except (IsADirectoryError, PermissionError):
            return False

    def remove_tree(self, name):
        """Delete the directory `name` and everything in it, through fds only, with only
        the owner's rights when creating as the owner: what the owner mounted there (a
        directory of others it may not change) stays as it is."""
        with self._creating():
            _remove_tree(self.fd, nofollow.check_name(name), self.join(name), 0)

    def open_lock(self, name):
        """An fd of the lock file `name`, created for the owner if missing. An existing
        one must be a regular file of the owner with one link."""
        with self._creating():
            return self._open_lock(name)

    def _open_lock(self, name):
        nofollow.check_name(name)
        for _ in range(8):
            try:
                fd = nofollow.open_regular_at(
                    self.fd, name, self.join(name), os.O_RDWR | nofollow.READ_FLAGS
                )
            except UnsafePath as exc:
                raise RunDirError("refusing to use %s; remove it and retry" % exc) from None
            except FileNotFoundError:
                try:
                    fd = os.open(
                        name,
                        os.O_RDWR | (nofollow.CREATE_FLAGS & ~os.O_WRONLY),
                        0o600,
                        dir_fd=self.fd,
                    )
                except FileExistsError:
                    continue
                try:
                    self._give(fd)
                except BaseException:
                    os.close(fd)
                    raise
                return fd
            except OSError as exc:
                raise RunDirError(
                    "refusing to use the lock %s: %s; remove it and retry"
                    % (self.join(name), nofollow.describe(self.fd, name))
                ) from exc
            try:
                nofollow.check_owned_file(os.fstat(fd), self.join(name), self.uid)
            except UnsafePath as exc:
                os.close(fd)
                raise RunDirError("refusing to use %s; remove it and retry" % exc) from None
            return fd
        raise RunDirError("the lock %s keeps changing; retry" % self.join(name))

    def open_socket(self, name):
        """An O_PATH fd of the owner's socket `name` (see nofollow.connect_fd), or None."""
        try:
            return nofollow.open_socket_at(
                self.fd, nofollow.check_name(name), self.join(name), self.uid
            )
        except UnsafePath as exc:
            raise RunDirError("refusing to connect to %s; remove it and retry" % exc) from None

    def stage(self, name, files):
        """The directory `name` holding `files` ((relative path, bytes, mode) each), built
        under a temporary name and renamed into place, or the existing one of the owner.
        Returns its path. Nothing in it is given to the owner before it is complete, and
        until then the owner cannot enter it (root's, 0700), unless created as the owner."""
        with self._creating():
            return self._stage(name, files)

    def _stage(self, name, files):
        nofollow.check_name(name)
        if self._owned_dir(name):
            return self.join(name)
        st = self.lstat(name)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            self.remove(name)
        building = "%s.%s.tmp" % (name, _random_suffix())
        os.mkdir(building, 0o700, dir_fd=self.fd)
        try:
            self._fill(building, files)
            os.rename(building, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException as exc:
            self.remove_tree(building)
            if self._owned_dir(name):
                return self.join(name)  # another attach staged the same copy meanwhile
            if isinstance(exc, (UnsafePath, FileNotFoundError)):
                raise RunDirError(
                    "%s changed while the agent was copied there; retry" % self.path
                ) from None
            raise
        return self.join(name)

    def _owned_dir(self, name):
        try:
            fd = os.open(name, nofollow.DIR_FLAGS, dir_fd=self.fd)
        except OSError:
            return False
        try:
            return os.fstat(fd).st_uid == self.uid
        finally:
            os.close(fd)

    def _fill(self, building, files):
        owner = self.uid if self.as_owner else None
        top = nofollow.open_fresh_dir(self.fd, building, self.join(building), owner)
        dirs = {(): top}
        try:
            for relative, data, mode in files:
                parts = tuple(relative.split("/"))
                for part in parts:
                    nofollow.check_name(part)
                parent = top
                for depth in range(1, len(parts)):
                    if parts[:depth] not in dirs:
                        os.mkdir(parts[depth - 1], 0o700, dir_fd=parent)
                        shown = os.path.join(self.join(building), *parts[:depth])
                        dirs[parts[:depth]] = nofollow.open_fresh_dir(
                            parent, parts[depth - 1], shown, owner
                        )
                    parent = dirs[parts[:depth]]
                fd = os.open(parts[-1], nofollow.CREATE_FLAGS, mode & 0o700, dir_fd=parent)
                try:
                    nofollow.write_all(fd, data)
                    self._give(fd)
                finally:
                    os.close(fd)
            # The top directory last: until then the owner cannot see inside.
            for key in sorted(dirs, key=len, reverse=True):
                self._give(dirs[key])
        finally:
            for fd in dirs.values():
                os.close(fd)


def _remove_tree(dir_fd, name, shown, depth):
    try:
        fd = nofollow.open_dir_at(dir_fd, name, shown)
    except UnsafePath:
        try:
            os.unlink(name, dir_fd=dir_fd)  # no longer a directory: only the name goes
        except OSError:
            pass
        return
    except OSError:
        return  # gone, or not ours to enter
    try:
        for entry in os.listdir(fd):
            try:
                os.unlink(entry, dir_fd=fd)
            except IsADirectoryError:
                if depth < _MAX_TREE_DEPTH:
                    _remove_tree(fd, entry, os.path.join(shown, entry), depth + 1)
            except OSError:
                pass  # gone meanwhile, or not ours to remove
    except OSError:
        pass  # not ours to read
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        pass


def process_start_time(pid):
    """Field 22 of /proc/PID/stat (clock ticks since boot): tells a reused pid apart."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


class ProcessRoot(_HoldsFd):
    """The root directory of process `pid` (`/proc/PID/root`, the kernel's own link, never
    a path anyone else names), open as `fd`: where the paths of a process in another mount
    namespace, such as a container's, start. `uids`: the uids that own its system
    directories, root's and (in a user namespace) the host uid of its root user."""

    def __init__(self, pid, start_time):
        self.pid = pid
        self.fd = os.open("/proc/%d/root" % pid, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if process_start_time(pid) != start_time:
                raise RunDirError("process %d exited" % pid)
            inside_root = outside_id(pid, "uid_map", 0)
        except BaseException:
            os.close(self.fd)
            raise
        self.uids = (0,) if inside_root in (None, 0) else (0, inside_root)


def outside_id(pid, map_name, inside):
    """The id that `inside` (a uid or gid of process `pid`'s user namespace) is outside it,
    from /proc/PID/uid_map or gid_map; None when it is not mapped."""
    with open("/proc/%d/%s" % (pid, map_name)) as f:
        for line in f:
            fields = line.split()
            if len(fields) == 3:
                first_inside, first_outside, count = (int(x) for x in fields)
                if first_inside <= inside < first_inside + count:
                    return first_outside + inside - first_inside
    return None


def inside_id(pid, map_name, outside):
    """The id that `outside` (as memtop sees it) is inside process `pid`'s user namespace;
    None when it is not mapped there."""
    with open("/proc/%d/%s" % (pid, map_name)) as f:
        for line in f:
            fields = line.split()
            if len(fields) == 3:
                first_inside, first_outside, count = (int(x) for x in fields)
                if first_outside <= outside < first_outside + count:
                    return first_inside + outside - first_outside
    return None


def socket_name(pid, start_time):
    """File name of the agent socket of one process."""
    return "%d-%d.sock" % (pid, start_time)


def parse_socket_name(name):
    """(pid, start_time) from a socket file name, or None."""
    if not name.endswith(".sock"):
        return None
    stem = name[: -len(".sock")]
    pid, sep, start = stem.partition("-")
    if not sep or not pid.isdigit() or not start.isdigit():
        return None
    return int(pid), int(start)


def socket_path(run_dir, pid, start_time):
    """Path of the agent socket of one process in the run directory at `run_dir`."""
    return os.path.join(run_dir, socket_name(pid, start_time))


def listening(run_dir, name, timeout=2.0):
    """Whether an agent accepts connections at the socket `name` of the open RunDir
    `run_dir`. False when nothing, or something else than a socket (stale), is there, or
    nobody accepts; True when a connect succeeds, or the socket exists and answers oddly
    (the real connect reports that). RunDirError when the socket is not the owner's."""
    try:
        fd = run_dir.open_socket(name)
    except RunDirError:
        info = run_dir.lstat(name)
        if info is not None and not stat.S_ISSOCK(info.st_mode):
            return False
        raise
    if fd is None:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        nofollow.connect_fd(probe, fd)
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True
    finally:
        probe.close()
        os.close(fd)


def peer_credentials(sock):
    """(pid, uid, gid) of a connected Unix socket's peer (SO_PEERCRED)."""
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


def token_name(pid, start_time):
    """File name of the token an opt-in or `memtop run` agent leaves for later viewers."""
    return "%d-%d.token" % (pid, start_time)


def connect_path(sock, path, uid, root=None):
    """Connect `sock` to the Unix socket at `path` without following a symlink anywhere
    on the way: the socket must be `uid`'s (RunDirError otherwise, OSError when absent).
    With `root` (a ProcessRoot), `path` is reached from that process's root."""
    directory, name = os.path.split(path)
    try:
        nofollow.check_name(name)
        dir_fd = nofollow.open_directory(directory, uid, root)
    except UnsafePath as exc:
        raise RunDirError("refusing to connect to %s: %s" % (path, exc)) from None
    try:
        fd = nofollow.open_socket_at(dir_fd, name, path, uid)
    except UnsafePath as exc:
        raise RunDirError("refusing to connect to %s" % exc) from None
    finally:
        os.close(dir_fd)
    if fd is None:
        raise FileNotFoundError(2, "No such file or directory", path)
    try:
        nofollow.connect_fd(sock, fd)
    finally:
        os.close(fd)
