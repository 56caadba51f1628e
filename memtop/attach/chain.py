"""The attach chain (DESIGN.md §3): reuse a serving agent → `sys.remote_exec` (3.14+) →
gdb pending call → gdb parked thread (only when the main thread sits in a system call) →
a diagnosis that names the fix. One attach at a time per target (a lock in its run dir).

The run dir is opened once per attach and used only through its fd (see
memtop.agent.rundir): the target's user may swap anything in it at any moment.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from memtop.agent import rundir
from memtop.agent.rundir import RunDir, RunDirError
from memtop.attach import gdb, procfs, remote_exec
from memtop.attach.container import alive_inside
from memtop.attach.diagnose import is_stopped, no_answer, stopped_message, target_ended
from memtop.attach.preflight import Target, preflight
from memtop.attach.session import (
    AttachLock,
    Session,
    alive_here,
    existing_target_run_dir,
    new_session,
    open_target_run_dir,
    remove_stale,
    stage_agent,
    target_run_dir,
    tidy_container_run_dir,
)
from memtop.client import AgentClient
from memtop.errors import AttachError, MemtopError, TargetExited, UsageError
from memtop.modes import ModeRequest, settle_mode

METHODS = ("auto", "remote-exec", "gdb", "gdb-parked")
POLL = 0.05
PARKED_ATTEMPTS = 3
ABANDONED_ATTEMPTS = 2
PARKED_AFTER = 1.0
# At least this long for sys.remote_exec's caller (twice the attach timeout if longer):
# its call takes milliseconds, unless something holds it up (a container's fake /proc).
CALL_TIMEOUT = 10.0


@dataclass
class Attached:
    """A connected agent in a target, and how memtop got there."""

    target: Target
    client: AgentClient
    token: str
    how: str  # reuse | opt-in | remote-exec | gdb | gdb-parked
    seconds: float


class _NoAnswer(Exception):
    def __init__(self, message: str, blocked: bool) -> None:
        super().__init__(message)
        self.message = message
        self.blocked = blocked


class _CutShort(Exception):
    """A fault stopped one of gdb's calls into the target; what it had done was undone."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


T = TypeVar("T")


def _through(
    route: str,
    target: Target,
    new: Callable[[], Session],
    wait: Callable[[Session], T],
    timeout: float,
) -> tuple[T, Session]:
    """Inject a new session through `route` and wait for its outcome. A request whose gdb
    calls a fault cut short is made once more, with a new session: the first may have been
    used up half-way (a page that may have been queued is never queued again, and its
    bootstrap finds its session withdrawn)."""
    for attempt in range(1, ABANDONED_ATTEMPTS + 1):
        session = new()
        try:
            _inject(route, target, session, max(CALL_TIMEOUT, 2 * timeout))
            return wait(session), session
        except _CutShort as exc:
            session.withdraw()
            if attempt == ABANDONED_ATTEMPTS:
                raise AttachError(exc.message) from None
        except _NoAnswer:
            if session.withdraw():
                raise
            # The bootstrap claimed the session just as the wait ended: the agent is
            # starting, so wait for it once more rather than leave it unwatched.
            return wait(session), session
        except BaseException as exc:
            session.withdraw()
            # Whatever a route makes of a process that died under it (a refused ptrace, a
            # missing symbol), the death is the cause.
            if isinstance(exc, AttachError) and (ended := target_ended(target)):
                raise TargetExited(ended) from None
            raise
    raise AssertionError("unreachable")


def plan(target: Target, method: str, force_gdb: bool = False) -> list[str]:
    """The routes to try, in order; the parked route only follows a blocked main thread."""
    modern = target.python.version >= (3, 14)
    if method == "remote-exec" and not modern:
        raise UsageError(
            f"--method remote-exec needs CPython 3.14 or newer; pid {target.pid} runs "
            f"{target.python.label} (use --method gdb)"
        )
    opt_out = remote_exec.opted_out(target) if modern else None
    if opt_out and not (force_gdb and method != "remote-exec"):
        raise remote_exec.RemoteDebugDisabled(remote_exec.OPT_OUT_ADVICE.format(how=opt_out))
    if method != "auto":
        return [method]
    # From a container, sys.remote_exec needs a host interpreter of the target's version.
    reachable = target.container is None or remote_exec.host_interpreter(target) is not None
    if modern and not opt_out and reachable:
        return ["remote-exec", "gdb-parked"]
    return ["gdb", "gdb-parked"]


