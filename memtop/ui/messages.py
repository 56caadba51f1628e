"""Messages from worker threads to the UI: small and immutable. Attributes down, messages up."""

from __future__ import annotations

from textual.message import Message

from memtop.model import Sample
from memtop.source import TracebackEntry


class SampleReady(Message):
    """A refresh arrived."""

    def __init__(self, sample: Sample) -> None:
        super().__init__()
        self.sample = sample


class RefreshFailed(Message):
    """The agent answered a refresh with an error; the next refresh tries again."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class ConnectionDropped(Message):
    """The agent's connection closed while the target still runs: reconnecting."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class Reconnected(Message):
    """A new connection to the same agent (it forgot this viewer's baseline)."""


class TargetEnded(Message):
    """The target process is gone."""

    def __init__(self, status: str) -> None:
        super().__init__()
        self.status = status


class CommandDone(Message):
    """A one-off agent command (baseline, reset peak) finished; `error` when it failed."""

    def __init__(self, action: str, error: str | None = None) -> None:
        super().__init__()
        self.action = action
        self.error = error


class TracebacksReady(Message):
    """The heaviest tracebacks of one row."""

    def __init__(self, entries: list[TracebackEntry] | None, error: str | None = None) -> None:
        super().__init__()
        self.entries = entries
        self.error = error
