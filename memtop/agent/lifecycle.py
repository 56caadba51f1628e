"""Starting and stopping the agent inside the target, and keeping it harmless there.

`start()` and `stop()` are idempotent; the module stays loaded between attaches, so a second
attach only calls `start()` again (re-executing the source on every attach grows the
target). The agent starts tracemalloc only if it is off and stops it on the way out only in
that case, and only while it is still the session the agent started: a program that stopped
or restarted tracing owns it from then on. One `os.register_at_fork` hook per process: a
forked child has no agent thread, no inherited listening socket and no tracing that the
agent started. The agent's fds are checked before every use (ownsocket.py): a program may
close them and reuse the numbers.
"""

import _thread
import atexit
import binascii
import collections
import hmac
import os
import socket
import sys
import time
import tracemalloc

from . import footprint, modes, protocol, rundir
from .commands import Commands
from .ownsocket import OwnSocket, fd_identity
from .sampler import Sampler
from .server import Server
from .sources import SourceLines
from .timeline import Timeline

AGENT_VERSION = "0.1.0"
DEFAULT_NFRAME = 4
DEFAULT_IDLE_TIMEOUT = 600.0
MAX_TOKENS = 8

_lock = _thread.allocate_lock()
_agent = None
_fork_hook_installed = False
_exit_hook_installed = False


class AgentStartError(Exception):
    """The agent could not start; the message names the cause."""


