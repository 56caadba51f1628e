"""Every output is a sink fed once per refresh with the refresh, the view's one history
and its verdict: the batch loop feeds the text or JSON view, --record and any other sink
alike, and what the JSON view writes is built from exactly what it was fed."""

from __future__ import annotations

import io
import json

from ui_fakes import FakeSource

from memtop.batch import TextView, run_batch
from memtop.history import History
from memtop.json_lines import JsonLines, refresh_json
from memtop.model import Query, Refresh
from memtop.record import Recorder
from memtop.verdict import Verdict


class Kept:
    """A sink that keeps what it was fed."""

    def __init__(self) -> None:
        self.fed: list[tuple[Refresh, History, Verdict, dict]] = []

    def write(self, refresh: Refresh, history: History, verdict: Verdict) -> None:
        # The verdict and JSON line as they were at this refresh (the history moves on).
        self.fed.append((refresh, history, verdict, refresh_json(refresh, history)))


def test_batch_loop_feeds_every_sink_once_per_refresh_with_one_history() -> None:
    kept, out, record = Kept(), io.StringIO(), io.StringIO()
    code = run_batch(
        FakeSource(),
        Query(),
        interval=0.0,
        iterations=3,
        sinks=[JsonLines(out), Recorder(record), kept],
        err=io.StringIO(),
        sleep=lambda _: None,
    )
    assert code == 0
    assert len(kept.fed) == 3
    assert len({id(history) for _, history, _, _ in kept.fed}) == 1
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    recorded = [json.loads(line) for line in record.getvalue().splitlines()]
    assert len(lines) == len(recorded) == 3
    for line, saved, (refresh, _, verdict, fed_json) in zip(lines, recorded, kept.fed, strict=True):
        assert line["verdict"] == saved["verdict"] == verdict.text
        assert line["time"] == saved["time"] == refresh.time
        assert line["rows"] == saved["rows"] == fed_json["rows"]


def test_text_view_is_a_sink_of_the_batch_loop() -> None:
    out = io.StringIO()
    source = FakeSource()
    run_batch(
        source,
        Query(),
        interval=0.0,
        iterations=2,
        sinks=[TextView(out, source, width=120)],
        err=io.StringIO(),
        sleep=lambda _: None,
    )
    headers = [line for line in out.getvalue().splitlines() if line.startswith("memtop ")]
    assert len(headers) == 2 and all("pid 4242" in line for line in headers)
