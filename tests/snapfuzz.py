"""Mutated snapshot files, and a driver that opens each the way `memtop view` and `memtop
convert` do. Run as a program (`python snapfuzz.py DIR`) it exercises every file in DIR in
one process and prints, as JSON, what did not end in a clean result or a MemtopError, the
slowest file's time and the process's peak RSS."""

from __future__ import annotations

import gzip
import io
import json
import random
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HOSTILE_VALUES: list[Any] = [
    -1,
    0,
    2**31,
    2**48 + 1,
    2**63,
    10**30,
    1.5,
    -0.0,
    1e308,
    "NaN!",
    "",
    "x" * 5000,
    "\x1b]52;c;cHduZWQ=\x07",
    None,
    True,
    False,
    [],
    {},
    [[[[[]]]]],
    {"a": 1},
    [0, 0, 0],
    [["a.py", 1]],
]
# Values of the right type at the edges of what is allowed, and text that attacks a
# terminal: such files load, and every view of them must stay inert.
EXTREME_INTS = [0, 1, 2**31, 2**48]
EXTREME_TEXTS = [
    "",
    "\x1b]0;title\x07\x1b[2J",
    "\x9b2J\u202e[bold]x[/bold]",
    "y" * 4096,
    "\U0001f600" * 50,
    "a\nb\rc\td",
]
RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1e999", "9" * 400, "[" * 50, '"\\ud800"']


def seed_lines() -> list[str]:
    """A small, valid memtop file (every meta field, every table) as JSON lines."""
    frames = [[f"/srv/app/mod{i}.py", 10 + i] for i in range(12)]
    tracebacks = [[i % 12, (i + 1) % 12, (i + 5) % 12] for i in range(10)]
    entries = [[i % 10, 32 + i, 1 + i % 4] for i in range(30)]
    sources = [[i, f"x = make({i})"] for i in range(6)]
    meta = {
        "pid": 4242,
        "python": "3.12.1",
        "cmdline": "python app.py --serve",
        "rss": 50_000_000,
        "uss": 40_000_000,
        "tracing_owner": "agent",
        "memtop": "0.1.0",
        "time": 1_700_000_000.5,
        "nframe": 3,
        "traced_current": 12_345,
        "traced_peak": 23_456,
        "tracemalloc_memory": 4096,
        "traced_size": 12_345,
        "traced_blocks": 75,
        "cost_ms": 1.25,
    }
    counts = {"frames": 12, "tracebacks": 10, "entries": 30, "sources": 6}
    header = {"format": "memtop-snapshot", "version": 1, "meta": meta, "counts": counts}
    return [
        json.dumps(header),
        json.dumps({"frames": frames[:7]}),
        json.dumps({"frames": frames[7:]}),
        json.dumps({"tracebacks": tracebacks}),
        json.dumps({"entries": entries[:20]}),
        json.dumps({"entries": entries[20:]}),
        json.dumps({"sources": sources}),
    ]


def _paths(value: Any, here: tuple = ()) -> list[tuple]:
    found = [here]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*here, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*here, index))
    return found


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    value[path[0]] = _replace(value[path[0]], path[1:], new)
    return value


