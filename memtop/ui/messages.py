"""Messages from worker threads to the UI: small and immutable. Attributes down, messages up."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from textual.message import Message

from memtop.ending import Ending
from memtop.errors import AgentBusy, MemtopError
from memtop.history import HistorySeed
from memtop.leaks import Origins, ReferrerChain, TypesTable
from memtop.model import Refresh
from memtop.source import TracebackEntry

T = TypeVar("T")


def attempt(call: Callable[[], T]) -> tuple[T | None, str | None]:
    """Run a request in a worker thread: (result, None), or (None, what went wrong in
    words). Never a raw traceback on screen."""
    try:
        return call(), None
    except MemtopError as exc:
        return None, exc.message
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def attempt_or_wait(call: Callable[[], T]) -> tuple[T | None, str | None, float | None]:
    """attempt(), plus the seconds after which an agent whose time budget is spent may be
    asked again (None for any other outcome)."""
    busy: list[float] = []

    def watched() -> T:
        try:
            return call()
        except AgentBusy as exc:
            busy.append(exc.retry_in)
            raise

    result, error = attempt(watched)
    return result, error, busy[0] if busy else None


class RefreshReady(Message):
    """A refresh arrived (the first one with the history the agent kept, if any)."""

    def __init__(self, sample: Refresh, seed: HistorySeed | None = None) -> None:
        super().__init__()
        self.sample = sample
        self.seed = seed


class RefreshFailed(Message):
    """The agent answered a refresh with an error; the next refresh tries again (after
    `retry_in` seconds when the agent said when)."""

    def __init__(self, error: str, retry_in: float | None = None) -> None:
        super().__init__()
        self.error = error
        self.retry_in = retry_in


class ConnectionDropped(Message):
    """The agent's connection closed while the target still runs: reconnecting."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class Reconnected(Message):
    """A new connection to the same agent (it forgot this viewer's baseline)."""


class AgentUnusable(Message):
    """The agent sent something memtop cannot use: the view ends with `error`."""

    def __init__(self, error: str, exit_code: int) -> None:
        super().__init__()
        self.error = error
        self.exit_code = exit_code


class TargetEnded(Message):
    """The target process is gone."""

    def __init__(self, status: Ending) -> None:
        super().__init__()
        self.status = status


class CommandDone(Message):
    """A one-off command (baseline, reset peak, save a snapshot) finished: `result` says
    what it did, `error` why it failed."""

    def __init__(self, action: str, error: str | None = None, result: str | None = None) -> None:
        super().__init__()
        self.action = action
        self.error = error
        self.result = result


class TracebacksReady(Message):
    """The heaviest tracebacks of one row."""

    def __init__(self, entries: list[TracebackEntry] | None, error: str | None = None) -> None:
        super().__init__()
        self.entries = entries
        self.error = error


class TypesReady(Message):
    """A walk of the gc's objects by type (`mark`: it also marked the baseline)."""

    def __init__(
        self,
        table: TypesTable | None,
        error: str | None,
        mark: bool,
        retry_in: float | None = None,
    ) -> None:
        super().__init__()
        self.table = table
        self.error = error
        self.mark = mark
        self.retry_in = retry_in


class OriginsReady(Message):
    """Where a sample of one type's instances was allocated."""

    def __init__(self, origins: Origins | None, error: str | None = None) -> None:
        super().__init__()
        self.origins = origins
        self.error = error


class ChainReady(Message):
    """What keeps a sample object alive."""

    def __init__(
        self,
        chain: ReferrerChain | None,
        error: str | None = None,
        retry_in: float | None = None,
    ) -> None:
        super().__init__()
        self.chain = chain
        self.error = error
        self.retry_in = retry_in