class Agent:
    """A running agent: its socket, tokens, sampler and serving thread."""

    def __init__(self, config):
        self.version = AGENT_VERSION
        self.uid = os.geteuid()
        self.pid = os.getpid()
        self.start_time = rundir.process_start_time(self.pid)
        self.run_dir = config.get("rundir") or rundir.default_run_dir(self.uid, os.environ)
        self.socket_path = rundir.socket_path(self.run_dir, self.pid, self.start_time)
        self.token_path = None
        self.token_file = None  # (st_dev, st_ino) of the token file the agent wrote
        self.tokens = []
        # run: started by `memtop run`; attach: injected by a viewer; opt-in: the program
        # called start() itself (it stays attachable: no idle timeout by default).
        self.origin = config.get("origin", "opt-in")
        default_idle = None if self.origin == "opt-in" else DEFAULT_IDLE_TIMEOUT
        self.idle_timeout = config.get("idle_timeout", default_idle)
        # True: trace from now on. "on-connect": trace only while viewers come (opt-in
        # programs pay nothing until someone looks). False: use the program's own tracing.
        self.trace_mode = config.get("trace", True)
        self.nframe = config.get("nframe", DEFAULT_NFRAME)
        # exact (tracemalloc) or sampled (the native byte sampler, one block per `rate`
        # bytes); `mode_note` says why sampled mode was asked for and could not run.
        self.mode = config.get("mode", "exact")
        self.rate = config.get("rate", modes.DEFAULT_RATE)
        self.mode_note = None
        self.started = time.time()
        self.last_viewer = time.monotonic()
        self.errors = collections.deque(maxlen=20)
        self.stopping = False
        self.cleaned = False
        self.thread_id = None
        self.done = _thread.allocate_lock()
        self.listener = None  # an OwnSocket
        self.socket_file = None  # (st_dev, st_ino) of the socket file the agent bound
        # An object allocated just after the agent started tracing: tracemalloc knows where
        # it was allocated for as long as that tracing session lasts. A program that stops
        # tracing clears every trace, so once its traceback is gone the session the agent
        # started is over, even if the program has started tracing again since.
        self.trace_marker = None
        self.sampler = None
        # The history viewers share: a viewer that comes back later goes on from it.
        self.timeline = Timeline()
        self.sources = SourceLines()
        self.commands = None
        self.server = None
        self.python = sys.version.split()[0]
        self.free_threaded = _is_free_threaded()

    @property
    def tracing_owner(self):
        """Who owns tracing now: "agent" (the session it started, or its byte sampler),
        "target" or "none"."""
        if self.sampler is not None and self.sampler.byte_sampler is not None:
            return "agent"
        self.follow_tracing()
        if self.trace_marker is not None:
            return "agent"
        return "target" if tracemalloc.is_tracing() else "none"

    def follow_tracing(self):
        """Hand tracing over to the program once the agent's own session has ended; drop
        the history and the cached table of a session that ended."""
        if self.timeline.follow():
            if self.sampler is not None:
                self.sampler.clear()
            if self.server is not None:
                self.server.forget_tables()
        marker = self.trace_marker
        if marker is None:
            return
        if tracemalloc.is_tracing() and tracemalloc.get_object_traceback(marker) is not None:
            return
        self.trace_marker = None
        if self.sampler is not None:
            self.sampler.owns_tracing = False

    def tracing_info(self):
        """The tracing session: its id (new at every start or restart of tracing), when it
        started (known when the agent started it), who owns it, and whether it sees only
        allocations made after the process had been running (tracing started by an attach,
        or by the first viewer of an agent that traces on connect)."""
        owner = self.tracing_owner  # follows the session first
        timeline = self.timeline
        late = self.origin == "attach" or self.trace_mode == "on-connect"
        return {
            "session": timeline.session,
            "since": timeline.since,
            "owner": owner,
            "sees_only_new": owner == "agent" and late,
        }

    def keep_history(self, totals=None, spacing=None):
        """Add the memory account to the shared history: about once a second, viewer or
        not, and at a viewer's refreshes (`totals` read for it, `spacing` apart at least).
        Cheap totals only, never a read of the trace table."""
        try:
            timeline = self.timeline
            if timeline.session is None or self.sampler is None:
                return
            now = time.time()
            if now - timeline.last_point_time() < (spacing or timeline.spacing):
                return
            totals = totals if totals is not None else self.sampler.totals()
            timeline.record_point(totals, footprint.resident_bytes(), now, spacing)
        except Exception as exc:
            self.record_error("history: %r" % (exc,))

    def serving(self):
        """True while the listening socket is still the agent's own."""
        return self.listener is not None and self.listener.is_ours()

    # Called from the serving thread -------------------------------------------------
    def greeting(self):
        return {
            "agent": "memtop",
            "proto": [protocol.PROTO_MAJOR, protocol.PROTO_MINOR],
            "version": self.version,
            "pid": self.pid,
            "start": self.start_time,
            "py": self.python,
            "ft": self.free_threaded,
            "tracing_owner": self.tracing_owner,
            "tracing": self.tracing_info(),
            "nframe": self.traceback_depth(),
            "origin": self.origin,
            **modes.info(self),
            "status": "ok",
        }

    def traceback_depth(self):
        """Frames kept per traceback: the sampler's deep stacks, or tracemalloc's limit."""
        if self.sampler is not None and self.sampler.byte_sampler is not None:
            from .nativelib import MAX_FRAMES  # loaded already: the sampler runs

            return MAX_FRAMES
        return tracemalloc.get_traceback_limit() if tracemalloc.is_tracing() else 0

    def token_ok(self, token):
        given = token.encode("utf-8", "surrogatepass")
        ok = False
        for known in self.tokens:
            # compare_digest on every token: no early exit that could leak timing.
            ok = hmac.compare_digest(given, known) or ok
        return ok

    def client_count(self):
        return self.server.client_count() if self.server is not None else 0

    def keep_token(self, token):
        """Leave `token` in the run dir's token file, for a later viewer."""
        _write_token_file(self, token)

    def record_error(self, text):
        self.errors.append({"time": time.time(), "error": text[:500]})

    def note_viewer(self, authenticated=False):
        self.last_viewer = time.monotonic()
        if authenticated and self.trace_mode == "on-connect":
            self.start_tracing()

    def check_idle(self, has_viewer):
        now = time.monotonic()
        if has_viewer:
            self.last_viewer = now
        elif self.idle_timeout is not None and now - self.last_viewer > self.idle_timeout:
            self.detach("no viewer for %.0f s" % self.idle_timeout)

    def detach(self, reason):
        """What a viewer's detach (or the idle timeout) means: stop, or, for an agent that
        traces on connect, stop tracing and stay attachable."""
        if self.trace_mode == "on-connect":
            self.stop_tracing()
        else:
            self.request_stop(reason)

    def start_tracing(self):
        """Start tracemalloc unless something already traces; remember who owns it."""
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.nframe)
            self.timeline.begin(since=time.time())
            marker = object()
            if tracemalloc.get_object_traceback(marker) is not None:
                self.trace_marker = marker
        if self.sampler is not None:
            self.sampler.owns_tracing = self.tracing_owner == "agent"

    def stop_tracing(self):
        """Stop the tracing the agent started (a program's own tracing is left alone):
        its tracemalloc session or its byte sampler (the allocators restored)."""
        sampler = self.sampler
        if sampler is not None and sampler.byte_sampler is not None:
            try:
                sampler.byte_sampler.stop()
            finally:
                sampler.byte_sampler = None
                self.timeline.end()
        if self.tracing_owner == "agent":
            tracemalloc.stop()
        self.trace_marker = None
        self.timeline.follow()  # the session's history goes with it
        if self.sampler is not None:
            self.sampler.clear()
            self.sampler.owns_tracing = False

    def request_stop(self, reason):
        if not self.stopping:
            self.stopping = True

    def add_token(self, token):
        if token is None:
            token = binascii.hexlify(os.urandom(32)).decode("ascii")
        if not isinstance(token, str) or not 16 <= len(token) <= 256:
            raise AgentStartError("session token must be a string of 16 to 256 characters")
        encoded = token.encode("utf-8", "surrogatepass")
        if encoded not in self.tokens:
            self.tokens.append(encoded)
            del self.tokens[:-MAX_TOKENS]
        return token

    def wake(self):
        """Make the serving thread's poll() return now."""
        _probe(self.socket_path, 0.5)


