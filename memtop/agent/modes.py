"""The agent's two modes, and switching between them while it serves.

exact: tracemalloc sees every allocation (the program pays 5-25x while it traces).
sampled: the native byte sampler records about one block per `rate` bytes allocated (a few
percent), with estimates and their error bars. `bytesampler` (and so ctypes) is imported
only when sampled mode is asked for.
"""

import os
import time

MODES = ("exact", "sampled")
DEFAULT_RATE = 262144
MIN_RATE = 1024
MAX_RATE = 1 << 34


def check(mode, rate):
    """Raise ValueError with the reason when `mode` or `rate` is not one the agent runs."""
    if mode not in MODES:
        raise ValueError("mode must be exact or sampled")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE
    ):
        raise ValueError(
            "rate must be a whole number of bytes from %d to %d" % (MIN_RATE, MAX_RATE)
        )


def use_sampled(agent, rate):
    """Sample one block per `rate` bytes from now on; tracing the agent started stops.
    Raises bytesampler.Unavailable with the reason (the agent then stays as it was)."""
    from . import bytesampler

    byte_sampler = bytesampler.load()
    sampler = agent.sampler
    agent.stop_tracing()
    try:
        seed = int.from_bytes(os.urandom(8), "little")
        byte_sampler.start(rate, seed)
    except bytesampler.Unavailable:
        agent.mode, agent.rate = "exact", None
        agent.start_tracing()
        raise
    agent.mode, agent.rate = "sampled", rate
    sampler.byte_sampler = byte_sampler
    sampler.owns_tracing = False
    sampler.reset_peak()
    agent.timeline.begin(since=time.time(), sampled=True)
    _tables_restart(agent)


def use_exact(agent):
    """Trace every allocation with tracemalloc from now on (a fresh session)."""
    agent.stop_tracing()
    agent.mode, agent.rate = "exact", None
    agent.sampler.reset_peak()
    agent.start_tracing()
    _tables_restart(agent)


def switch(agent, mode, rate):
    """The `mode` command: go to `mode` (sampled at `rate`). Raises Unavailable."""
    if mode == "sampled":
        if agent.mode != "sampled" or rate != agent.rate or not _sampling(agent):
            use_sampled(agent, rate)
    elif agent.mode != "exact" or _sampling(agent):
        use_exact(agent)
    agent.mode_note = None


def info(agent):
    """The mode as replies state it."""
    return {
        "mode": "sampled" if _sampling(agent) else "exact",
        "sample_rate": agent.rate if _sampling(agent) else None,
        "mode_note": agent.mode_note,
    }


def _sampling(agent):
    return agent.sampler is not None and agent.sampler.byte_sampler is not None


def _tables_restart(agent):
    agent.sampler.clear()
    if agent.server is not None:
        agent.server.forget_tables()
