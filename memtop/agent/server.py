"""The serving loop: one thread, `poll()` over the listening socket, at most MAX_CLIENTS
viewers and MAX_UNAUTHENTICATED connections still to authenticate, non-blocking IO with
per-frame deadlines.

`poll` rather than `select`: a target with more than 1024 open files would hand us fds
that `select` cannot watch. No extra fds (epoll, wakeup pipes): `stop()` wakes the loop by
connecting to the socket itself. Every fd is checked before use (ownsocket.py): when the
program closed the listener, serving ends without touching the number again.
"""

import collections
import select
import time

from . import protocol
from .checks import BadArgs, Busy
from .commands import ClientState
from .ownsocket import ForeignFd
from .rundir import peer_credentials

POLL_MS = 250
# A viewer sends its token as soon as it has read the greeting: one round trip.
AUTH_TIMEOUT = 2.0
# After an accept() error (the program ran out of fds, say) the pending connection keeps
# the listener readable: stop watching it for a while rather than spin.
ACCEPT_PAUSE = 1.0
# Connections accepted per wake-up: draining the backlog keeps room in it for a viewer.
ACCEPT_BATCH = 16
IDLE_CONNECTION = 600.0
WRITE_TIMEOUT = 30.0
MAX_PENDING_OUT = 2 * protocol.MAX_RESPONSE
LARGE_REPLY = 64 * 1024
# A client is read at most this often after a `busy` reply, and after REQUEST_BURST
# requests in one go: each request wakes the agent's thread, which must take the GIL
# from the program, so a client that never waits must not set the pace.
BUSY_PAUSE = 0.25
BURST_PAUSE = 0.05
REQUEST_BURST = 8


def trusted_uids(own_uid):
    """The peer uids that may connect: root, the agent's own user and, in a user namespace
    of its own (a container's), the uid that every user the namespace does not map shows
    as. Only a user privileged outside the container gets there: the socket is 0600 and
    its directory 0700, both of a user the namespace maps, and reaching them from outside
    takes /proc/PID/root (the right to trace the process). The token is asked anyway."""
    trusted = {0, own_uid}
    try:
        with open("/proc/self/uid_map") as f:
            whole = f.read().split() == ["0", "0", "4294967295"]
        if not whole:
            with open("/proc/sys/kernel/overflowuid") as f:
                trusted.add(int(f.read()))
    except (OSError, ValueError):
        pass
    return frozenset(trusted)


class Connection:
    """One client: its socket, buffers, deadlines and state."""

    def __init__(self, own, peer_pid, now):
        self.own = own
        self.fd = own.fd
        self.peer_pid = peer_pid
        self.reader = protocol.FrameReader(protocol.MAX_REQUEST)
        self.out = bytearray()
        self.authed = False
        self.opened = now
        self.last_request = now
        self.frame_started = None
        self.out_since = None
        self.close_after_flush = False
        self.state = ClientState()
        # Complete requests not answered yet, and until when the client is not read.
        self.pending = collections.deque()
        self.paused_until = None