def attach(
    pid: int,
    method: str = "auto",
    nframe: int = 4,
    timeout: float = 5.0,
    force_gdb: bool = False,
    mode: ModeRequest | None = None,
    note: Callable[[str], None] | None = None,
) -> Attached:
    """Attach to `pid` and return a connected, authenticated client whose agent runs in
    `mode` (default: exact, as before; `note` hears why sampled mode could not run)."""
    attached = _attach(pid, method, nframe, timeout, force_gdb, mode or ModeRequest("exact"))
    try:
        settle_mode(attached.client, mode or ModeRequest("exact"), note or (lambda text: None))
    except BaseException:
        attached.client.close()
        raise
    return attached


def _attach(
    pid: int, method: str, nframe: int, timeout: float, force_gdb: bool, mode: ModeRequest
) -> Attached:
    started = time.monotonic()
    target = preflight(pid)
    try:
        return _attach_to(target, method, nframe, timeout, force_gdb, mode, started)
    except BaseException:
        tidy(target, timeout=0.0)  # what a failed attach staged in a container goes
        raise


def _attach_to(
    target: Target,
    method: str,
    nframe: int,
    timeout: float,
    force_gdb: bool,
    mode: ModeRequest,
    started: float,
) -> Attached:
    pid = target.pid
    with (
        _run_dir(target, create=True) as run_dir,
        AttachLock(run_dir, target.own_pid, target.start),
    ):
        remove_stale(run_dir, _alive(target, run_dir))
        reused = _reuse(target, run_dir)
        if reused is not None:
            client, token, how = reused
            return Attached(target, client, token, how, time.monotonic() - started)
        routes = plan(target, method, force_gdb)
        agent_dir = stage_agent(run_dir)
        request = {"config": {"nframe": nframe, **mode.agent_config()}}
        new = partial(new_session, run_dir, target.own_pid, target.start, agent_dir, request)
        for index, route in enumerate(routes):
            fallback = index + 1 < len(routes) and routes[index + 1] == "gdb-parked"
            wait = partial(_await_agent, target, route=route, timeout=timeout, fallback=fallback)
            try:
                client, session = _through(route, target, new, wait, timeout)
            except _NoAnswer as exc:
                if not (fallback and exc.blocked):
                    raise AttachError(exc.message) from None
                continue
            session.withdraw()
            return Attached(target, client, session.token, route, time.monotonic() - started)
    raise AttachError(f"could not attach to pid {pid}")  # unreachable: plan() is never empty


def detach(pid: int, method: str = "auto", force_gdb: bool = False, timeout: float = 5.0) -> str:
    """Stop the agent in `pid`; returns what happened, in words."""
    target = preflight(pid)
    socket_name = rundir.socket_name(target.own_pid, target.start)
    run_dir = _run_dir(target, create=False)
    if run_dir is None or run_dir.lstat(socket_name) is None:
        if run_dir is not None:
            run_dir.close()
        return f"no memtop agent serves pid {pid}"
    with run_dir, AttachLock(run_dir, target.own_pid, target.start):
        words, stopped = _stop_agent(target, run_dir, socket_name, method, force_gdb, timeout)
    if stopped:
        tidy(target)  # once the lock is let go: it goes too
    return words


def _stop_agent(
    target: Target,
    run_dir: RunDir,
    socket_name: str,
    method: str,
    force_gdb: bool,
    timeout: float,
) -> tuple[str, bool]:
    """Stop the agent that serves `socket_name`: (what happened, whether it stopped)."""
    pid = target.pid
    token = _token_file(run_dir, target)
    if token is not None:
        try:
            client = _connect(run_dir, socket_name, token, target)
        except MemtopError:
            client = None
        if client is not None:
            reply = client.request("detach")
            client.close()
            _wait_gone(run_dir, socket_name, timeout)
            stopped = not reply.get("other_viewers") and not reply.get("stays")
            return _detached_words(pid, reply), stopped
    agent_dir = stage_agent(run_dir)
    route = plan(target, method, force_gdb)[0]
    new = partial(new_session, run_dir, target.own_pid, target.start, agent_dir, {"action": "stop"})
    wait = partial(_await_result, target, route=route, timeout=timeout)
    try:
        _, session = _through(route, target, new, wait, timeout)
    except _NoAnswer as exc:
        raise AttachError(exc.message) from None
    session.withdraw()
    _wait_gone(run_dir, socket_name, timeout)
    return f"agent stopped in pid {pid} ({route})", True


def _run_dir(target: Target, create: bool) -> RunDir:
    """The target's run dir, opened (with `create`, made if missing; else None if there is
    none). In a container, its path is the target's, reached from the target's root."""
    root = target.root()
    try:
        path = target_run_dir(target, root)
        if create:
            return open_target_run_dir(path, target, root)
        return existing_target_run_dir(path, target, root)  # type: ignore[return-value]
    finally:
        if root is not None:
            root.close()


