"""What the viewer is set to and what it knows about the connection: one frozen value.

The App replaces it on every key press or event and hands it down to the widgets. Pure:
the transitions are tested without Textual.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from memtop import model
from memtop.ending import Ending
from memtop.model import CUMULATIVE_KEYS, INTERNAL_PATTERNS, SORT_KEYS, Query

# The s cycle: the agent's sort orders, then suspects (the agent's growth order, steady
# growers moved to the top by the viewer from its history).
SORTS = (*SORT_KEYS, "suspects")
INTERVALS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
# The agent's limits per list (include, exclude); a word is sent as *word*.
MAX_PATTERNS = model.MAX_PATTERNS
MAX_PATTERN_CHARS = model.MAX_PATTERN_CHARS - 2


class BadFilter(ValueError):
    """A filter the agent would refuse; the message says why."""


def parse_filter(text: str) -> tuple[str, ...]:
    """Patterns from what the user typed: space or comma separated fnmatch patterns; a
    word without wildcards matches anywhere in the path."""
    words = [w for w in text.replace(",", " ").split() if w]
    if len(words) > MAX_PATTERNS:
        raise BadFilter(f"at most {MAX_PATTERNS} patterns")
    if any(len(w) > MAX_PATTERN_CHARS for w in words):
        raise BadFilter(f"a pattern is longer than {MAX_PATTERN_CHARS} characters")
    return tuple(w if any(c in w for c in "*?[") else f"*{w}*" for w in words)


@dataclass(frozen=True)
class ViewState:
    """The viewer's settings and the connection's state."""

    group_by: str = "lineno"
    cumulative: bool = False
    limit: int = 50
    sort: str = "size"
    interval: float = 1.0
    patterns: tuple[str, ...] = ()
    hide_internal: bool = True
    paused: bool = False
    process: int | None = None  # watching a group: the one process shown, or None: merged
    baseline_time: float | None = None
    connection: str = "live"  # live | lost | ended
    ended: Ending | None = None  # how the target ended
    error: str | None = None  # the agent's last error, until a refresh succeeds
    attempts: int = 0  # reconnect attempts since the connection dropped
    offline: bool = False  # a saved snapshot: nothing changes, live-only keys are off

    @classmethod
    def from_query(cls, query: Query, interval: float) -> ViewState:
        return cls(
            group_by=query.group_by,
            cumulative=query.cumulative,
            limit=query.limit,
            sort=query.sort,
            interval=interval,
            patterns=query.include,
        )

    @property
    def query(self) -> Query:
        """What to ask the agent for."""
        return Query(
            group_by=self.group_by,
            cumulative=self.cumulative,
            limit=self.limit,
            sort="growth" if self.sort == "suspects" else self.sort,
            compare="baseline" if self.baseline_time is not None else "previous",
            include=self.patterns,
            exclude=INTERNAL_PATTERNS if self.hide_internal else (),
        )

    @property
    def live(self) -> bool:
        return self.connection == "live"

    def replace(self, **changes: object) -> ViewState:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def grouped(self, group_by: str) -> ViewState:
        """Group by another key; cumulative applies to some groupings only."""
        return self.replace(
            group_by=group_by, cumulative=self.cumulative and group_by in CUMULATIVE_KEYS
        )

    @property
    def suspects_first(self) -> bool:
        """Suspect rows on top, ordered by the viewer (the agent sorts by growth)."""
        return self.sort == "suspects"

    def next_sort(self) -> ViewState:
        return self.replace(sort=SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)])

    def stepped_interval(self, step: int) -> ViewState:
        """The next longer (step 1) or shorter (step -1) refresh interval."""
        if step > 0:
            longer = [i for i in INTERVALS if i > self.interval]
            return self.replace(interval=longer[0] if longer else self.interval)
        shorter = [i for i in INTERVALS if i < self.interval]
        return self.replace(interval=shorter[-1] if shorter else self.interval)
