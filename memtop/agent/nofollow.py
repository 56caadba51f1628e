"""Reaching files without following symlinks: directories walked from "/" one component at
a time, and every fd checked with fstat before it is used.

Used where a path may be under another user's control (a root viewer working in a target
user's run directory). Stdlib only, shared by the agent and the viewer.
"""

import errno
import os
import stat

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# O_NONBLOCK: a FIFO planted under the name must not block the open; O_NOCTTY: nor may a
# terminal become ours.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
PATH_FLAGS = getattr(os, "O_PATH", 0) | os.O_NOFOLLOW | _CLOEXEC


class UnsafePath(Exception):
    """A path that cannot be used safely; the message names the cause and the fix."""


def components(path):
    """The names of an absolute path, refusing "." and ".." (they would climb out)."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise UnsafePath("%r is not an absolute path" % (path,))
    parts = [part for part in path.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise UnsafePath("%s contains . or .. components" % path)
    return parts


def check_name(name):
    """Refuse anything but one plain entry name (no separator, not . or ..)."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise UnsafePath("%r is not a plain file name" % (name,))
    return name


def describe(dir_fd, name):
    """What sits at `name` in words, for an error message."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "missing"
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if stat.S_ISREG(st.st_mode):
        return "a file"
    return "a special file"


def open_dir_at(dir_fd, name, shown):
    """An fd of the directory `name` inside `dir_fd`, never through a symlink."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        # O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR on Linux, ELOOP elsewhere.
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            what = describe(dir_fd, name)
            raise UnsafePath("%s is %s, not a directory" % (shown, what)) from None
        raise


def check_passage(st, shown, uid, roots=(0,)):
    """A directory on the way to a private one: owned by root or `uid`, and when others
    may write to it, root's and sticky (like /tmp), so nobody else can swap what follows.
    `roots`: the uids that count as root (a container's root user is another host uid)."""
    if st.st_uid not in roots and st.st_uid != uid:
        raise UnsafePath("%s belongs to uid %d, neither root nor %d" % (shown, st.st_uid, uid))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (
        st.st_uid in roots and st.st_mode & stat.S_ISVTX
    ):
        raise UnsafePath("%s is writable by others and not a sticky root directory" % shown)


def open_directory(path, uid, root=None):
    """An fd of the directory `path`, reached from / without following a symlink; every
    directory above it passes `check_passage` (the last one is the caller's to check).
    With `root` (a rundir.ProcessRoot), "/" is that process's root directory: the path
    is one of another mount namespace, such as a container's."""
    parts = components(path)
    fd = os.open("/", DIR_FLAGS) if root is None else os.dup(root.fd)
    roots = (0,) if root is None else root.uids
    try:
        here = "/"
        for part in parts:
            check_passage(os.fstat(fd), here, uid, roots)
            there = os.path.join(here, part)
            following = open_dir_at(fd, part, there)
            os.close(fd)
            fd, here = following, there
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_fresh_dir(dir_fd, name, shown, owner=None):
    """An fd of the directory just made with mkdir(`name`, 0o700) in `dir_fd`, or
    UnsafePath if what is there now is not it: an empty 0700 directory of our euid (of
    `owner` when it was made as that user).

    Another user may swap the name between mkdir and open, but cannot move a directory
    of ours from elsewhere (moving a directory needs write access to it, for its ".."):
    a directory that passes these checks is ours, or one of ours from the same parent."""
    fd = open_dir_at(dir_fd, name, shown)
    try:
        st = os.fstat(fd)
        if (
            st.st_uid != (os.geteuid() if owner is None else owner)
            or st.st_nlink != 2
            or stat.S_IMODE(st.st_mode) & ~0o700
            or os.listdir(fd)
        ):
            raise UnsafePath("%s changed while it was being created; retry" % shown)
        # mkdir applies the umask, which may only have removed bits: make the mode exact.
        os.fchmod(fd, 0o700)
        return fd
    except BaseException:
        os.close(fd)
        raise


def check_owned_file(st, shown, uid, limit=None):
    """A regular file of `uid` with a single link (a hard link could be anyone's file)."""
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath("%s is not a regular file" % shown)
    if st.st_uid != uid:
        raise UnsafePath("%s belongs to uid %d, not %d" % (shown, st.st_uid, uid))
    if st.st_nlink != 1:
        raise UnsafePath("%s has %d hard links" % (shown, st.st_nlink))
    if limit is not None and st.st_size > limit:
        raise UnsafePath("%s is larger than %d bytes" % (shown, limit))


def open_regular_at(dir_fd, name, shown, flags):
    """An fd of the regular file `name` in `dir_fd`, opened with `flags` (READ_FLAGS, maybe
    with O_RDWR) only once it is known to be one. What else sits there is never opened:
    opening a device node (one its owner made, out of the reach of its own device rules)
    acts on the device, as a watchdog's or a tape's does. UnsafePath for anything else;
    OSError (ELOOP) for a symlink."""
    where = os.open(name, PATH_FLAGS, dir_fd=dir_fd)
    try:
        mode = os.fstat(where).st_mode
        if stat.S_ISLNK(mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), shown)
        if not stat.S_ISREG(mode):
            raise UnsafePath("%s is not a regular file" % shown)
        # The very inode checked, opened again through the kernel's link to it.
        return os.open("/proc/self/fd/%d" % where, flags & ~os.O_NOFOLLOW)
    finally:
        os.close(where)


def read_at(dir_fd, name, shown, uid, limit):
    """The content of file `name` in `dir_fd` (checked by check_owned_file), or None if
    there is none. A symlink there is refused, never followed."""
    try:
        fd = open_regular_at(dir_fd, name, shown, READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath("%s is a symlink" % shown) from None
        raise
    try:
        check_owned_file(os.fstat(fd), shown, uid, limit)
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UnsafePath("%s is larger than %d bytes" % (shown, limit))
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_all(fd, data):
    """os.write until all of `data` is written."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def open_socket_at(dir_fd, name, shown, uid):
    """An O_PATH fd of the Unix socket `name` in `dir_fd`, owned by `uid`, or None if
    there is none. Connect to it with `connect_fd`: the kernel then reaches that very
    inode, whatever the name points to by then."""
    try:
        fd = os.open(name, PATH_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode):
            raise UnsafePath("%s is %s, not a socket" % (shown, describe(dir_fd, name)))
        if st.st_uid != uid:
            raise UnsafePath("%s belongs to uid %d, not %d" % (shown, st.st_uid, uid))
        return fd
    except BaseException:
        os.close(fd)
        raise


def connect_fd(sock, fd):
    """Connect a Unix socket to the socket file open as O_PATH `fd`."""
    sock.connect("/proc/self/fd/%d" % fd)