def _alive(target: Target, run_dir: RunDir) -> Callable[[int, int], bool]:
    """Whether a process named in the target's run dir (by its own pid) still runs. In a
    PID namespace of its own, also whether an agent answers at the name's socket: the run
    dir may be shared with processes of other PID namespaces (containers of one pod
    sharing /tmp), whose pids say nothing in the target's."""
    if target.container is None or "PID" not in target.container.namespaces:
        return alive_here
    running = alive_inside(target.container.pid_namespace)

    def alive(pid: int, start: int) -> bool:
        if running(pid, start):
            return True
        try:
            return _listening(run_dir, rundir.socket_name(pid, start))
        except AttachError:
            return True  # a socket that is not its user's: not memtop's to judge

    return alive


def tidy(target: Target, timeout: float = 3.0) -> None:
    """After the agent in a contained target stopped: nothing of memtop's stays in the
    container's files (the staged agent and the run dir memtop made go)."""
    if target.container is None or not target.container.other_mounts:
        return
    try:
        root = target.root()
    except AttachError:
        return  # it ended, and its files with its container, or not ours to touch
    if root is None:
        return
    try:
        path = target_run_dir(target, root)
        run_dir = existing_target_run_dir(path, target, root)
        if run_dir is None:
            return
        with run_dir:
            # The agent removes its socket as it stops, just after its last answer.
            socket_name = rundir.socket_name(target.own_pid, target.start)
            _wait_gone(run_dir, socket_name, timeout)
            if run_dir.lstat(socket_name) is not None:
                return  # an agent serves, and loads its modules from its copy: all stays
            remove_stale(run_dir, _alive(target, run_dir))
            with (
                contextlib.suppress(AttachError),
                AttachLock(run_dir, target.own_pid, target.start, wait=0.0) as lock,
            ):
                lock.remove()
            tidy_container_run_dir(run_dir, path, root)
    except AttachError:
        pass  # what is there is not memtop's to touch
    finally:
        root.close()


def _detached_words(pid: int, reply: dict) -> str:
    if reply.get("other_viewers"):
        return f"the agent in pid {pid} stays: {reply['other_viewers']} other viewer(s) use it"
    if reply.get("stays"):
        return f"tracing stopped in pid {pid}; its opt-in agent stays attachable"
    owner = reply.get("tracing_owner")
    tracing = "tracing stopped" if owner == "agent" else "the program's own tracing left on"
    return f"agent stopped in pid {pid}; {tracing}"


def _reuse(target: Target, run_dir: RunDir) -> tuple[AgentClient, str, str] | None:
    """An agent already serving, if memtop can authenticate to it without injecting.

    A socket nobody serves is stale and removed; one served by another process than the
    target is an impostor, and the attach stops (AgentClient checks SO_PEERCRED)."""
    name = rundir.socket_name(target.own_pid, target.start)
    if run_dir.lstat(name) is None:
        return None
    if not _listening(run_dir, name):
        run_dir.remove(name)
        return None
    token = _token_file(run_dir, target)
    if token is None:
        return None  # serving, but only an injected session can hand it a new token
    client = _connect(run_dir, name, token, target)
    how = "opt-in" if client.greeting.get("origin") == "opt-in" else "reuse"
    return client, token, how


def _listening(run_dir: RunDir, name: str) -> bool:
    """rundir.listening, as `memtop ps` asks it; a socket of another user stops the attach."""
    try:
        return rundir.listening(run_dir, name)
    except RunDirError as exc:
        raise AttachError(str(exc)) from exc


def _connect(run_dir: RunDir, name: str, token: str, target: Target) -> AgentClient:
    return _connect_path(run_dir.join(name), token, target)


def _connect_path(path: str, token: str, target: Target) -> AgentClient:
    """The agent at `path` (the target's path: in a container, from its root), served by
    the target itself (its pid as memtop sees it) and owned by its user."""
    contained = target.container is not None and target.container.other_mounts
    return AgentClient.connect(
        path,
        token,
        expected_pid=target.pid,
        uid=target.uid,
        root=(target.pid, target.start) if contained else None,
    )


def _token_file(run_dir: RunDir, target: Target) -> str | None:
    """The token an opt-in or `memtop run` agent left, if any (never read through a link)."""
    try:
        data = run_dir.read(rundir.token_name(target.own_pid, target.start), limit=1024)
    except RunDirError as exc:
        raise AttachError(str(exc)) from exc
    if data is None:
        return None
    return data.decode("ascii", "replace").strip() or None


