"""The serving loop: one thread, `poll()` over the listening socket and at most
MAX_CLIENTS connections, non-blocking IO with per-frame deadlines.

`poll` rather than `select`: a target with more than 1024 open files would hand us fds
that `select` cannot watch. No extra fds (epoll, wakeup pipes): `stop()` wakes the loop by
connecting to the socket itself.
"""

import select
import socket
import struct
import time

from . import protocol
from .commands import BadArgs, ClientState

POLL_MS = 250
AUTH_TIMEOUT = 5.0
IDLE_CONNECTION = 600.0
WRITE_TIMEOUT = 30.0
MAX_PENDING_OUT = 2 * protocol.MAX_RESPONSE
_CRED = struct.Struct("3i")


def peer_credentials(sock):
    """(pid, uid, gid) of a Unix socket's peer (SO_PEERCRED)."""
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


class Connection:
    """One client: its buffers, deadlines and state."""

    def __init__(self, sock, now):
        self.sock = sock
        self.reader = protocol.FrameReader(protocol.MAX_REQUEST)
        self.out = bytearray()
        self.authed = False
        self.opened = now
        self.last_request = now
        self.frame_started = None
        self.out_since = None
        self.close_after_flush = False
        self.state = ClientState()


class Server:
    """Accepts, authenticates and serves clients until the agent asks it to stop."""

    def __init__(self, agent, listener):
        self.agent = agent
        self.listener = listener
        self.conns = {}
        self.poller = select.poll()
        self.poller.register(listener.fileno(), select.POLLIN)

    def _held_bytes(self):
        """Bytes buffered for clients (replies not yet sent, frames not yet complete)."""
        return sum(len(c.out) + len(c.reader.buffer) for c in self.conns.values())

    def client_count(self):
        return sum(1 for c in self.conns.values() if c.authed)

    def run(self):
        """Serve until the agent stops; every exception is recorded, none escapes."""
        agent = self.agent
        while not agent.stopping:
            try:
                events = self.poller.poll(POLL_MS)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                break
            now = time.monotonic()
            # The agent's own temporaries (receive buffers, grouping lists, encoded
            # replies) must not show up as the target's traced peak.
            agent.sampler.note_peak()
            for fd, mask in events:
                if agent.stopping:
                    break
                try:
                    self._on_event(fd, mask, now)
                except Exception as exc:  # a bug in one request must not end serving
                    agent.record_error("serving fd %d: %r" % (fd, exc))
                    self._drop(fd)
            agent.sampler.correct_peak(self._held_bytes())
            self._check_deadlines(time.monotonic())
            agent.check_idle(self.client_count() > 0)
        self._flush_all_briefly()
        for fd in list(self.conns):
            self._drop(fd)

    def _on_event(self, fd, mask, now):
        if fd == self.listener.fileno():
            self._accept(now)
            return
        conn = self.conns.get(fd)
        if conn is None:
            return
        if mask & (select.POLLERR | select.POLLNVAL):
            self._drop(fd)
            return
        if mask & select.POLLOUT:
            self._flush(conn, now)
        if mask & (select.POLLIN | select.POLLHUP) and not conn.close_after_flush:
            self._receive(conn, now)

    def _accept(self, now):
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        sock.setblocking(False)
        try:
            _, uid, _ = peer_credentials(sock)
        except OSError:
            sock.close()
            return
        greeting = self.agent.greeting()
        if self.agent.stopping:
            sock.close()
            return
        if uid not in (0, self.agent.uid):
            greeting.update(
                status="unauthorized",
                error=_err("unauthorized", "uid %d may not read this process's memory" % uid),
            )
            _send_and_close(sock, greeting)
            return
        if len(self.conns) >= protocol.MAX_CLIENTS:
            greeting.update(
                status="busy",
                error=_err("busy", "%d viewers are already connected" % protocol.MAX_CLIENTS),
            )
            _send_and_close(sock, greeting)
            return
        conn = Connection(sock, now)
        self.conns[sock.fileno()] = conn
        self.poller.register(sock.fileno(), select.POLLIN)
        self._queue(conn, greeting, now)

    def _receive(self, conn, now):
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn.sock.fileno())
            return
        if not data:
            self._drop(conn.sock.fileno())
            return
        try:
            bodies = conn.reader.feed(data)
        except protocol.ProtocolError as exc:
            # The stream cannot be resynchronised: reply, then close once flushed.
            conn.close_after_flush = True
            self._queue(conn, protocol.error_reply(None, exc.code, exc.message), now)
            return
        conn.frame_started = (conn.frame_started or now) if conn.reader.in_frame() else None
        for body in bodies:
            conn.last_request = now
            self._queue(conn, self._answer(conn, body), now)
            if conn.close_after_flush:
                break

    def _answer(self, conn, body):
        try:
            message = protocol.decode(body)
        except protocol.ProtocolError as exc:
            if not conn.authed:
                conn.close_after_flush = True
            return protocol.error_reply(None, exc.code, exc.message)
        if not conn.authed:
            return self._authenticate(conn, message)
        request_id = message.get("id")
        if request_id is not None and (
            not isinstance(request_id, int) or isinstance(request_id, bool)
        ):
            return protocol.error_reply(None, "bad_request", "id must be an integer")
        cmd = message.get("cmd")
        args = message.get("args", {})
        if not isinstance(cmd, str) or not isinstance(args, dict):
            return protocol.error_reply(
                request_id, "bad_request", "a request needs a string cmd and an object args"
            )
        agent = self.agent
        try:
            result = agent.commands.handle(cmd, args, conn.state)
        except KeyError:
            return protocol.error_reply(request_id, "unknown_command", "no command %r" % cmd[:64])
        except BadArgs as exc:
            return protocol.error_reply(request_id, "bad_args", str(exc))
        except Exception as exc:
            agent.record_error("%s: %r" % (cmd[:64], exc))
            return protocol.error_reply(
                request_id, "internal", "%s failed: %s" % (cmd[:64], type(exc).__name__)
            )
        return {"id": request_id, "ok": True, "result": result}

    def _authenticate(self, conn, message):
        proto = message.get("proto")
        if proto != protocol.PROTO_MAJOR:
            conn.close_after_flush = True
            return protocol.error_reply(
                None,
                "proto_mismatch",
                "agent speaks protocol %d.%d, "
                "client asked for %r" % (protocol.PROTO_MAJOR, protocol.PROTO_MINOR, proto),
            )
        token = message.get("token")
        if not isinstance(token, str) or not self.agent.token_ok(token):
            conn.close_after_flush = True
            return protocol.error_reply(None, "unauthorized", "missing or wrong session token")
        conn.authed = True
        self.agent.note_viewer(authenticated=True)
        return {"id": None, "ok": True, "result": {"authenticated": True}}

    def _queue(self, conn, message, now):
        try:
            frame = protocol.encode(message)
        except protocol.ProtocolError as exc:
            frame = protocol.encode(protocol.error_reply(message.get("id"), exc.code, exc.message))
        except (TypeError, ValueError) as exc:
            self.agent.record_error("encoding reply: %r" % (exc,))
            frame = protocol.encode(
                protocol.error_reply(message.get("id"), "internal", "reply could not be encoded")
            )
        if len(conn.out) + len(frame) > MAX_PENDING_OUT:
            # The client sends requests but does not read replies.
            self._drop(conn.sock.fileno())
            return
        conn.out += frame
        self._flush(conn, now)

    def _flush(self, conn, now):
        fd = conn.sock.fileno()
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # EPIPE / ECONNRESET: the viewer went away mid-reply.
                self._drop(fd)
                return
            del conn.out[:sent]
            conn.out_since = now
        if conn.out:
            if conn.out_since is None:
                conn.out_since = now
            self.poller.modify(fd, select.POLLIN | select.POLLOUT)
            return
        conn.out_since = None
        if conn.close_after_flush:
            self._drop(fd)
        else:
            self.poller.modify(fd, select.POLLIN)

    def _check_deadlines(self, now):
        for fd, conn in list(self.conns.items()):
            if _expired(conn, now):
                self._drop(fd)

    def _drop(self, fd):
        conn = self.conns.pop(fd, None)
        if conn is None:
            return
        try:
            self.poller.unregister(fd)
        except (KeyError, ValueError):
            pass
        was_viewer = conn.authed
        conn.state.clear()
        try:
            conn.sock.close()
        except OSError:
            pass
        if was_viewer:
            self.agent.note_viewer()

    def _flush_all_briefly(self):
        # A detach reply must reach its viewer before the socket closes.
        deadline = time.monotonic() + 1.0
        for conn in list(self.conns.values()):
            while conn.out and time.monotonic() < deadline:
                try:
                    sent = conn.sock.send(conn.out)
                    del conn.out[:sent]
                except (BlockingIOError, InterruptedError):
                    time.sleep(0.01)
                except OSError:
                    break


def _expired(conn, now):
    """A connection past one of its deadlines: an unfinished frame (slowloris), no
    authentication, a reply nobody reads, or a viewer silent for too long."""
    if conn.frame_started is not None and now - conn.frame_started > protocol.FRAME_TIMEOUT:
        return True
    if not conn.authed:
        return now - conn.opened > AUTH_TIMEOUT
    if conn.out and conn.out_since is not None and now - conn.out_since > WRITE_TIMEOUT:
        return True
    return now - conn.last_request > IDLE_CONNECTION


def _err(code, message):
    return {"code": code, "message": message}


def _send_and_close(sock, message):
    # A refusal is readable: the greeting is the first frame, sent before the client writes.
    try:
        sock.send(protocol.encode(message))
    except OSError:
        pass
    finally:
        sock.close()
