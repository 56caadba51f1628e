"""Every request's memory and time are bounded: a real target and its agent, spoken to
over the real socket by a client that abuses filters, heavy commands and numbers."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from conftest import Targets, need_interpreter, state_of, wait_for, wait_state
from wire import Raw, error_code

from memtop.agent import checks, sampler
from memtop.attach.runner import Program

FILES = 2000


def _ready(targets: Targets, *args: str, **config: object) -> tuple[Program, Path, Raw]:
    program, state = targets.start("bounded.py", *args, **config)  # type: ignore[arg-type]
    wait_state(state)
    raw = Raw(program.socket_path)
    assert raw.hello(program.token)["ok"]
    return program, state, raw


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _call_waiting(raw: Raw, cmd: str, request_id: int, **args: object) -> dict:
    """A request retried after each busy reply, as the viewer's client does."""
    while True:
        reply = raw.call(cmd, request_id, **args)
        if error_code(reply) != "busy":
            return reply
        time.sleep(reply["error"]["retry_in"])


def _settled(state: Path, key: str) -> int:
    """`key` from a report made after every request so far was answered."""
    seen = state_of(state)["counter"]
    return wait_state(state, lambda s: s["counter"] > seen + 1)[key]


@pytest.mark.parametrize(
    "number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "123456789012345678901234567890"]
)
def test_non_finite_or_huge_numbers_are_refused_and_ping_keeps_working(
    targets: Targets, number: str
) -> None:
    program, _, abuser = _ready(targets, "10")
    body = '{"id": 7, "cmd": "configure", "args": {"idle_timeout": ' + number + "}}"
    abuser.send_bytes(_frame(body.encode()))
    reply = abuser.reply()
    assert error_code(reply) == "bad_json", reply
    # Neither the abuser's connection nor any other viewer's ping is broken.
    assert abuser.call("ping", 8)["ok"]
    viewer = Raw(program.socket_path)
    assert viewer.hello(program.token)["ok"]
    pong = viewer.call("ping")
    assert pong["ok"] and pong["result"]["idle_timeout"] != pong["result"]["idle_timeout"] + 1


def test_numbers_in_range_are_still_accepted(targets: Targets) -> None:
    _, _, raw = _ready(targets, "10")
    reply = raw.call("configure", idle_timeout=1e6)
    assert reply["ok"] and reply["result"]["idle_timeout"] == 1e6


def test_filters_are_matched_without_the_programs_regex_caches(targets: Targets) -> None:
    _, state, raw = _ready(targets, "200")
    before = _settled(state, "regex_cache")
    for index in range(20):
        reply = _call_waiting(
            raw,
            "top",
            index + 1,
            include=["*/mod00[0-4]?.py", f"*/mod01{index:02d}.py"],
            exclude=[f"*{index}x[!a]*", "*/mod0049.py"],
            max_age=0,
            limit=500,
        )
        assert reply["ok"], reply
        files = {row["filename"].rsplit("/", 1)[1] for row in reply["result"]["rows"]}
        expected = {f"mod{i:04d}.py" for i in (*range(49), 100 + index)}
        assert files == expected
    assert _settled(state, "regex_cache") == before