def mutate(rng: random.Random) -> bytes:
    """One mutated file (gzip bytes): structure-aware edits, text edits, or damage to the
    compressed stream."""
    lines = seed_lines()
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.randrange(12)
        index = rng.randrange(len(lines))
        tree = _parsed(lines[index if kind != 8 else 0])
        if tree is None and kind in (0, 1, 2, 3, 4, 8, 9, 10, 11):
            kind = 7  # an earlier edit broke this line's JSON: damage it further
        if kind <= 3:  # a value anywhere becomes something hostile
            path = rng.choice(_paths(tree))
            lines[index] = json.dumps(_replace(tree, path, rng.choice(HOSTILE_VALUES)))
        elif kind == 4:  # a key disappears
            dicts = [p for p in _paths(tree) if p and isinstance(_get(tree, p[:-1]), dict)]
            if dicts:
                path = rng.choice(dicts)
                del _get(tree, path[:-1])[path[-1]]
                lines[index] = json.dumps(tree)
        elif kind == 5:  # lines dropped, repeated or swapped
            other = rng.randrange(len(lines))
            choice = rng.randrange(3)
            if choice == 0:
                del lines[index]
            elif choice == 1:
                lines.insert(other, lines[index])
            else:
                lines[index], lines[other] = lines[other], lines[index]
        elif kind == 6:  # a raw token JSON would not write
            text = lines[index]
            at = rng.randrange(len(text))
            lines[index] = text[:at] + rng.choice(RAW_TOKENS) + text[at + 1 :]
        elif kind == 7:  # bytes flipped in the text
            flipped = bytearray(lines[index].encode())
            for _ in range(rng.randint(1, 4)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            lines[index] = flipped.decode("utf-8", "replace")
        elif kind >= 9:  # a value keeps its type but goes to an edge (the file loads)
            paths = [p for p in _paths(tree) if isinstance(_get(tree, p), (int, str))]
            paths = [p for p in paths if not isinstance(_get(tree, p), bool) and p]
            if paths:
                path = rng.choice(paths)
                old = _get(tree, path)
                new = rng.choice(EXTREME_TEXTS if isinstance(old, str) else EXTREME_INTS)
                lines[index] = json.dumps(_replace(tree, path, new))
        else:  # a declared count far from the content
            if isinstance(tree, dict) and isinstance(tree.get("counts"), dict):
                name = rng.choice(["frames", "tracebacks", "entries", "sources"])
                tree["counts"][name] = rng.choice([0, 1, 10**6, 49_999_999, 50_000_001])
                lines[0] = json.dumps(tree)
    data = gzip.compress(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
    damage = rng.randrange(10)
    if damage == 0:
        data = data[: rng.randrange(len(data))]
    elif damage == 1:
        flipped = bytearray(data)
        flipped[rng.randrange(10, len(flipped))] ^= 1 << rng.randrange(8)
        data = bytes(flipped)
    return data


def _parsed(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _get(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def exercise(path: str, out_dir: str) -> str | None:
    """Open `path` as `memtop view -b`, `--json` and `memtop convert` (to each format) do;
    None when every one ended cleanly or with a MemtopError, else the traceback."""
    from memtop import snapfile
    from memtop.batch import TextView, run_batch
    from memtop.errors import MemtopError
    from memtop.filesource import FileSource
    from memtop.json_lines import JsonLines
    from memtop.model import Query
    from memtop.snapfile import load

    try:
        try:
            snapshot = load(path)
            source = FileSource(snapshot, path)
            for as_json in (False, True):
                out = io.StringIO()
                run_batch(
                    source,
                    Query(),
                    interval=1.0,
                    iterations=1,
                    sinks=[
                        JsonLines(out, source.unknown_fields) if as_json else TextView(out, source)
                    ],
                    err=io.StringIO(),
                )
                raw = [c for c in "\x1b\x07\x9b\r\u202e" if c in out.getvalue()]
                if raw:
                    return f"the {'JSON' if as_json else 'text'} view wrote {raw} raw"
        except MemtopError:
            pass
        for name in ("out.memtop", "out.pickle", "out.pb.gz"):
            try:
                snapfile.convert(path, f"{out_dir}/{name}", None, False)
            except MemtopError:
                pass
    except Exception:  # the finding: anything but a MemtopError
        return traceback.format_exc()
    return None


def main(directory: str) -> None:
    failures = {}
    slowest = (0.0, "")
    out = Path(directory) / "converted"
    out.mkdir(exist_ok=True)
    for path in sorted(Path(directory).glob("f*.memtop")):
        started = time.monotonic()
        failure = exercise(str(path), str(out))
        took = time.monotonic() - started
        slowest = max(slowest, (took, path.name))
        if failure is not None:
            failures[path.name] = failure
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"failures": failures, "slowest": slowest, "peak_rss": peak}))


if __name__ == "__main__":
    main(sys.argv[1])
