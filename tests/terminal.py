"""A real terminal for end-to-end tests: one tmux session running a command."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import psutil
import pytest
from conftest import ROOT, wait_for


def tmux() -> str:
    path = shutil.which("tmux")
    if path is None:
        pytest.skip("tmux is not installed (CI installs it)")
    return path


class Terminal:
    """One tmux session running a command; screen reads are the handshake."""

    def __init__(self, command: str, env: dict[str, str], size: tuple[int, int] = (100, 30)):
        self.name = f"memtop-test-{uuid.uuid4().hex[:8]}"
        # A tmux server of its own: it ends with the session, and nothing of another
        # test's terminal is in its way.
        self.tmux = [tmux(), "-L", self.name]
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        subprocess.run(
            [*self.tmux, "new-session", "-d", "-s", self.name, "-x", str(size[0]),
             "-y", str(size[1]), f"cd {ROOT} && env {exports} {command}; sleep 600"],
            check=True,
        )  # fmt: skip

    def screen(self) -> str:
        out = subprocess.run(
            [*self.tmux, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
        )
        return out.stdout

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        return wait_for(lambda: text in (s := self.screen()) and s, timeout, repr(text))

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, *keys], check=True)

    def close(self) -> None:
        """End the session and its server, and wait until the server process is gone."""
        server = [
            p for p in psutil.process_iter(["cmdline"])
            if self.name in " ".join(p.info["cmdline"] or [])
        ]  # fmt: skip
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)
        psutil.wait_procs(server, timeout=10)
