"""memtop's agent: runs inside the observed process and serves tracemalloc data over a
private Unix socket.

It is loaded by file path under a private module name, so it must stay self-contained:
stdlib only, Python 3.9 syntax, relative imports only, nothing printed, nothing raised
into the host program.

Opt-in use (no ptrace needed to attach later)::

    import memtop.agent
    memtop.agent.start({"write_token_file": True})
"""

from .bootstrap import boot
from .lifecycle import AGENT_VERSION, AgentStartError, start, status, stop

__all__ = ["AGENT_VERSION", "AgentStartError", "boot", "start", "status", "stop"]