def start(config=None):
    """Start serving (or, if already serving, accept one more session token).

    config keys, all optional: token (str; generated when missing), write_token_file
    (bool; default True for opt-in), rundir (str), nframe (int), idle_timeout (seconds or
    None), budget (0..1), trace (True, False or "on-connect"), origin (run, attach,
    opt-in), mode ("exact" or "sampled"), rate (bytes, sampled mode), strict (bool:
    fail rather than trace exactly when sampled mode cannot run). Returns status() of the
    running agent. Raises AgentStartError."""
    global _agent
    config = dict(config or {})
    with _lock:
        agent = _agent
        if agent is not None and not agent.stopping and not agent.serving():
            # The program closed the agent's socket: serve from a new one.
            agent.request_stop("the program closed the agent's socket")
        if agent is not None and not agent.stopping:
            token = agent.add_token(config.get("token"))
            if "idle_timeout" in config:
                agent.idle_timeout = config["idle_timeout"]
            if config.get("write_token_file"):
                _write_token_file(agent, token)
            return _status(agent)
    if agent is not None:
        stop()
    with _lock:
        if _agent is not None:
            return _status(_agent)
        agent = Agent(config)
        try:
            _start(agent, config)
        except AgentStartError:
            _cleanup(agent)
            raise
        except Exception as exc:
            _cleanup(agent)
            message = "agent failed to start: %s: %s" % (type(exc).__name__, exc)
            raise AgentStartError(message) from None
        _agent = agent
        return _status(agent)


