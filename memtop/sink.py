"""Where refreshes go: every output of a view (the text view, JSON lines, `--record`,
metrics) is a Sink, fed once per refresh by the batch loop or the App."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from memtop.history import History
from memtop.model import Refresh
from memtop.verdict import Verdict


class Sink(Protocol):
    """One output of a view."""

    def write(self, refresh: Refresh, history: History, verdict: Verdict) -> None:
        """Take one refresh, with the view's one history (`refresh` already added) and its
        verdict."""


def feed(sinks: Sequence[Sink], refresh: Refresh, history: History) -> None:
    """Give `refresh` (already in `history`) to every sink, with the history's verdict."""
    if not sinks:
        return
    verdict = history.verdict()
    for sink in sinks:
        sink.write(refresh, history, verdict)
