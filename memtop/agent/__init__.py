"""memtop's agent: runs inside the observed process and serves tracemalloc data over a
private Unix socket.

It is loaded by file path under a private module name, so it must stay self-contained:
stdlib only, Python 3.9 syntax, relative imports only, nothing printed, nothing raised
into the host program.

Opt-in use (no ptrace needed to attach later)::

    import memtop.agent
    memtop.agent.start({"write_token_file": True})
"""

import importlib

__all__ = ["AGENT_VERSION", "AgentStartError", "boot", "start", "status", "stop"]

# Loaded when first used: the viewer imports a few of this package's modules (the protocol,
# the run dir), and need not load the agent itself with them.
_HOME = {
    "boot": "bootstrap",
    "AGENT_VERSION": "lifecycle",
    "AgentStartError": "lifecycle",
    "start": "lifecycle",
    "status": "lifecycle",
    "stop": "lifecycle",
}


def __getattr__(name):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    value = getattr(importlib.import_module("." + home, __name__), name)
    globals()[name] = value
    return value
