"""The agent inspects a hostile program's objects without running any of its code: a real
target whose classes record every call of their special methods made from the agent's
thread (tests/targets/hostile.py), asked for types, origins and referrer chains over the
real socket."""

from __future__ import annotations

import pytest
from conftest import Targets, need_interpreter, read_state, wait_state

from memtop.agent.safeview import NOT_SHOWN

PYTHONS = ["3.9", "3.11", "3.12", "3.13", "3.14"]


def _chain(client, n: int) -> list[dict]:
    answer = client.request("referrers", type=f"__main__.Holder{n}", timeout=2.0)
    assert answer["found"], answer
    return answer["steps"]


@pytest.mark.parametrize("minor", PYTHONS)
def test_types_and_referrers_run_none_of_the_programs_code(targets: Targets, minor: str) -> None:
    program, state = targets.start("hostile.py", python=need_interpreter(minor))
    wait_state(state)
    client = targets.connect(program)

    types = client.request("types", limit=200)
    rows = {row["type"]: row for row in types["rows"]}
    # The metaclass is never asked for the class's name; __sizeof__ is never called.
    assert rows["__main__.Holder5"]["count"] == 1
    assert rows["__main__.Holder5"]["not_shown"] == "__sizeof__"
    assert rows["__main__.Holder1"]["not_shown"] == ""
    assert types["not_shown"] == NOT_SHOWN
    client.request("origins", type="__main__.Holder5")

    key_edge = [step["edge"] for step in _chain(client, 1)]
    assert f"[<__main__.Key key: {NOT_SHOWN}>]" in key_edge
    assert ".child" in [step["edge"] for step in _chain(client, 2)]
    assert "[0]" in [step["edge"] for step in _chain(client, 3)]
    assert "closure variable b_holder" in [step["edge"] for step in _chain(client, 4)]
    assert "[0]" in [step["edge"] for step in _chain(client, 5)]
    root = _chain(client, 6)[0]["root"]
    assert "run()" in root and "Thread-" in root, root

    # The program reports what its classes recorded since: nothing.
    seen = read_state(state)["counter"]
    after = wait_state(state, lambda s: s["counter"] > seen + 1)
    assert after["calls"] == []
