"""A raw client for protocol tests: sends exactly the bytes a test wants, reads frames."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from memtop.agent import protocol


class Raw:
    """One raw connection to an agent socket."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: Any) -> None:
        body = json.dumps(message).encode()
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def read(self) -> dict[str, Any] | None:
        """The next frame, or None when the agent closed the connection."""
        header = self._exact(4)
        if header is None:
            return None
        body = self._exact(struct.unpack(">I", header)[0])
        return None if body is None else json.loads(body)

    def closed_by_peer(self) -> bool:
        """True when the agent has closed its end (EOF or reset)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def reply(self) -> dict[str, Any]:
        """The next frame, which must come (a closed connection fails the test)."""
        frame = self.read()
        if frame is None:
            raise ConnectionError("the agent closed the connection instead of replying")
        return frame

    def hello(self, token: str) -> dict[str, Any]:
        """Read the greeting, authenticate, return the reply."""
        greeting = self.read()
        assert greeting is not None and greeting["status"] == "ok", greeting
        self.send({"proto": protocol.PROTO_MAJOR, "token": token, "client": "test"})
        return self.reply()

    def call(self, cmd: str, request_id: int = 1, **args: Any) -> dict[str, Any]:
        self.send({"id": request_id, "cmd": cmd, "args": args})
        return self.reply()

    def close(self, reset: bool = False) -> None:
        if reset:
            # SO_LINGER 0: close with a RST, like a viewer killed with -9 mid-reply.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def _exact(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            data += chunk
        return data


def error_code(reply: dict[str, Any] | None) -> str | None:
    """The error code of a reply, or None for a success or no reply."""
    if reply is None or reply.get("ok", True):
        return None
    return reply["error"]["code"]
