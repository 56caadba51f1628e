"""The private run directory that holds agent sockets, and the names inside it.

Shared by the agent and the viewer, so both derive the same paths. Stdlib only.
"""

import os
import stat

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


class RunDirError(Exception):
    """The run directory is missing, foreign or unsafe; the message names the fix."""


def default_run_dir(uid, environ):
    """`$XDG_RUNTIME_DIR/memtop` when that belongs to `uid`, else `/tmp/memtop-<uid>`."""
    xdg = environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        try:
            st = os.stat(xdg)
        except OSError:
            st = None
        if st is not None and st.st_uid == uid and stat.S_ISDIR(st.st_mode):
            candidate = os.path.join(xdg, "memtop")
            # Leave room for "<pid>-<starttime>.sock" (at most 7 + 1 + 20 + 5 bytes).
            if len(candidate) + 34 <= MAX_SOCKET_PATH:
                return candidate
    return "/tmp/memtop-%d" % uid


def check_private_dir(path, uid):
    """Refuse a run dir that is not a real 0700 directory owned by `uid`."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise RunDirError("run directory %s does not exist" % path) from None
    if stat.S_ISLNK(st.st_mode):
        raise RunDirError(
            "run directory %s is a symlink (possible squatting); remove it and retry" % path
        )
    if not stat.S_ISDIR(st.st_mode):
        raise RunDirError("run directory %s is not a directory; remove it and retry" % path)
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
    """Create the run dir 0700 if missing (owned by `uid` when we are root), then verify it."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    else:
        # mkdir honours the umask, which may only remove bits; make the mode exact.
        os.chmod(path, 0o700)
        if os.geteuid() == 0 and uid != 0:
            os.chown(path, uid, -1)
    check_private_dir(path, uid)


def process_start_time(pid):
    """Field 22 of /proc/PID/stat (clock ticks since boot): tells a reused pid apart."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


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


def token_name(pid, start_time):
    """File name of the token an opt-in or `memtop run` agent leaves for later viewers."""
    return "%d-%d.token" % (pid, start_time)