def _start(agent, config):
    global _fork_hook_installed, _exit_hook_installed
    nframe = agent.nframe
    budget = config.get("budget", 0.05)
    if agent.origin not in ("run", "attach", "opt-in"):
        raise AgentStartError("origin must be run, attach or opt-in")
    if agent.trace_mode not in (True, False, "on-connect"):
        raise AgentStartError('trace must be true, false or "on-connect"')
    try:
        modes.check(agent.mode, agent.rate)
    except ValueError as exc:
        raise AgentStartError(str(exc)) from None
    if not isinstance(nframe, int) or not 1 <= nframe <= 1000:
        raise AgentStartError("nframe must be an integer from 1 to 1000")
    if not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise AgentStartError("budget must be a fraction in (0, 1]")
    token = agent.add_token(config.get("token"))
    try:
        rundir.ensure_private_dir(agent.run_dir, agent.uid)
    except (rundir.RunDirError, OSError) as exc:
        raise AgentStartError(str(exc)) from None
    if len(agent.socket_path) > rundir.MAX_SOCKET_PATH:
        raise AgentStartError("socket path %s is too long" % agent.socket_path)
    _clear_stale_socket(agent.socket_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.listener = OwnSocket(listener)
    # The directory is 0700, so the moment between bind and chmod exposes nothing.
    # (Changing the umask instead would race with the target's own threads.)
    listener.bind(agent.socket_path)
    agent.listener.path = agent.socket_path
    os.chmod(agent.socket_path, 0o600)
    agent.socket_file = _file_identity(agent.socket_path)
    # A generous backlog: clients beyond MAX_CLIENTS must still connect to read "busy".
    listener.listen(64)
    listener.setblocking(False)
    agent.sampler = Sampler(budget=float(budget))
    strict = config.get("strict", False)
    if agent.mode == "sampled" and not strict and tracemalloc.is_tracing():
        # The program traces already: exact mode costs it nothing more and sees further back.
        agent.mode = "exact"
    if agent.mode == "sampled" and agent.trace_mode is True:
        _start_sampled(agent, strict)
    elif agent.trace_mode is True or tracemalloc.is_tracing():
        agent.start_tracing()
    agent.commands = Commands(agent)
    agent.server = Server(agent, agent.listener)
    if config.get("write_token_file", agent.origin == "opt-in"):
        _write_token_file(agent, token)
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        # Registered once per process: hooks cannot be removed, so it checks the state.
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True
    if not _exit_hook_installed:
        # Once per process, like the fork hook: on 3.9-3.13 atexit.unregister() leaves
        # its slot behind, so a register per attach would grow the target forever.
        atexit.register(_at_exit)
        _exit_hook_installed = True
    agent.done.acquire()
    try:
        agent.thread_id = _thread.start_new_thread(_serve, (agent,))
    except BaseException:
        agent.done.release()
        raise


def _start_sampled(agent, strict):
    """Sampled mode, or (unless `strict`) exact mode with the reason it could not run."""
    from .bytesampler import Unavailable

    try:
        modes.use_sampled(agent, agent.rate)
    except Unavailable as exc:
        if strict:
            raise AgentStartError(str(exc)) from None
        agent.mode_note = str(exc)
        agent.start_tracing()


def _serve(agent):
    global _agent
    try:
        agent.server.run()
    except BaseException as exc:  # never raise into the target, not even SystemExit
        agent.record_error("serving loop: %r" % (exc,))
    finally:
        # Connections left by a loop that ended early: a Python socket closes its fd when
        # collected, and the number may be the program's by now.
        agent.server.release_all()
        with _lock:
            _cleanup(agent)
            if _agent is agent:
                _agent = None
        agent.done.release()


def stop(timeout=5.0):
    """Stop serving: thread gone, socket and token file removed, tracing stopped if the
    agent started it, caches dropped. Returns True if an agent was running."""
    agent = _agent
    if agent is None:
        return False
    agent.request_stop("stop()")
    if _thread.get_ident() == agent.thread_id:
        return True  # called from a command: the loop ends after this reply
    agent.wake()
    if agent.done.acquire(True, timeout):
        agent.done.release()
    else:
        _force_cleanup(agent)
    return True


def _force_cleanup(agent):
    """Clean up an agent whose thread did not stop in time."""
    global _agent
    with _lock:
        _cleanup(agent)
        if _agent is agent:
            _agent = None


def _cleanup(agent):
    if agent.cleaned:
        return
    agent.cleaned = True
    agent.stopping = True
    if agent.listener is not None:
        agent.listener.release()
    if agent.socket_file is not None:
        _unlink_if_same(agent.socket_path, agent.socket_file)
    if agent.token_file is not None:
        _unlink_if_same(agent.token_path, agent.token_file)
    agent.stop_tracing()
    agent.sources.clear()


def status():
    """A dict describing the running agent, or None when stopped."""
    agent = _agent
    return _status(agent) if agent is not None else None


def _status(agent):
    return {
        "socket": agent.socket_path,
        "pid": agent.pid,
        "start": agent.start_time,
        "tracing_owner": agent.tracing_owner,
        "origin": agent.origin,
        "token_file": agent.token_path,
        "idle_timeout": agent.idle_timeout,
        "version": agent.version,
        **modes.info(agent),
    }


def _at_exit():
    try:
        stop(timeout=1.0)
    except Exception:
        pass


def _after_fork_in_child():
    # The serving thread does not exist here and the parent still owns the socket path:
    # close our copies of the fds (those still ours: the program may have closed and
    # reused the numbers before forking), stop tracing we started, forget the agent.
    global _agent, _lock
    _lock = _thread.allocate_lock()
    agent = _agent
    _agent = None
    if agent is None:
        return
    try:
        agent.cleaned = True
        agent.stopping = True
        server = agent.server
        if server is not None:
            for conn in list(server.conns.values()):
                conn.own.release()
            server.conns.clear()
        if agent.listener is not None:
            agent.listener.release()
        agent.stop_tracing()
    except Exception:
        pass


def _clear_stale_socket(path):
    """Remove a socket file at our own name that nobody serves; refuse a live one."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return
    if not _probe(path, 1.0):
        os.unlink(path)
        return
    raise AgentStartError("another memtop agent already serves this process at %s" % path)


def _write_token_file(agent, token):
    path = os.path.join(agent.run_dir, rundir.token_name(agent.pid, agent.start_time))
    tmp = path + ".%d.tmp" % os.getpid()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, token.encode("ascii"))
        identity = fd_identity(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    agent.token_path = path
    agent.token_file = identity


def _probe(path, timeout):
    """Connect to the socket at `path` and hang up; True if something listens there."""
    probe = OwnSocket(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    try:
        probe.sock.settimeout(timeout)
        probe.sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.release()


def _file_identity(path):
    st = os.lstat(path)
    return (st.st_dev, st.st_ino)


def _unlink_if_same(path, identity):
    """Remove the file the agent made, not one that took its name since."""
    try:
        if _file_identity(path) == identity:
            os.unlink(path)
    except OSError:
        pass


def _is_free_threaded():
    check = getattr(sys, "_is_gil_enabled", None)
    if check is None:
        return False
    try:
        import sysconfig

        return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    except Exception:
        return False
