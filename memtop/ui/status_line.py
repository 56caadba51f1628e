"""One line saying what state the viewer is in: every state in words, not only colour."""

from __future__ import annotations

from rich.text import Text

from memtop.formatting import clean_text
from memtop.ui.text_lines import TextLines
from memtop.ui.texts import clock_time, fit_parts
from memtop.ui.view_state import ViewState

LEVELS = ("ended", "lost", "error", "paused", "normal")


def status_parts(
    state: ViewState, waiting: bool, note: Text | None = None, hint: Text | None = None
) -> tuple[str, list[tuple[Text, int]]]:
    """(level, parts by priority) for a state; `waiting` before the first refresh; `note`
    about the selected row (a leak suspect's growth); `hint` about the table as a whole
    (compiled code charging its memory to one line)."""
    parts: list[tuple[Text, int]] = []
    level = "normal"
    if state.offline:
        parts.append((Text("■ saved snapshot: the table does not change, live-only keys off"), 10))
    elif state.connection == "ended":
        level = "ended"
        parts.append((Text(f"■ target {state.ended}: last refresh kept on screen"), 10))
        parts.append((Text("q quits"), 9))
    elif state.connection == "lost":
        level = "lost"
        attempt = f" (attempt {state.attempts})" if state.attempts else ""
        parts.append((Text(f"⚠ agent connection lost: reconnecting{attempt}…"), 10))
        if state.error:
            parts.append((Text(clean_text(state.error)), 3))
    elif state.error:
        level = "error"
        parts.append((Text(f"⚠ {clean_text(state.error)}"), 10))
    elif waiting:
        parts.append((Text("waiting for the first refresh…"), 10))
    if note is not None:
        parts.append((note, 9))
    if hint is not None:
        parts.append((hint, 5))
    if state.paused:
        level = "paused" if level == "normal" else level
        parts.append((Text("❚❚ PAUSED: table frozen, memory live · space resumes"), 8))
    if state.baseline_time is not None:
        parts.append((Text(f"Δ since baseline {clock_time(state.baseline_time)} · B clears"), 7))
    if state.patterns:
        shown = clean_text(" ".join(state.patterns))
        parts.append((Text(f"files {shown} · / changes"), 6))
    if state.hide_internal:
        parts.append((Text("import/memtop frames hidden · x shows"), 1))
    else:
        parts.append((Text("import/memtop frames shown · x hides"), 1))
    return level, parts


class StatusLine(TextLines):
    """Paused, baseline, filters, lost connection, target exited, agent errors."""

    DEFAULT_CSS = "StatusLine { height: 1; }"

    def __init__(self, state: ViewState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.waiting = True
        self.note: Text | None = None
        self.hint: Text | None = None

    def show(
        self, state: ViewState, waiting: bool, note: Text | None = None, hint: Text | None = None
    ) -> None:
        """Redraw if what it says changed."""
        shown = (self.state, self.waiting, self.note, self.hint)
        if (state, waiting, note, hint) == shown and self._texts:
            return
        self.state, self.waiting, self.note, self.hint = state, waiting, note, hint
        level, _ = status_parts(state, waiting, note, hint)
        for name in LEVELS:
            self.set_class(name == level, f"-{name}")
        self.update_lines()

    def lines(self, width: int) -> list[Text]:
        _, parts = status_parts(self.state, self.waiting, self.note, self.hint)
        return [fit_parts(parts, width, separator="  ·  ")]
