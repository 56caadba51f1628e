"""Closes every fd from 3 up (as daemonizing code does), then reuses the numbers.

argv: STATE COMMANDS

COMMANDS is a file the test appends lines to; each new line is carried out once:
  closerange   close fds 3..255; reopen each number the agent used: its listener's number
               as a loopback TCP listener whose own clients connect in a bounded loop (a
               thread accepts them lazily and answers b"target\\n"), every other number as
               a data file the program keeps writing to and checks with fstat
  close-only   close fds 3..255 and reopen nothing
  fork         fork a child that writes to the data files and reports in STATE.child
  fd-limit     lower RLIMIT_NOFILE to the lowest free fd number (no new fd can be made),
               report "limited", and hold it until the file STATE.release exists
  stop         call the agent's stop()
  start        start a new opt-in agent (it writes its token file)

The state says which commands ran, the fds reopened, every write or fstat failure, and
what each TCP client received.
"""

import os
import resource
import socket
import sys
import threading
import time

from _state import report

state_path, commands_path = sys.argv[1], sys.argv[2]
TCP_CLIENTS = 20
data_fds = {}  # fd -> (st_dev, st_ino) of the data file opened on it
failures = []
tcp = {"port": None, "replies": [], "done": False}
done = []
results = {}


def agent_sockets():
    """{fd: True for a listening socket, False for a connection} of this process's Unix
    sockets (/proc/net/unix flag 0x10000 is __SO_ACCEPTCON: a listener)."""
    listening = {}
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            listening[int(fields[6])] = bool(int(fields[3], 16) & 0x10000)
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink("/proc/self/fd/" + name)
        except OSError:
            continue
        if link.startswith("socket:["):
            found[int(name)] = listening.get(int(link[8:-1]), False)
    return found


def open_on(number, opener):
    """Open a file with `opener`; the lowest free number must be `number`."""
    fd = opener()
    if fd != number:
        failures.append("opened fd %d, expected %d" % (fd, number))
    return fd


def serve_tcp(listener):
    # Lazy on purpose: clients wait in the backlog, where anyone polling the fd sees them.
    answered = 0
    while answered < TCP_CLIENTS:
        time.sleep(0.3)
        listener.setblocking(False)
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                break
            conn.setblocking(True)
            conn.sendall(b"target\n")
            conn.close()
            answered += 1


def tcp_clients(port):
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(TCP_CLIENTS)]
    for conn in conns:
        data = b""
        try:
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            data += ("<%s>" % type(exc).__name__).encode()
        conn.close()
        tcp["replies"].append(data.decode("latin-1"))
    tcp["done"] = True


def close_and_reuse(reuse):
    sockets = agent_sockets()
    results["agent_fds"] = sorted(sockets)
    os.closerange(3, 256)
    if not reuse:
        return
    top = max(sockets) if sockets else 3
    for number in range(3, top + 1):
        if sockets.get(number):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            open_on(number, listener.fileno)
            listener.bind(("127.0.0.1", 0))
            listener.listen(TCP_CLIENTS)
            tcp["port"] = listener.getsockname()[1]
            results["tcp_fd"] = number
        else:
            path = "%s.data%d" % (state_path, number)
            fd = open_on(number, lambda p=path: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
            st = os.fstat(fd)
            data_fds[fd] = (st.st_dev, st.st_ino)
    if tcp["port"] is not None:
        threading.Thread(target=serve_tcp, args=(listener,), daemon=True).start()
        threading.Thread(target=tcp_clients, args=(tcp["port"],), daemon=True).start()


def check_data_files(who):
    for fd, identity in data_fds.items():
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != identity:
                failures.append("%s: fd %d is no longer the data file" % (who, fd))
                continue
            os.write(fd, b"%s %f\n" % (who.encode(), time.time()))
        except OSError as exc:
            failures.append("%s: fd %d: %s" % (who, fd, exc))


def fork_child():
    pid = os.fork()
    if pid == 0:
        try:
            check_data_files("child")
            report(state_path + ".child", failures=failures, data_fds=sorted(data_fds))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def hold_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)  # dup() returns the lowest free number
    os.close(lowest_free)
    report(state_path, done=done, limited=True, failures=failures)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        while not os.path.exists(state_path + ".release"):  # stat() needs no fd
            time.sleep(0.05)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def agent():
    return sys.modules["_memtop_agent"]


def run(command):
    if command == "closerange":
        close_and_reuse(reuse=True)
    elif command == "close-only":
        close_and_reuse(reuse=False)
    elif command == "fork":
        fork_child()
    elif command == "fd-limit":
        hold_fd_limit()
    elif command == "stop":
        results["stopped"] = agent().stop()
    elif command == "start":
        try:
            results["started"] = agent().start({"origin": "opt-in", "write_token_file": True})
        except Exception as exc:
            results["started"] = {"error": repr(exc)}


counter = 0
while True:
    counter += 1
    try:
        with open(commands_path) as f:
            lines = f.read().split()
    except FileNotFoundError:
        lines = []
    for command in lines[len(done) :]:
        run(command)
        done.append(command)
    check_data_files("parent")
    report(
        state_path,
        counter=counter,
        done=done,
        failures=failures,
        data_fds=sorted(data_fds),
        tcp_replies=tcp["replies"],
        tcp_done=tcp["done"],
        **results,
    )
    time.sleep(0.2)
