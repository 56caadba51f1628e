"""What the viewer accepts from an agent. Every frame the client reads is checked here,
once, before any other part of memtop looks at it: a field of the wrong type, a missing
one, NaN, a number beyond any real heap, or garbage where an object belongs is a BadReply
(the process behind the socket may run another memtop version, or not be memtop at all).

Fields are only added over time (DESIGN.md §2), so fields not named here pass unchecked
and unread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from memtop.errors import BadReply
from memtop.terminal import clean_text

BIG = 2**63  # beyond any heap, any count, any id
MAX_TEXT = 1 << 20
MAX_ITEMS = 1_000_000
MAX_PARTS = 100_000


class _Mismatch(Exception):
    def __init__(self, path: str, value: Any, expected: str) -> None:
        super().__init__(path)
        self.path = path
        self.value = value
        self.expected = expected


class Spec:
    """A rule one value must follow."""

    expected = "a value"

    def check(self, value: Any, path: str) -> None:
        raise NotImplementedError


class Int(Spec):
    def __init__(self, low: int = -BIG, high: int = BIG) -> None:
        self.low, self.high = low, high
        self.expected = f"a whole number from {_bound(low)} to {_bound(high)}"

    def check(self, value: Any, path: str) -> None:
        if type(value) is not int or not self.low <= value <= self.high:
            raise _Mismatch(path, value, self.expected)


def _bound(number: int) -> str:
    return {BIG: "2^63", -BIG: "-2^63"}.get(number, str(number))


class Num(Spec):
    expected = "a finite number"

    def check(self, value: Any, path: str) -> None:
        if type(value) not in (int, float) or not math.isfinite(value) or abs(value) > BIG:
            raise _Mismatch(path, value, self.expected)


class Str(Spec):
    expected = f"a string of at most {MAX_TEXT} characters"

    def check(self, value: Any, path: str) -> None:
        if type(value) is not str or len(value) > MAX_TEXT:
            raise _Mismatch(path, value, self.expected)


class Bool(Spec):
    expected = "true or false"

    def check(self, value: Any, path: str) -> None:
        if type(value) is not bool:
            raise _Mismatch(path, value, self.expected)


class Anything(Spec):
    def check(self, value: Any, path: str) -> None:
        pass


class Opt(Spec):
    """`spec`, or null."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.expected = f"{spec.expected} or null"

    def check(self, value: Any, path: str) -> None:
        if value is not None:
            self.spec.check(value, path)


class List(Spec):
    expected = "a list"

    def __init__(self, item: Spec) -> None:
        self.item = item

    def check(self, value: Any, path: str) -> None:
        if type(value) is not list or len(value) > MAX_ITEMS:
            raise _Mismatch(path, value, self.expected)
        for index, item in enumerate(value):
            self.item.check(item, f"{path}[{index}]")


class Pair(Spec):
    """A list of exactly two items: [first, second]."""

    expected = "a list of two items"

    def __init__(self, first: Spec, second: Spec) -> None:
        self.first, self.second = first, second

    def check(self, value: Any, path: str) -> None:
        if type(value) is not list or len(value) != 2:
            raise _Mismatch(path, value, self.expected)
        self.first.check(value[0], f"{path}[0]")
        self.second.check(value[1], f"{path}[1]")


class Obj(Spec):
    """An object with `required` fields (and `optional` ones, checked when present)."""

    expected = "an object"

    def __init__(
        self, required: Mapping[str, Spec], optional: Mapping[str, Spec] | None = None
    ) -> None:
        self.required = dict(required)
        self.optional = dict(optional or {})

    def check(self, value: Any, path: str) -> None:
        if type(value) is not dict:
            raise _Mismatch(path, value, self.expected)
        for name, spec in self.required.items():
            if name not in value:
                raise _Mismatch(f"{path}.{name}", _MISSING, spec.expected)
            spec.check(value[name], f"{path}.{name}")
        for name, spec in self.optional.items():
            if name in value:
                spec.check(value[name], f"{path}.{name}")


_MISSING = object()
COUNT = Int(0)
LINENO = Int(0, 2**31)
TEXT = Str()
NUM = Num()
BOOL = Bool()
FRAME = Obj({"filename": TEXT, "lineno": LINENO}, {"source": TEXT})
ERROR = Obj({}, {"code": TEXT, "message": TEXT})

GREETING = Obj(
    {"status": TEXT},
    {
        "error": ERROR,
        "pid": Int(),
        "py": TEXT,
        "nframe": Int(0, 100_000),
        "tracing_owner": TEXT,
        "origin": TEXT,
    },
)
HANDSHAKE = Obj({"ok": BOOL}, {"error": ERROR})
ENVELOPE = Obj({"ok": BOOL}, {"id": Opt(Int()), "error": ERROR})