class Server:
    """Accepts, authenticates and serves clients until the agent asks it to stop."""

    def __init__(self, agent, listener):
        self.agent = agent
        self.listener = listener  # an OwnSocket bound to the agent's path
        self.conns = {}
        self.poller = select.poll()
        self.poller.register(listener.fd, select.POLLIN)
        self.accept_paused_until = None
        self.trusted = trusted_uids(agent.uid)

    def _held_bytes(self):
        """Bytes buffered for clients (replies not yet sent, frames not yet complete)."""
        return sum(len(c.out) + len(c.reader.buffer) for c in self.conns.values())

    def forget_tables(self):
        """Tracing restarted: no viewer's next Δ columns compare with a table of the last
        session (baselines stay, flagged as such in replies)."""
        for conn in self.conns.values():
            conn.state.previous = {}
            conn.state.last_rows = None

    def client_count(self):
        """Authenticated viewers."""
        return sum(1 for c in self.conns.values() if c.authed)

    def run(self):
        """Serve until the agent stops; every exception is recorded, none escapes."""
        agent = self.agent
        while not agent.stopping:
            if not self.listener.is_ours():
                self._lose_listener()
                break
            self._resume_accepting(time.monotonic())
            try:
                events = self.poller.poll(self._poll_ms())
            except InterruptedError:
                continue
            except (OSError, ValueError):
                break
            # The agent's own temporaries (receive buffers, grouping lists, encoded
            # replies) must not show up as the target's traced peak.
            agent.sampler.note_peak()
            handling = time.monotonic()
            for fd, mask in events:
                if agent.stopping:
                    break
                try:
                    # The clock read per event: answering one request may take seconds at a
                    # large heap, and a connection accepted after it must not look that old.
                    self._on_event(fd, mask, time.monotonic())
                except ForeignFd:
                    if fd == self.listener.fd:
                        self._lose_listener()
                    else:
                        self._drop(fd)
                except Exception as exc:  # a bug in one request must not end serving
                    agent.record_error("serving fd %d: %r" % (fd, exc))
                    self._drop(fd)
            self._pardon(handling)
            # Never reset the peak of a tracing session the program has restarted.
            agent.follow_tracing()
            agent.keep_history()
            agent.sampler.correct_peak(self._held_bytes())
            self._resume_reading(time.monotonic())
            self._check_conns(time.monotonic())
            agent.check_idle(self.client_count() > 0)
        self._flush_all_briefly()
        self.release_all()

    def _poll_ms(self):
        """Wait no longer than the first paused client's pause."""
        pauses = [c.paused_until for c in self.conns.values() if c.paused_until is not None]
        if not pauses:
            return POLL_MS
        return max(0, min(POLL_MS, int((min(pauses) - time.monotonic()) * 1000) + 1))

    def _pardon(self, since):
        """Time the agent spent answering is not a client's delay: a viewer whose token
        waited unread while a large table was computed must not miss its deadline."""
        spent = time.monotonic() - since
        if spent < 0.05:
            return
        for conn in self.conns.values():
            conn.opened += spent
            if conn.frame_started is not None:
                conn.frame_started += spent
            if conn.out_since is not None:
                conn.out_since += spent

    def release_all(self):
        """Let go of every connection: close the agent's own fds, forget foreign numbers."""
        for fd in list(self.conns):
            self._drop(fd)

    def _lose_listener(self):
        # The program closed the listener (and may have the number back for its own
        # file): stop serving; a later attach starts a new agent.
        self.agent.record_error("the program closed the agent's socket (fd %d)" % self.listener.fd)
        self.agent.request_stop("the program closed the agent's socket")

    def _on_event(self, fd, mask, now):
        if fd == self.listener.fd:
            self.listener.check()
            if mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                # A listener shut down under the agent never accepts again.
                self.agent.request_stop("the agent's socket failed")
                return
            for _ in range(ACCEPT_BATCH):
                if not self._accept(now):
                    break
            return
        conn = self.conns.get(fd)
        if conn is None:
            return
        conn.own.check()
        if mask & (select.POLLERR | select.POLLNVAL):
            self._drop(fd)
            return
        if mask & select.POLLOUT:
            self._flush(conn, now)
        if conn.paused_until is not None and not mask & select.POLLHUP:
            return
        if mask & (select.POLLIN | select.POLLHUP) and not conn.close_after_flush:
            self._receive(conn, now)

    def _accept(self, now):
        """Accept one connection; False when there is none to accept now."""
        if self.accept_paused_until is not None or self.agent.stopping:
            return False
        try:
            own = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionAbortedError:
            return True
        except OSError as exc:
            # EMFILE, ENFILE, ENOBUFS…: the connection stays queued and poll() would
            # report it again at once.
            self.agent.record_error("accept: %r" % (exc,))
            self._pause_accepting(now)
            return False
        try:
            own.sock.setblocking(False)
            peer_pid, uid, _ = peer_credentials(own.sock)
        except OSError:
            own.release()
            return True
        greeting = self.agent.greeting()
        if self.agent.stopping:
            own.release()
            return False
        if uid not in self.trusted:
            greeting.update(
                status="unauthorized",
                error=_err("unauthorized", "uid %d may not read this process's memory" % uid),
            )
            _send_and_release(own, greeting)
            return True
        if self.client_count() >= protocol.MAX_CLIENTS:
            greeting.update(status="busy", error=_busy())
            _send_and_release(own, greeting)
            return True
        self._make_room()
        # A number the program closed under one of our connections may come back to us.
        self._drop(own.fd)
        conn = Connection(own, peer_pid, now)
        self.conns[own.fd] = conn
        self.poller.register(own.fd, select.POLLIN)
        self._queue(conn, greeting, now)
        return True

    def _make_room(self):
        """Drop one connection that has not authenticated when their pool is full."""
        waiting = [c for c in self.conns.values() if not c.authed]
        if len(waiting) < protocol.MAX_UNAUTHENTICATED:
            return
        # The oldest of the process holding the most: a flood from one process pushes
        # out its own connections, not a viewer that is authenticating meanwhile.
        per_pid = collections.Counter(c.peer_pid for c in waiting)
        most = max(per_pid.values())
        victim = min((c for c in waiting if per_pid[c.peer_pid] == most), key=_opened)
        self._drop(victim.fd)

    def _pause_accepting(self, now):
        if self.accept_paused_until is None:
            self.accept_paused_until = now + ACCEPT_PAUSE
            _unregister(self.poller, self.listener.fd)

    def _resume_accepting(self, now):
        if self.accept_paused_until is not None and now >= self.accept_paused_until:
            self.accept_paused_until = None
            self.poller.register(self.listener.fd, select.POLLIN)

    def _receive(self, conn, now):
        try:
            data = conn.own.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, ForeignFd):
            self._drop(conn.fd)
            return
        if not data:
            self._drop(conn.fd)
            return
        try:
            bodies = conn.reader.feed(data)
        except protocol.ProtocolError as exc:
            # The stream cannot be resynchronised: reply, then close once flushed.
            conn.close_after_flush = True
            self._queue(conn, protocol.error_reply(None, exc.code, exc.message), now)
            return
        conn.frame_started = (conn.frame_started or now) if conn.reader.in_frame() else None
        conn.pending.extend(bodies)
        self._serve_pending(conn, now)

    def _serve_pending(self, conn, now):
        """Answer the client's waiting requests, a few at a time."""
        served = 0
        if conn.paused_until is not None:
            return
        while conn.pending and not conn.close_after_flush and conn.fd in self.conns:
            if served >= REQUEST_BURST:
                self._pause_reading(conn, now + BURST_PAUSE)
                return
            conn.last_request = now
            reply = self._answer(conn, conn.pending.popleft())
            served += 1
            self._queue(conn, reply, now)
            if _is_busy(reply):
                self._pause_reading(conn, now + min(BUSY_PAUSE, reply["error"]["retry_in"]))
                return

    def _pause_reading(self, conn, until):
        conn.paused_until = until
        self._watch(conn)

    def _resume_reading(self, now):
        for conn in list(self.conns.values()):
            if conn.paused_until is not None and now >= conn.paused_until:
                conn.paused_until = None
                self._serve_pending(conn, now)
                if conn.fd in self.conns:
                    self._watch(conn)

    def _watch(self, conn):
        """Poll for what the connection waits for: requests unless paused, room to write."""
        mask = 0 if conn.paused_until is not None else select.POLLIN
        if conn.out:
            mask |= select.POLLOUT
        try:
            self.poller.modify(conn.fd, mask)
        except (KeyError, OSError, ValueError):
            pass

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
        except Busy as exc:
            return protocol.error_reply(request_id, "busy", str(exc), retry_in=exc.retry_in)
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
        if self.client_count() >= protocol.MAX_CLIENTS:
            conn.close_after_flush = True
            return protocol.error_reply(None, "busy", _busy()["message"])
        conn.authed = True
        conn.state.token = token
        self.agent.note_viewer(authenticated=True)
        return {"id": None, "ok": True, "result": {"authenticated": True}}

    def _queue(self, conn, message, now):
        started = time.thread_time()
        try:
            frame = protocol.encode(message)
        except protocol.ProtocolError as exc:
            frame = protocol.encode(protocol.error_reply(message.get("id"), exc.code, exc.message))
        except (TypeError, ValueError) as exc:
            self.agent.record_error("encoding reply: %r" % (exc,))
            frame = protocol.encode(
                protocol.error_reply(message.get("id"), "internal", "reply could not be encoded")
            )
        if len(frame) > LARGE_REPLY:
            # Encoding a large reply (500 rows, a snapshot part) is work for the budget too.
            self.agent.sampler.spend(time.thread_time() - started)
        if len(conn.out) + len(frame) > MAX_PENDING_OUT:
            # The client sends requests but does not read replies.
            self._drop(conn.fd)
            return
        conn.out += frame
        self._flush(conn, now)

    def _flush(self, conn, now):
        fd = conn.fd
        while conn.out:
            try:
                sent = conn.own.send(conn.out)
            except (BlockingIOError, InterruptedError):
                break
            except (OSError, ForeignFd):
                # EPIPE / ECONNRESET: the viewer went away mid-reply.
                self._drop(fd)
                return
            del conn.out[:sent]
            conn.out_since = now
        if conn.out:
            if conn.out_since is None:
                conn.out_since = now
            self._watch(conn)
            return
        conn.out_since = None
        if conn.close_after_flush:
            self._drop(fd)
        else:
            self._watch(conn)

    def _check_conns(self, now):
        """Drop connections past a deadline, and forget numbers the program took back."""
        for fd, conn in list(self.conns.items()):
            if _expired(conn, now) or not conn.own.is_ours():
                self._drop(fd)

    def _drop(self, fd):
        conn = self.conns.pop(fd, None)
        if conn is None:
            return
        _unregister(self.poller, fd)
        was_viewer = conn.authed
        conn.state.clear()
        conn.own.release()
        if was_viewer:
            self.agent.note_viewer()

    def _flush_all_briefly(self):
        # A detach reply must reach its viewer before the socket closes.
        deadline = time.monotonic() + 1.0
        for conn in list(self.conns.values()):
            while conn.out and time.monotonic() < deadline:
                try:
                    sent = conn.own.send(conn.out)
                    del conn.out[:sent]
                except (BlockingIOError, InterruptedError):
                    time.sleep(0.01)
                except (OSError, ForeignFd):
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


def _is_busy(reply):
    error = reply.get("error")
    return error is not None and error.get("code") == "busy" and "retry_in" in error


def _err(code, message):
    return {"code": code, "message": message}


def _busy():
    return _err("busy", "%d viewers are already connected" % protocol.MAX_CLIENTS)


def _opened(conn):
    return conn.opened


def _unregister(poller, fd):
    try:
        poller.unregister(fd)
    except (KeyError, ValueError):
        pass


def _send_and_release(own, message):
    # A refusal is readable: the greeting is the first frame, sent before the client writes.
    try:
        own.send(protocol.encode(message))
    except (OSError, ForeignFd):
        pass
    finally:
        own.release()
