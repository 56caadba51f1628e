"""Sockets the agent created, checked before every use.

The program owns its fd table: it may close the agent's fds (`os.closerange` in
daemonizing code) and get the same numbers back for its own files and sockets. An fd
number alone therefore proves nothing. Each socket remembers the `fstat` identity (device,
inode) it had when the agent created it, and, for the listener, the path it is bound to;
before any accept, recv, send or close the agent checks that the number still refers to
that socket, and a number that does not is forgotten, never closed. A Python socket
closes its fd when garbage-collected too, so a foreign number is `detach()`ed.

A program thread that closes and reuses a number in the microseconds between a check and
the call it guards is not excluded (no syscall takes an fd and its identity at once);
accept() therefore also checks the connection it got.
"""

import os
import socket


class ForeignFd(Exception):
    """The fd number no longer refers to the agent's socket."""


def fd_identity(fd):
    """(st_dev, st_ino) of an open fd, or None when the number is closed."""
    try:
        st = os.fstat(fd)
    except (OSError, ValueError, OverflowError):
        return None
    return (st.st_dev, st.st_ino)


class OwnSocket:
    """One socket of the agent: its number, its identity, and checked operations."""

    def __init__(self, sock, path=None):
        self.sock = sock
        self.fd = sock.fileno()
        self.identity = fd_identity(self.fd)
        # For a listener: the address it was bound to (getsockname returns it as given).
        self.path = path

    def is_ours(self):
        """True while the fd number still refers to the socket the agent created."""
        if self.identity is None or self.sock.fileno() != self.fd:
            return False
        if fd_identity(self.fd) != self.identity:
            return False
        return self.path is None or _name(self.sock) == self.path

    def check(self):
        """Raise ForeignFd unless the fd is still the agent's socket."""
        if not self.is_ours():
            raise ForeignFd(self.fd)

    def accept(self):
        """Accept one connection on the checked listener; returns an OwnSocket."""
        self.check()
        sock, _ = self.sock.accept()
        accepted = OwnSocket(sock)
        if self.path is not None and _name(sock) != self.path:
            # The number changed hands between the check and accept(): this connection
            # was meant for the program's listener. Its fd is new (accept made it), so
            # closing it touches nothing of the program's; serving it would.
            accepted.release()
            raise ForeignFd(self.fd)
        return accepted

    def recv(self, size):
        self.check()
        return self.sock.recv(size)

    def send(self, data):
        self.check()
        # MSG_NOSIGNAL: a program that restored SIGPIPE's default action must not be
        # killed because a viewer went away mid-reply.
        return self.sock.send(data, socket.MSG_NOSIGNAL)

    def release(self):
        """Close the fd if it is still the agent's socket; otherwise forget the number
        without closing it (it belongs to the program now). Never raises."""
        try:
            if self.sock.fileno() == -1:
                return
            if self.is_ours():
                self.sock.close()
            else:
                self.sock.detach()
        except OSError:
            pass


def _name(sock):
    try:
        return sock.getsockname()
    except OSError:
        return None
