"""The viewer's checks of agent replies (memtop.replies), without sockets: what passes,
what is refused, and what the refusal says."""

from __future__ import annotations

import math

import pytest

from memtop.errors import BadReply
from memtop.replies import check_greeting, check_reply


def top_reply(**changes: object) -> dict:
    result = {
        "sample": {"id": 1, "time": 1.0, "age": 0.0, "fresh": True, "pause_ms": 0.5,
                   "next_in": 0.0, "budget": 0.05},
        "totals": {"traced_current": 10, "traced_peak": 20, "tracemalloc_memory": 5,
                   "nframe": 4},
        "total_rows": 1,
        "rows": [{"filename": "a.py", "lineno": 1, "size": 10, "count": 1, "size_diff": -3,
                  "count_diff": 0}],
    }  # fmt: skip
    result.update(changes)
    return {"id": 7, "ok": True, "result": result}


def refusal(reply: dict, cmd: str = "top", args: dict | None = None) -> str:
    with pytest.raises(BadReply) as raised:
        check_reply(cmd, args or {}, 7, reply)
    return raised.value.message


def test_a_well_formed_reply_with_fields_added_later_passes() -> None:
    reply = top_reply(new_field={"anything": [1, 2]})
    assert check_reply("top", {}, 7, reply) is reply


def test_an_error_reply_passes_for_the_caller_to_raise() -> None:
    reply = {"id": 7, "ok": False, "error": {"code": "busy", "message": "retry in 2 s"}}
    assert check_reply("top", {}, 7, reply) is reply


@pytest.mark.parametrize(
    ("totals", "said"),
    [
        ({"traced_current": True}, "result.totals.traced_current = True where a whole number"),
        ({"traced_current": 1.5}, "result.totals.traced_current = 1.5 where a whole number"),
        ({"traced_current": -1}, "result.totals.traced_current = -1 where a whole number from 0"),
        ({"traced_current": 2**64}, "result.totals.traced_current = 18446744073709551616"),
        ({"nframe": None}, "result.totals.nframe = None where"),
    ],
)
def test_numbers_of_the_wrong_kind_or_beyond_any_heap_are_refused(totals: dict, said: str) -> None:
    reply = top_reply()
    reply["result"]["totals"].update(totals)
    assert said in refusal(reply)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300])
def test_non_finite_and_absurd_floats_are_refused(value: float) -> None:
    reply = top_reply()
    reply["result"]["sample"]["age"] = value
    assert "result.sample.age = " in refusal(reply)


def test_text_from_the_agent_is_shown_escaped_and_short() -> None:
    reply = top_reply()
    reply["result"]["rows"][0]["size"] = "\x1b]52;c;AAAA\x07" + "x" * 200
    said = refusal(reply)
    assert "\x1b" not in said and "\x07" not in said
    assert "x" * 100 not in said


def test_a_missing_field_is_named() -> None:
    reply = top_reply()
    del reply["result"]["rows"][0]["count"]
    assert "has no result.rows[0].count" in refusal(reply)


def test_the_first_snapshot_part_must_carry_its_header() -> None:
    reply = {"id": 7, "ok": True, "result": {"snapshot": 1, "parts": 2}}
    assert "has no result.header" in refusal(reply, "snapshot", {"part": 0})
    assert check_reply("snapshot", {"part": 1, "snapshot": 1}, 7, reply) is reply


def test_a_reply_to_another_request_is_refused() -> None:
    assert "answers request 8, not 7" in refusal({"id": 8, "ok": True, "result": {}})


def test_a_greeting_with_an_error_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(BadReply, match="has error = 'no' where an object belongs"):
        check_greeting({"status": "busy", "error": "no"})
