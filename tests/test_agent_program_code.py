"""The agent inspects a hostile program's objects without running any of its code: a real
target whose classes record every call of their special methods made from the agent's
thread (tests/targets/recorder.py), asked for types, origins and referrer chains over the
real socket and through the live view."""

from __future__ import annotations

import pytest
from conftest import ROOT, Targets, need_interpreter, state_of, wait_state
from test_ui_e2e import wait_until

from memtop.leaks import NOT_SHOWN
from memtop.model import Query
from memtop.source import LiveSource
from memtop.ui.app import MemtopApp
from memtop.ui.referrers_panel import ReferrersPanel
from memtop.ui.types_screen import TypesScreen

PYTHONS = ["3.9", "3.11", "3.12", "3.13", "3.14"]


def _chain(client, n: int) -> list[dict]:
    answer = client.request("referrers", type=f"__main__.Holder{n}", timeout=2.0)
    assert answer["found"], answer
    return answer["steps"]


@pytest.mark.parametrize("minor", PYTHONS)
def test_types_and_referrers_run_none_of_the_programs_code(targets: Targets, minor: str) -> None:
    program, state = targets.start("recorder.py", python=need_interpreter(minor))
    wait_state(state)
    client = targets.connect(program)

    types = client.request("types", limit=200)
    rows = {row["type"]: row for row in types["rows"]}
    # The metaclass is never asked for the class's name; __sizeof__ is never called.
    assert rows["__main__.Holder5"]["count"] == 3000
    assert rows["__main__.Holder5"]["not_shown"] == "__sizeof__"
    assert rows["__main__.Holder1"]["not_shown"] == ""
    assert types["not_shown"] == NOT_SHOWN
    client.request("origins", type="__main__.Holder5")

    key_edge = [step["edge"] for step in _chain(client, 1)]
    assert f"[<__main__.Key key: {NOT_SHOWN}>]" in key_edge
    assert ".child" in [step["edge"] for step in _chain(client, 2)]
    assert "[0]" in [step["edge"] for step in _chain(client, 3)]
    assert "closure variable b_holder" in [step["edge"] for step in _chain(client, 4)]
    edges = [step["edge"] for step in _chain(client, 5)]
    assert edges[0] == "global OBJECTS" and edges[1].startswith("["), edges
    root = _chain(client, 6)[0]["root"]
    assert "run()" in root and "Thread-" in root, root

    # The program reports what its classes recorded since: nothing.
    seen = state_of(state)["counter"]
    after = wait_state(state, lambda s: s["counter"] > seen + 1)
    assert after["calls"] == []


async def test_the_live_view_says_where_a_value_was_not_shown(targets: Targets) -> None:
    """The types view marks sizes the agent did not ask the program's __sizeof__ for, and
    the referrer chain says why a str subclass key is not shown (a real agent, whose time
    budget makes the view wait and ask again on its own)."""
    program, state = targets.start("recorder.py")
    wait_state(state)
    source = LiveSource(targets.connect(program), program.pid, "run", program)
    app = MemtopApp(source, Query(), interval=1.0, cwd=str(ROOT))
    async with app.run_test(size=(140, 50)) as pilot:
        await wait_until(pilot, lambda: app.sample is not None, "the first table")
        await pilot.press("o")
        screen = app.screen
        assert isinstance(screen, TypesScreen)
        await wait_until(pilot, lambda: screen.table is not None, "the first walk")
        assert "__main__.Holder5" in screen.rows.names
        row = screen.rows.get_row_at(screen.rows.names.index("__main__.Holder5"))
        assert str(row[3]).endswith("*")
        walk = " ".join(str(screen.query_one("#types-walk").render()).split())
        assert f"* SIZE: {NOT_SHOWN} (__sizeof__ is the program's" in walk
        app.push_screen(ReferrersPanel(source, type_name="__main__.Holder1", cwd=str(ROOT)))
        panel = app.screen
        assert isinstance(panel, ReferrersPanel)
        await wait_until(pilot, lambda: panel.chain is not None, "the chain")
        body = " ".join(panel.body_text.split())
        assert f"[<__main__.Key key: {NOT_SHOWN}>]" in body
        assert f"{NOT_SHOWN}: showing it would run the program's own code" in body
        await pilot.press("escape", "escape", "q")
    seen = state_of(state)["counter"]
    assert wait_state(state, lambda s: s["counter"] > seen + 1)["calls"] == []
