"""`--record FILE`: every refresh a view shows, appended to a JSON-lines file."""

from __future__ import annotations

import json
from typing import TextIO

from memtop.history import History
from memtop.json_lines import refresh_json
from memtop.model import Refresh
from memtop.verdict import Verdict


class Recorder:
    """A sink (memtop.sink) of the batch view or the TUI; the file belongs to the caller,
    who closes it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, refresh: Refresh, history: History, verdict: Verdict) -> None:
        """One line: the refresh as `--json` shapes it, and the view's verdict."""
        line = refresh_json(refresh, history)
        line["verdict"] = verdict.text
        self.out.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.out.flush()
