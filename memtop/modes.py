"""Which mode the agent runs in, as the user asked for it (DESIGN.md §7 "Modes").

exact: tracemalloc, every allocation (5-25x slower while watched). sampled: the native
byte sampler, one block per RATE bytes on average (a few percent). Attaching to a running
process defaults to sampled; `run` and `demo` default to exact. When sampled mode cannot
run, memtop falls back to exact and says why, unless the user asked for sampled: then it
stops with the reason (exit 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from memtop.client import AgentClient
from memtop.errors import AgentError, AttachError, UsageError

MODES = ("exact", "sampled")
# 256 KiB: about ±20 % (one standard deviation) on a 6 MB site and ±6 % at 64 MB, with
# sampling itself costing next to nothing above the hook (README, "Sampled mode").
DEFAULT_RATE = 256 * 1024
MIN_RATE = 1024
MAX_RATE = 1 << 34
_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_rate(text: str) -> int:
    """Bytes, with an optional K, M or G suffix (powers of 1024): 262144, 256K, 1M."""
    cleaned = text.strip().lower().removesuffix("b").removesuffix("i")
    scale = _SUFFIXES.get(cleaned[-1:], 1)
    number = cleaned[:-1] if scale > 1 else cleaned
    try:
        value = int(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes (e.g. 256K)") from None
    if not MIN_RATE <= value <= MAX_RATE:
        raise argparse.ArgumentTypeError(f"must be between {MIN_RATE} bytes and 16G")
    return value


@dataclass(frozen=True)
class ModeRequest:
    """The mode to watch in, and whether the user named it (no fallback then)."""

    mode: str
    rate: int = DEFAULT_RATE
    explicit: bool = False

    def agent_config(self) -> dict[str, object]:
        """The agent's start settings for this mode."""
        return {
            "mode": self.mode,
            "rate": self.rate,
            "strict": self.explicit and self.mode == "sampled",
        }


def mode_request(args: argparse.Namespace, default: str) -> ModeRequest:
    """The mode `--mode`/`--rate` ask for; `default` when none is named (`--rate` alone
    means sampled)."""
    mode = getattr(args, "mode", None)
    rate = getattr(args, "rate", None)
    if mode == "exact" and rate is not None:
        raise UsageError("--rate applies to sampled mode only (drop it, or use --mode sampled)")
    chosen = mode or ("sampled" if rate is not None else default)
    return ModeRequest(chosen, rate or DEFAULT_RATE, explicit=mode is not None or rate is not None)


def settle_mode(client: AgentClient, request: ModeRequest, note: Callable[[str], None]) -> str:
    """Make the agent behind `client` run in the requested mode (an agent that already
    served may run in another); returns the mode it runs in. Says why when sampled mode
    could not run; raises AttachError when the user asked for it explicitly."""
    greeting = client.greeting
    mode = str(greeting.get("mode", "exact"))
    reason = greeting.get("mode_note")
    rate = greeting.get("sample_rate")
    if not request.explicit and reason is None:
        # An agent already serving keeps the mode it has (its history with it) unless
        # the user names one; every view shows which it is.
        return mode
    wrong_rate = mode == "sampled" and rate != request.rate
    if mode != request.mode or wrong_rate:
        try:
            reply = client.request("mode", mode=request.mode, rate=request.rate)
            mode = str(reply.get("mode", mode))
        except AgentError as exc:
            reason = exc.detail
    if request.mode == "sampled" and mode != "sampled":
        reason = reason or "the agent does not offer sampled mode"
        if request.explicit:
            raise AttachError(f"{reason} (without --mode sampled memtop traces exactly)")
        note(f"{reason}; watching in exact mode (tracemalloc) instead")
    return mode
