"""`--json`: one JSON object per refresh (schema in DESIGN.md §2; fields are only added).

The line is built here, from the pure model's Refresh, the view's history and verdict;
`--record` writes the same fields (memtop.record)."""

from __future__ import annotations

import json
from typing import Any, TextIO

from memtop.compiled import compiled_hint
from memtop.history import History
from memtop.model import Refresh, Row
from memtop.verdict import Verdict


def tracing_json(sample: Refresh) -> dict[str, Any]:
    """The tracing session's fields of a `--json` line."""
    tracing = sample.tracing
    return {
        "tracing_since": tracing.since if tracing is not None else None,
        "tracing_session": tracing.session if tracing is not None else None,
        "sees_only_new": tracing.sees_only_new if tracing is not None else False,
        "baseline_restarted": sample.baseline_restarted,
    }


def refresh_json(sample: Refresh, history: History | None = None) -> dict[str, Any]:
    """The `--json` line of one refresh (schema in DESIGN.md §2; fields are only added).

    With the `history` of the refreshes so far, rows carry `growth_rate` (bytes/min over
    their recent tables, null while too few) and `suspect` (steady growth: a likely leak)."""
    suspects = history.suspects() if history is not None else {}
    return {
        "pid": sample.pid,
        "time": sample.time,
        "mode": sample.mode,
        "sample_rate": sample.sample_rate if sample.sampled else None,
        "sampler_gaps": sample.sampler_gaps,
        "group_by": sample.query.group_by,
        "cumulative": sample.query.cumulative,
        "rss": sample.rss,
        "uss": sample.uss,
        "traced_current": sample.traced_current,
        "traced_peak": sample.traced_peak,
        "tracemalloc_memory": sample.tracemalloc_memory,
        "traced_blocks": sample.traced_blocks,
        "nframe": sample.nframe,
        "pause_ms": sample.work_ms,  # its JSON name since the first release (DESIGN.md §2)
        "untraced": sample.untraced,
        "memtop_traced": sample.memtop_traced,
        "memtop_residue": sample.memtop_residue,
        "read_peak": sample.read_peak,
        "total_rows": sample.total_rows,
        **tracing_json(sample),
        "table": {
            "age": round(sample.table.age, 3),
            "fresh": sample.table.fresh,
            "pause_ms": sample.table.pause_ms,
            "next_in": sample.table.next_in,
            "budget": sample.table.budget,
        },
        "rows": [
            {
                "key": row.key,
                "filename": row.filename,
                "lineno": row.lineno,
                "size": row.size,
                "count": row.count,
                "size_error": row.size_error,
                "count_error": row.count_error,
                "size_diff": row.size_diff,
                "count_diff": row.count_diff,
                "source": row.source,
                "traceback": [{"filename": f.filename, "lineno": f.lineno} for f in row.traceback],
                "growth_rate": history.growth_rate(row.key) if history is not None else None,
                "suspect": row.key in suspects,
                "suspect_confidence": suspects[row.key].confidence if row.key in suspects else 0.0,
                **_contributions(row),
            }
            for row in sample.rows
        ],
        **({"processes": [p.as_json() for p in sample.processes]} if sample.processes else {}),
    }


def _contributions(row: Row) -> dict[str, Any]:
    """A group's row: what each process holds of it (DESIGN.md §7 "pids")."""
    if not row.procs:
        return {}
    return {"pids": [{"pid": pid, "size": size, "count": n} for pid, size, n in row.procs]}


def render_json(
    sample: Refresh,
    verdict: Verdict,
    history: History | None = None,
    unknown: tuple[str, ...] = (),
) -> str:
    """One `--json` line; the fields in `unknown` (a saved snapshot does not record them)
    are null."""
    data = refresh_json(sample, history)
    for name in unknown:
        if name in data:
            data[name] = None
    if "time" in unknown:
        data["table"]["age"] = None
    data["verdict"] = verdict.text
    data["verdict_kind"] = verdict.kind
    # Most memory at one line while compiled code is loaded (see memtop.compiled), or null.
    hint = compiled_hint(sample, sample.extension_modules)
    data["compiled_code"] = hint.as_json() if hint is not None else None
    # Bytes per minute of each part of the account the verdict read (see memtop.verdict).
    data["rates"] = {
        "rss": round(verdict.rss.per_minute),
        "traced": round(verdict.traced.per_minute),
        "tracer": round(verdict.tracer.per_minute),
        "untraced": round(verdict.untraced.per_minute),
    }
    return json.dumps(data, separators=(",", ":"))


class JsonLines:
    """The `--json` view: one line per refresh on `out`. `unknown`: the fields a saved
    snapshot does not record, written as null."""

    def __init__(self, out: TextIO, unknown: tuple[str, ...] = ()) -> None:
        self.out = out
        self.unknown = unknown

    def write(self, refresh: Refresh, history: History, verdict: Verdict) -> None:
        self.out.write(render_json(refresh, verdict, history, self.unknown) + "\n")
        self.out.flush()