TABLE = Obj(
    {
        "id": Int(),
        "time": NUM,
        "age": NUM,
        "fresh": BOOL,
        "pause_ms": NUM,
        "next_in": NUM,
        "budget": NUM,
    },
    {"work_ms": NUM, "traced_blocks": Opt(COUNT), "read_peak": COUNT},
)
TOTALS = Obj(
    {
        "traced_current": COUNT,
        "traced_peak": COUNT,
        "tracemalloc_memory": COUNT,
        "nframe": Int(0, 100_000),
    },
    {"memtop_traced": COUNT, "memtop_residue": COUNT},
)
ROW = Obj(
    {"filename": TEXT, "size": COUNT, "count": COUNT, "size_diff": Int(), "count_diff": Int()},
    {"lineno": Opt(LINENO), "source": TEXT, "traceback": List(FRAME)},
)
# The items of a snapshot's tables are checked where they are assembled (memtop.snapfile).
SNAPSHOT_TABLES = {
    name: List(Anything()) for name in ("frames", "tracebacks", "entries", "sources")
}
SNAPSHOT_HEADER = Obj({"counts": Obj({})})
SNAPSHOT_PART = Obj({"snapshot": Int(), "parts": Int(1, MAX_PARTS)}, SNAPSHOT_TABLES)
SNAPSHOT_FIRST = Obj(
    {"snapshot": Int(), "parts": Int(1, MAX_PARTS), "header": SNAPSHOT_HEADER}, SNAPSHOT_TABLES
)

RESULTS: dict[str, Spec] = {
    "top": Obj(
        {"sample": TABLE, "totals": TOTALS, "total_rows": COUNT, "rows": List(ROW)},
        {"baseline_time": Opt(NUM)},
    ),
    "tracebacks": Obj(
        {"tracebacks": List(Obj({"size": COUNT, "count": COUNT, "frames": List(FRAME)}))}
    ),
    "types": Obj(
        {
            "rows": List(
                Obj(
                    {
                        "type": TEXT,
                        "count": COUNT,
                        "size": COUNT,
                        "count_diff": Int(),
                        "size_diff": Int(),
                    }
                )
            ),
            "objects": COUNT,
            "total_types": COUNT,
            "cost_ms": NUM,
        },
        {"since": Opt(NUM), "baseline": Opt(NUM)},
    ),
    "origins": Obj(
        {
            "type": TEXT,
            "sampled": COUNT,
            "untraced": COUNT,
            "sites": List(Obj({"count": COUNT, "frames": List(FRAME)})),
        },
        {"note": TEXT},
    ),
    "referrers": Obj(
        {
            "found": BOOL,
            "what": TEXT,
            "steps": List(Obj({"type": TEXT, "edge": TEXT, "root": TEXT})),
            "cut": BOOL,
        },
        {"allocated_at": List(Pair(TEXT, LINENO)), "note": TEXT, "reason": TEXT},
    ),
    # Present only with a session; memtop.history says what a missing part means.
    "history": Obj(
        {},
        {
            "session": Opt(TEXT),
            "since": Opt(NUM),
            "point_fields": List(TEXT),
            "points": List(List(Opt(NUM))),
            "keys": List(
                Obj({"filename": TEXT}, {"lineno": Opt(LINENO), "traceback": List(FRAME)})
            ),
            "tables": List(Obj({"id": Int(), "time": NUM, "rows": List(Pair(COUNT, Int()))})),
        },
    ),
    "ping": Obj({"uptime": NUM}),
    "detach": Obj({}, {"other_viewers": COUNT, "stays": BOOL, "tracing_owner": TEXT}),
    "snapshot": SNAPSHOT_PART,
}


def check_greeting(greeting: dict[str, Any]) -> dict[str, Any]:
    """The agent's first frame."""
    return _checked(GREETING, greeting, "its greeting")


def check_handshake(reply: dict[str, Any]) -> dict[str, Any]:
    """The answer to the viewer's token."""
    return _checked(HANDSHAKE, reply, "the answer to memtop's session token")


def check_reply(cmd: str, args: Mapping[str, Any], request_id: int, reply: dict[str, Any]) -> Any:
    """A reply to request `request_id` (`cmd` with `args`); returns it."""
    what = f"its reply to `{cmd}`"
    _checked(ENVELOPE, reply, what)
    if reply.get("id") != request_id:
        raise BadReply(_words(what, f"answers request {_shown(reply.get('id'))}, not {request_id}"))
    if reply["ok"]:
        spec = RESULTS.get(cmd, Obj({}))
        if cmd == "snapshot" and args.get("part") == 0:
            spec = SNAPSHOT_FIRST
        _checked(spec, reply.get("result"), what, "result")
    return reply


def bad_frame(problem: str) -> str:
    """What to say about a frame that is not a protocol message at all."""
    return _words("a frame", f"{problem}")


def _checked(spec: Spec, value: Any, what: str, root: str = "") -> Any:
    try:
        spec.check(value, root)
    except _Mismatch as exc:
        raise BadReply(_mismatch_words(what, exc)) from None
    return value


def _mismatch_words(what: str, exc: _Mismatch) -> str:
    where = exc.path.lstrip(".") or "the frame"
    if exc.value is _MISSING:
        return _words(what, f"has no {where} ({exc.expected} belongs there)")
    return _words(what, f"has {where} = {_shown(exc.value)} where {exc.expected} belongs")


def _words(what: str, problem: str) -> str:
    return (
        f"the agent sent {what}, which {problem}; it may be a different memtop version or "
        "not memtop: use the memtop that started the agent, or restart the program"
    )


def _shown(value: Any) -> str:
    """A short, terminal-safe rendering of an untrusted value."""
    if type(value) is int and abs(value) >= 10**30:
        return f"a {value.bit_length()}-bit number"
    if isinstance(value, (dict, list)):
        kind = "an object" if isinstance(value, dict) else "a list"
        text = f"{kind} of {len(value)} item{'s' if len(value) != 1 else ''}"
        return text
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return clean_text(text)
