"""A hostile user racing a root viewer in their own run directory (run as that user).

In a tight loop, alternating attack and quiet phases of random length, it swaps the
directory an agent copy is being built in for a symlink to DECOY_DIR, moves the run
directory itself away and puts a symlink or another directory in its place, plants hard
links to DECOY_RW and symlinks to SECRET at the lock, session, session result, token and
boot script names, and swaps the agent's socket for a symlink to DECOY_SOCK. Quiet phases
undo the plants, so attaches can also get through. Stops when STOP exists or after
SECONDS, then writes how often it did each thing to REPORT (JSON).

argv: RUN_DIR PID START DECOY_DIR DECOY_RW SECRET DECOY_SOCK STOP SECONDS SEED REPORT
(START "auto": read the target's start time from /proc)
"""

import json
import os
import random
import sys
import time

(run, pid, start, decoy_dir, decoy_rw, secret, decoy_sock, stop, seconds, seed, report) = sys.argv[
    1:12
]
if start == "auto":  # the target's start time, read where the racer runs (a container)
    with open("/proc/%s/stat" % pid, "rb") as f:
        stat = f.read()
    start = stat[stat.rindex(b")") + 2 :].split()[19].decode()
prefix = "%s-%s" % (pid, start)
lock, token, sock, boot = (prefix + ext for ext in (".lock", ".token", ".sock", ".boot.py"))
rng = random.Random(int(seed))
counts = {}
serial = [0]


def did(what):
    counts[what] = counts.get(what, 0) + 1


def away(path):
    """Rename `path` out of the way, in its own directory (moving a directory elsewhere
    needs write access to it, which root's are not): the next one can take its name."""
    serial[0] += 1
    try:
        os.rename(path, os.path.join(os.path.dirname(path), ".away-%d" % serial[0]))
        return True
    except OSError:
        return False


def plant_link(name, target, hard, what):
    path = os.path.join(run, name)
    try:
        if hard:
            os.link(target, path)
        else:
            os.symlink(target, path)
        did(what)
    except OSError:
        pass


def ours(path):
    """True for a symlink or a hard link to a decoy: what the quiet phase takes back."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if os.path.islink(path):
        return True
    try:
        return st.st_ino == os.stat(decoy_rw).st_ino
    except OSError:
        return False  # the decoys are not here (a racer in a container)


def attack(names):
    for name in names:
        path = os.path.join(run, name)
        if name.startswith("agent-") and name.endswith(".tmp"):
            # An agent copy being built: make its name point at the decoy directory.
            if away(path):
                try:
                    os.symlink(decoy_dir, path)
                    did("staging swapped")
                except OSError:
                    pass
        elif name.startswith("agent-") and "." not in name:
            if away(path):
                did("staged copy removed")  # so that the next attach builds one again
        elif name.endswith(".session"):
            if name + ".result" not in names:
                hard = rng.random() < 0.5
                plant_link(name + ".result", decoy_rw if hard else secret, hard, "result planted")
            elif rng.random() < 0.2 and not ours(path) and away(path):
                plant_link(name, secret, False, "session swapped")
    if lock not in names or rng.random() < 0.3:
        if lock in names and not ours(os.path.join(run, lock)):
            away(os.path.join(run, lock))
        hard = rng.random() < 0.7
        plant_link(lock, decoy_rw if hard else secret, hard, "lock planted")
    if token not in names:
        hard = rng.random() < 0.3
        plant_link(token, decoy_rw if hard else secret, hard, "token planted")
    if boot not in names:
        plant_link(boot, secret, False, "boot script planted")
    if sock in names and not ours(os.path.join(run, sock)) and rng.random() < 0.2:
        if away(os.path.join(run, sock)):
            plant_link(sock, decoy_sock, False, "socket swapped")
    elif sock not in names and rng.random() < 0.2:
        plant_link(sock, decoy_sock, False, "socket planted")


def swap_run_dir():
    """Move the run dir away; put a symlink to the decoy, a fresh directory, or nothing."""
    if not away(run):
        return
    choice = rng.random()
    try:
        if choice < 0.5:
            os.symlink(decoy_dir, run)
            did("run dir swapped for a symlink")
        elif choice < 0.8:
            os.mkdir(run, 0o700)
            did("run dir swapped for a directory")
        else:
            did("run dir removed")
    except OSError:
        pass


def quiet():
    """Take the plants back, so that attaches can get through."""
    if os.path.islink(run):
        try:
            os.unlink(run)
        except OSError:
            pass
    try:
        names = os.listdir(run)
    except OSError:
        return
    for name in names:
        if ours(os.path.join(run, name)):
            try:
                os.unlink(os.path.join(run, name))
            except OSError:
                pass


deadline = time.monotonic() + float(seconds)
phase_end = 0.0
attacking = False
while time.monotonic() < deadline and not os.path.exists(stop):
    now = time.monotonic()
    if now > phase_end:
        attacking = not attacking
        # Quiet phases long enough for a whole attach (spawning sys.remote_exec's caller
        # alone takes about 0.1 s).
        phase_end = now + (rng.uniform(0.05, 0.5) if attacking else rng.uniform(0.5, 2.0))
        did("attack phases" if attacking else "quiet phases")
        if not attacking:
            quiet()
        elif rng.random() < 0.4:
            swap_run_dir()
    if not attacking:
        time.sleep(0.002)
        continue
    try:
        names = os.listdir(run)
        # (A racer that is root itself, in a container, owns the run dir root made.)
        fresh = os.lstat(run).st_uid == 0 and os.getuid() != 0
    except OSError:
        names, fresh = None, False
    if fresh and away(run):
        # Root just made the run dir and has not given it to us yet: a symlink instead.
        try:
            os.symlink(decoy_dir, run)
            did("new run dir swapped for a symlink")
        except OSError:
            pass
    elif names is not None:
        attack(names)
    elif rng.random() < 0.01:
        swap_run_dir()
    if rng.random() < 0.002:
        swap_run_dir()

with open(report, "w") as f:
    json.dump(counts, f)