def _inject(route: str, target: Target, session: Session, call_timeout: float) -> None:
    if route == "remote-exec":
        # One script name per target. It stays while a request may still run it (one
        # that timed out: a missing script makes CPython print an error on the target's
        # stderr), and goes once the agent answered: CPython runs a script at most once
        # per request, and memtop makes one request at a time (the lock). A late request
        # running a newer script just serves the newer session.
        session.script = f"{target.own_pid}-{target.start}.boot.py"
        try:
            session.run_dir.write(session.script, session.bootstrap().encode())
        except OSError as exc:
            raise AttachError(f"cannot write the bootstrap: {exc}") from exc
        try:
            remote_exec.inject(target, session.run_dir.join(session.script), call_timeout)
        except remote_exec.NothingSent:
            session.run_dir.remove(session.script)  # no request can run it
            raise
        return
    mode = "pending" if route == "gdb" else "parked"
    for attempt in range(PARKED_ATTEMPTS if mode == "parked" else 1):
        if attempt:
            time.sleep(0.2)
        result = gdb.run(target, mode, session.bootstrap(gdb_page=mode == "pending"))
        # A thread that was running Python a moment ago may be parked a moment later.
        if result.get("ok") or result.get("reason") != "no parked thread":
            break
    if result.get("ok"):
        return
    reason = result.get("reason")
    if reason == "no parked thread":
        threads = "; ".join(
            f"thread {t['lwp']} in {t['frame0']}: {t.get('skip', '?')}"
            for t in result.get("threads", [])
        )
        raise AttachError(
            f"no thread of pid {target.pid} is safely parked in a system call without the "
            f"GIL ({threads}); retry when the program is idle, or use `memtop run`"
        )
    if reason == "gone":
        raise TargetExited(target_ended(target) or f"process {target.pid} exited")
    if reason == "abandoned":
        raise _CutShort(
            f"a fault stopped gdb's calls into pid {target.pid} "
            f"({result.get('error')}); they were given up and undone, and the program carries "
            "on. Retry, or use `memtop run`"
        )
    if reason == "busy":
        raise AttachError(
            f"the main thread of pid {target.pid} is inside CPython's pending-call code right "
            "now; retry in a moment"
        )
    detail = result.get("error") or reason or "unknown"
    raise AttachError(f"gdb could not inject into pid {target.pid}: {detail}")


def _await_result(
    target: Target, session: Session, route: str, timeout: float, fallback: bool = False
) -> dict:
    """The agent's answer to the session, waiting at most `timeout` seconds for it.

    With `fallback` (a parked-thread attach comes next), stop waiting after PARKED_AFTER
    seconds if the main thread has not used any CPU since the request and sits in a system
    call: it is parked, and the request would wait as long as it does."""
    started = time.monotonic()
    deadline = started + timeout
    before = procfs.thread_wait(target.pid) if fallback else None
    while True:
        result = session.result()
        if result is not None:
            if session.script is not None:
                session.run_dir.remove(session.script)  # it ran
            if not result.get("ok"):
                raise AttachError(
                    f"the agent could not start in pid {target.pid}: {result.get('error')}"
                )
            return result
        ended = target_ended(target)
        if ended:
            raise TargetExited(ended)
        now = time.monotonic()
        if now > deadline:
            raise _NoAnswer(*no_answer(target, route, timeout))
        if before is not None and now - started > PARKED_AFTER:
            current = procfs.thread_wait(target.pid)
            if current and current.syscall and current.cpu_ns == before.cpu_ns:
                raise _NoAnswer(*no_answer(target, route, now - started))
        time.sleep(POLL)


def _await_agent(
    target: Target, session: Session, route: str, timeout: float, fallback: bool
) -> AgentClient:
    result = _await_result(target, session, route, timeout, fallback)
    path = result.get("socket")
    if not isinstance(path, str):
        raise AttachError(f"the agent in pid {target.pid} named no socket: {result!r:.200}")
    try:
        # Anywhere the agent says, but reached without following a symlink, a socket of the
        # target's user, served by the target itself.
        return _connect_path(path, session.token, target)
    except MemtopError:
        # The agent started, then the program was stopped before it could answer.
        if is_stopped(target.pid):
            raise AttachError(
                stopped_message(target.pid, "its memtop agent cannot answer")
            ) from None
        raise


def _wait_gone(run_dir: RunDir, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while run_dir.lstat(name) is not None and time.monotonic() < deadline:
        time.sleep(POLL)
