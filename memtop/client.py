"""Viewer side of the socket: connect, authenticate, send requests, read replies."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from memtop import __version__, replies
from memtop.agent import protocol, rundir
from memtop.errors import AgentBusy, AgentError, AttachError, BadReply, ConnectionLost

DEFAULT_TIMEOUT = 60.0
# How long a request may wait in all for the agent's time budget (busy replies) before
# AgentBusy is raised; a view that would rather show a notice sets a shorter wait.
DEFAULT_BUSY_WAIT = 30.0


class AgentClient:
    """A connection to one agent; `request()` is synchronous and not thread-safe."""

    def __init__(
        self, sock: socket.socket, greeting: dict[str, Any], path: str, uid: int | None = None
    ) -> None:
        self.sock = sock
        self.greeting = greeting
        self.path = path
        self.uid = uid  # who owns the socket
        self.root: tuple[int, int] | None = None  # whose root `path` starts at (a container)
        self.busy_wait = DEFAULT_BUSY_WAIT
        self._next_id = 1

    @classmethod
    def connect(
        cls,
        path: str,
        token: str,
        expected_pid: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        uid: int | None = None,
        root: tuple[int, int] | None = None,
    ) -> AgentClient:
        """Connect, check who serves the socket, read the greeting, authenticate.

        The socket must belong to `uid` (default: memtop's own user) and is reached
        without following a symlink anywhere on `path`. `root`: (pid, start time) of a
        process in a container, whose path `path` is (reached from that process's root)."""
        owner = os.geteuid() if uid is None else uid
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        try:
            if root is None:
                rundir.connect_path(sock, path, owner)
            else:
                with rundir.ProcessRoot(*root) as start:
                    rundir.connect_path(sock, path, owner, start)
        except rundir.RunDirError as exc:
            sock.close()
            raise AttachError(str(exc)) from exc
        except OSError as exc:
            sock.close()
            raise AttachError(
                f"cannot connect to the agent at {path}: {exc.strerror or exc}"
            ) from exc
        try:
            if expected_pid is not None:
                served_by, _uid, _gid = rundir.peer_credentials(sock)
                if served_by != expected_pid:
                    # A socket planted at the expected path by someone else.
                    raise AttachError(
                        f"the socket {path} is served by pid {served_by}, not by the target "
                        f"{expected_pid}; remove it and retry"
                    )
            client = cls(sock, {}, path, owner)
            client.root = root
            greeting = replies.check_greeting(client._read())
            if greeting["status"] != "ok":
                error = greeting.get("error") or {}
                code = error.get("code", greeting.get("status"))
                raise AttachError(
                    f"the agent refused the connection ({code}): {error.get('message', '')}"
                )
            client.greeting = greeting
            client._send(
                {"proto": protocol.PROTO_MAJOR, "token": token, "client": f"memtop {__version__}"}
            )
            reply = replies.check_handshake(client._read())
            if not reply["ok"]:
                error = reply.get("error") or {}
                raise AttachError(
                    f"the agent refused the session ({error.get('code')}): {error.get('message')}"
                )
            sock.settimeout(timeout)
            return client
        except BaseException:
            sock.close()
            raise

    def request(self, cmd: str, **args: Any) -> Any:
        """Send one command and return its result, checked (memtop.replies); raises
        AgentError, BadReply or ConnectionLost.

        A busy reply (the agent's time budget is spent) is retried after the time it
        names, as long as the total wait stays within `busy_wait`; then AgentBusy."""
        deadline = time.monotonic() + self.busy_wait
        while True:
            try:
                return self._request_once(cmd, args)
            except AgentBusy as exc:
                if time.monotonic() + exc.retry_in > deadline:
                    raise
                time.sleep(exc.retry_in)

    def _request_once(self, cmd: str, args: dict[str, Any]) -> Any:
        request_id = self._next_id
        self._next_id += 1
        self._send({"id": request_id, "cmd": cmd, "args": args})
        try:
            reply = replies.check_reply(cmd, args, request_id, self._read())
        except BadReply:
            self.close()  # what follows on this stream cannot be trusted either
            raise
        if not reply["ok"]:
            error = reply.get("error") or {}
            retry_in = error.get("retry_in") if isinstance(error, dict) else None
            if error.get("code") == "busy" and isinstance(retry_in, (int, float)):
                # Bounded: a hostile agent cannot make a viewer sleep for a day.
                wait = min(max(float(retry_in), 0.05), 600.0)
                raise AgentBusy(str(error.get("message")), wait)
            raise AgentError(str(error.get("code")), str(error.get("message")))
        return reply.get("result")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        """End a request another thread is waiting on (close alone does not wake it)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.sendall(protocol.encode(message, limit=protocol.MAX_REQUEST))
        except OSError as exc:
            raise ConnectionLost(f"agent connection lost: {exc}") from exc

    def _read(self) -> dict[str, Any]:
        header = self._read_exact(protocol.HEADER.size)
        (length,) = protocol.HEADER.unpack(header)
        if length > protocol.MAX_RESPONSE:
            raise BadReply(
                replies.bad_frame(f"announces {length} bytes (limit {protocol.MAX_RESPONSE})")
            )
        try:
            return protocol.decode(self._read_exact(length))
        except protocol.ProtocolError as exc:
            raise BadReply(replies.bad_frame(f"breaks the protocol ({exc.message})")) from None

    def _read_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            try:
                chunk = self.sock.recv(min(n, 1 << 20))
            except TimeoutError as exc:
                raise ConnectionLost("the agent did not answer in time") from exc
            except OSError as exc:
                raise ConnectionLost(f"agent connection lost: {exc}") from exc
            if not chunk:
                raise ConnectionLost("the agent closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)