@pytest.mark.parametrize(
    ("count", "length"),
    [(checks.MAX_PATTERNS + 1, 4), (1, checks.MAX_PATTERN_CHARS + 1)],
)
def test_too_many_or_too_long_patterns_are_refused(
    targets: Targets, count: int, length: int
) -> None:
    _, _, raw = _ready(targets, "10")
    reply = raw.call("top", include=["*" * length] * count)
    assert error_code(reply) == "bad_args"
    widest = ["*a" * (checks.MAX_PATTERN_CHARS // 2)] * checks.MAX_PATTERNS
    assert raw.call("top", 2, include=widest, exclude=widest, max_age=0)["ok"]


HEAVY = [
    ("types", {}),
    ("origins", {"type": "list"}),
    ("referrers", {"type": "list"}),
    ("snapshot", {"part": 0}),
]


@pytest.mark.parametrize(("cmd", "args"), HEAVY, ids=[cmd for cmd, _ in HEAVY])
def test_heavy_commands_wait_for_the_budget_with_a_retry_time(
    targets: Targets, cmd: str, args: dict
) -> None:
    _, _, raw = _ready(targets, str(FILES))
    assert raw.call("types", 1)["ok"]  # spends the budget for a while
    reply = raw.call(cmd, 2, **args)
    assert error_code(reply) == "busy", reply
    retry_in = reply["error"]["retry_in"]
    assert 0 < retry_in < 60
    assert "retry in" in reply["error"]["message"]

    def answered() -> dict | None:
        again = raw.call(cmd, 3, **args)
        if error_code(again) == "busy":
            time.sleep(again["error"]["retry_in"])
            return None
        return again

    assert wait_for(answered, 60, f"{cmd} within the budget")["ok"]


@pytest.mark.parametrize("cmd", ["top", "tracebacks"])
def test_work_on_one_sample_beyond_its_allowance_waits_for_the_budget(
    targets: Targets, cmd: str
) -> None:
    _, _, raw = _ready(targets, str(FILES))
    assert raw.call("top", 1, max_age=0)["ok"]  # a fresh sample spends the budget
    codes = []
    for index in range(sampler.MAX_DERIVED + 1):
        args: dict = {"include": [f"*/mod{index:04d}.py", "/srv/*"], "max_age": 1e9}
        if cmd == "tracebacks":
            args["key"] = {"filename": "/srv/app/mod0001.py", "lineno": 1}
        reply = raw.call(cmd, index + 2, **args)
        codes.append(error_code(reply))
        if codes[-1] == "busy":
            assert reply["error"]["retry_in"] > 0
            break
    # Another viewer's first look at the fresh sample is answered; more waits.
    assert codes[0] is None and codes[-1] == "busy", codes


def test_distinct_filters_do_not_grow_the_program(targets: Targets) -> None:
    program, state = targets.start("bounded.py", str(FILES), budget=0.5)
    wait_state(state)
    client = targets.connect(program)

    def abuse(rounds: range) -> None:
        for index in rounds:
            # Each config keeps every file: a grouping as large as the whole table.
            client.request("top", include=["/srv/*", f"*never{index}*"], max_age=1e9)

    abuse(range(5))
    before = _settled(state, "allocated_blocks")
    abuse(range(5, 105))
    grown = _settled(state, "allocated_blocks") - before
    # At most the latest sample's groupings and each viewer's previous ones stay.
    assert grown < 12 * FILES * 4, grown


def test_requests_sent_at_once_are_all_answered_in_order(targets: Targets) -> None:
    """Requests are read a few at a time (a client that never waits does not set the
    agent's pace), and none is lost."""
    _, _, raw = _ready(targets, "10")
    frames = b"".join(
        _frame(b'{"id": %d, "cmd": "ping", "args": {}}' % number) for number in range(1, 41)
    )
    raw.send_bytes(frames)
    replies = [raw.reply() for _ in range(40)]
    assert [reply["id"] for reply in replies] == list(range(1, 41))
    assert all(reply["ok"] for reply in replies)


def test_a_client_told_busy_is_read_again_after_a_pause(targets: Targets) -> None:
    """Requests pipelined behind one told `busy` are answered, after the pause."""
    _, _, raw = _ready(targets, str(FILES))
    assert raw.call("types", 1)["ok"]
    raw.send_bytes(
        _frame(b'{"id": 2, "cmd": "types", "args": {}}')
        + _frame(b'{"id": 3, "cmd": "ping", "args": {}}')
    )
    told = raw.reply()
    assert told["id"] == 2 and error_code(told) == "busy"
    pong = raw.reply()
    assert pong["id"] == 3 and pong["ok"]


@pytest.mark.parametrize("minor", ["3.9", "3.12", "3.14"])
def test_bounds_hold_on_each_interpreter(targets: Targets, minor: str) -> None:
    """NaN refused with ping unharmed, filters without the program's regex caches, and a
    heavy command told busy, in a program on `minor`."""
    _, state, raw = _ready(targets, str(FILES), python=need_interpreter(minor))
    raw.send_bytes(_frame(b'{"id": 1, "cmd": "configure", "args": {"idle_timeout": NaN}}'))
    assert error_code(raw.read()) == "bad_json"
    assert raw.call("ping", 2)["ok"]
    before = _settled(state, "regex_cache")
    reply = _call_waiting(raw, "top", 3, include=["*/mod000[1-3].py"], max_age=0)
    assert {row["filename"] for row in reply["result"]["rows"]} == {
        f"/srv/app/mod000{i}.py" for i in (1, 2, 3)
    }
    assert _settled(state, "regex_cache") == before
    assert _call_waiting(raw, "types", 4)["ok"]
    assert error_code(raw.call("referrers", 5, type="list")) == "busy"


def test_unchanged_rows_are_not_sent_again_and_cost_no_budget(targets: Targets) -> None:
    # 500 rows with tracebacks cost tens of ms to encode (more under tracing); a viewer
    # refreshing faster than new tables come sent them again every time, and each time
    # pushed the next table further away.
    _, _, raw = _ready(targets, "200", nframe=8)
    first = _call_waiting(raw, "top", 1, limit=500, cumulative=True, max_age=60.0)["result"]
    assert first["rows"] and first["rows_unchanged"] is False
    held = first["sample"]["id"]
    next_in = []
    for request_id in range(2, 12):
        reply = raw.call("top", request_id, limit=500, cumulative=True, max_age=60.0,
                         reuse_rows=held)["result"]  # fmt: skip
        assert reply["rows_unchanged"] is True and reply["rows"] == []
        next_in.append(reply["sample"]["next_in"])
    assert next_in == sorted(next_in, reverse=True)  # the budget only recovers
    # A viewer that does not hold those rows gets them.
    other = raw.call("top", 20, limit=500, cumulative=True, max_age=60.0, reuse_rows=held - 1)
    assert other["result"]["rows"] == first["rows"]
