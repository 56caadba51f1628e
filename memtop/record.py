"""`--record FILE`: every refresh a view shows, appended to a JSON-lines file."""

from __future__ import annotations

import json
from typing import TextIO

from memtop.history import History
from memtop.model import Refresh, refresh_json


class Recorder:
    """Fed once per refresh by the view (batch or TUI) with the refresh and the view's own
    history; the file belongs to the caller, who closes it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, sample: Refresh, history: History) -> None:
        """One line: the refresh as `--json` shapes it, and the history's verdict."""
        line = refresh_json(sample, history)
        line["verdict"] = history.verdict().text
        self.out.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.out.flush()
