"""`memtop export`: heap metrics of watched processes on a Prometheus/OpenMetrics endpoint.

Each refresh replaces what the endpoint serves; a scrape reads the last refresh, never
waits for the agent. Per process: RSS, USS, traced (current and peak), untraced, the
tracer's own memory, traced blocks, the agent's pause, the mode. Per site (`file:line`) of
the top N of each process: size, blocks, growth rate, suspect flag. A site that leaves the
top N is not served any more: the number of series stays bounded by processes × (N + 9).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from memtop.formatting import utf8_text
from memtop.history import History
from memtop.model import Refresh
from memtop.verdict import Verdict

PREFIX = "memtop"


class HeapCollector(Collector):
    """Serves the last refresh of every watched process (thread-safe: refreshes happen in
    memtop's loop, scrapes in the HTTP server's thread)."""

    def __init__(self, top: int) -> None:
        self.top = top
        self._lock = threading.Lock()
        self._shown: dict[int, tuple[Refresh, dict[str, float], dict[str, bool]]] = {}

    def update(self, pid: int, sample: Refresh, history: History) -> None:
        """Take process `pid`'s newest refresh (already in its `history`)."""
        top = sorted(sample.rows, key=lambda r: r.size, reverse=True)[: self.top]
        rates = {}
        for row in top:
            rate = history.growth_rate(row.key)
            if rate is not None:
                rates[row.key] = rate
        suspects = {key: True for key in history.suspects()}
        with self._lock:
            self._shown[pid] = (sample, rates, suspects)

    def forget(self, pid: int) -> None:
        """A process that ended: its series go."""
        with self._lock:
            self._shown.pop(pid, None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            shown = dict(self._shown)
        process = {
            name: GaugeMetricFamily(f"{PREFIX}_{name}", text, labels=["pid"])
            for name, text in (
                ("rss_bytes", "Resident set size of the process."),
                ("uss_bytes", "Unique set size of the process (memory only it uses)."),
                ("traced_bytes", "Memory of the live blocks the tracer sees."),
                ("traced_peak_bytes", "Peak of traced memory since tracing (or a reset) began."),
                ("untraced_bytes", "RSS not explained by traced memory, the tracer or memtop."),
                ("tracer_bytes", "The tracer's own memory (tracemalloc's tables)."),
                ("traced_blocks", "Live blocks the tracer sees."),
                ("pause_seconds", "CPU time memtop's agent took in the process last refresh."),
            )
        }
        mode = GaugeMetricFamily(
            f"{PREFIX}_mode", "How the process is traced (1 for its mode).", labels=["pid", "mode"]
        )
        site_labels = ["pid", "site"]
        sites = {
            "site_bytes": GaugeMetricFamily(
                f"{PREFIX}_site_bytes",
                "Memory held by blocks allocated at a line.",
                labels=site_labels,
            ),
            "site_blocks": GaugeMetricFamily(
                f"{PREFIX}_site_blocks",
                "Live blocks allocated at a line.",
                labels=site_labels,
            ),
            "site_growth": GaugeMetricFamily(
                f"{PREFIX}_site_growth_bytes_per_minute",
                "Growth of a line's memory over its recent refreshes.",
                labels=site_labels,
            ),
            "site_suspect": GaugeMetricFamily(
                f"{PREFIX}_site_suspect",
                "1 when the line grew steadily (a likely leak), else 0.",
                labels=site_labels,
            ),
        }
        for pid, (sample, rates, suspects) in sorted(shown.items()):
            label = str(pid)
            values = {
                "rss_bytes": sample.rss,
                "uss_bytes": sample.uss,
                "traced_bytes": sample.traced_current,
                "traced_peak_bytes": sample.traced_peak,
                "untraced_bytes": sample.untraced,
                "tracer_bytes": sample.tracemalloc_memory,
                "traced_blocks": sample.traced_blocks,
                "pause_seconds": sample.work_ms / 1000.0,
            }
            for name, value in values.items():
                if value is not None:
                    process[name].add_metric([label], float(value))
            mode.add_metric([label, sample.mode], 1.0)
            for row in sorted(sample.rows, key=lambda r: r.size, reverse=True)[: self.top]:
                labels = [label, utf8_text(row.key)]  # the endpoint speaks UTF-8
                sites["site_bytes"].add_metric(labels, float(row.size))
                sites["site_blocks"].add_metric(labels, float(row.count))
                if row.key in rates:
                    sites["site_growth"].add_metric(labels, float(rates[row.key]))
                sites["site_suspect"].add_metric(labels, 1.0 if row.key in suspects else 0.0)
        yield from process.values()
        yield mode
        yield from sites.values()


class ProcessMetrics:
    """The sink (memtop.sink) of one watched process: each refresh replaces what /metrics
    serves of it."""

    def __init__(self, collector: HeapCollector, pid: int) -> None:
        self.collector = collector
        self.pid = pid

    def write(self, refresh: Refresh, history: History, verdict: Verdict) -> None:
        self.collector.update(self.pid, refresh, history)
