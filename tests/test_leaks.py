"""Leak hunting on programs that leak in known ways (tests/targets/leaky.py): suspects,
object types, allocation origins and referrer chains find the known line, class and root,
and using them leaves nothing behind in the target."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    TARGETS,
    Targets,
    marked_lines,
    need_interpreter,
    state_of,
    stream_json,
    wait_state,
)

LINES = marked_lines(TARGETS / "leaky.py")
LEAKY = str(TARGETS / "leaky.py")


def key_of(name: str) -> str:
    return f"{LEAKY}:{LINES[name]}"


def ranked_suspects(line: dict) -> list[str]:
    suspects = [row for row in line["rows"] if row["suspect"]]
    suspects.sort(key=lambda r: r["growth_rate"] * r["suspect_confidence"], reverse=True)
    return [row["key"] for row in suspects]


@pytest.mark.parametrize("mode", ["list", "cache", "closure"])
def test_the_leaking_line_is_the_top_suspect(short_tmp: Path, mode: str) -> None:
    state = short_tmp / "leaky.json"
    seen = []

    def enough(line: dict) -> bool:
        seen.append(line)
        return len(seen) >= 10 and bool(ranked_suspects(line))

    line, _ = stream_json(
        ["run", "--json", "-i", "0.3", "-s", "growth", "-l", "40", LEAKY, str(state), mode],
        enough,
        timeout=60,
    )
    leak = key_of(f"{mode}_leak")
    assert ranked_suspects(line)[0] == leak
    rows = {row["key"]: row for row in line["rows"]}
    assert rows[leak]["growth_rate"] > 10_000  # ~25 KB/s of payload
    # The one-off 2 MB spike grew once and stopped: not a suspect.
    spike = rows.get(key_of("spike"))
    assert spike is None or not spike["suspect"]


@pytest.fixture
def leaking(targets: Targets):
    """leaky.py in `all` mode under memtop (on 3.12+: CPython 3.11 cannot say where class
    instances were allocated), and a connected client."""
    program, state = targets.start("leaky.py", "all", python=need_interpreter("3.13"))
    wait_state(state, lambda s: s["counter"] >= 3)
    return targets.connect(program), state


def test_types_view_shows_the_leaking_classes_growing(leaking) -> None:
    client, state = leaking
    first = client.request("types", mark=True, limit=100)
    assert first["objects"] > 1000 and first["cost_ms"] > 0
    counter = state_of(state)["counter"]
    wait_state(state, lambda s: s["counter"] >= counter + 10)
    grown = client.request("types", limit=100)
    rows = {row["type"]: row for row in grown["rows"]}
    for name in ("__main__.Widget", "__main__.Entry", "__main__.Node"):
        assert rows[name]["count_diff"] >= 50, name
        assert rows[name]["size_diff"] > 0
    top = [row["type"] for row in grown["rows"][:8]]
    assert "__main__.Widget" in top
    assert grown["since"] == grown["baseline"]  # growth counts from the mark


def test_origins_of_a_type_point_at_the_known_line(leaking) -> None:
    client, _ = leaking
    found = client.request("origins", type="__main__.Entry", sample=20)
    assert found["sampled"] == 20 and found["untraced"] == 0 and found["note"] == ""
    allocating = found["sites"][0]["frames"][-1]
    assert (allocating["filename"], allocating["lineno"]) == (LEAKY, LINES["cache_leak"])
    assert allocating["source"].startswith('CACHE["k%d" % n] = Entry')
    assert found["sites"][0]["count"] == 20


@pytest.mark.parametrize(
    ("type_name", "root", "path"),
    [
        ("__main__.Widget", "module __main__", ["global LEAKED", "["]),
        ("__main__.Entry", "module __main__", ["global CACHE", "['k"]),
        ("__main__.Node", "module __main__", ["global CALLBACKS", "[", "closure variable node"]),
    ],
)
def test_referrer_chain_ends_at_the_known_global(
    leaking, type_name: str, root: str, path: list[str]
) -> None:
    client, _ = leaking
    answer = client.request("referrers", type=type_name, timeout=5.0)
    assert answer["found"], answer
    steps = answer["steps"]
    assert steps[0]["root"] == root
    edges = [step["edge"] for step in steps]
    for expected, edge in zip(path, edges, strict=False):
        assert edge.startswith(expected), edges
    assert steps[-1]["type"] == type_name
    assert answer["allocated_at"][-1][0] == LEAKY


def test_an_object_held_by_another_threads_local_is_found(targets: Targets) -> None:
    program, state = targets.start("leaky.py", "local")
    wait_state(state, lambda s: s["counter"] >= 3)
    answer = targets.connect(program).request("referrers", type="__main__.Holder")
    assert answer["found"], answer
    root = answer["steps"][0]
    assert root["root"] == f"thread holder: hold_forever() at {LEAKY}:{LINES['holder_waits']}"
    assert root["frame"] == [LEAKY, LINES["holder_waits"], "hold_forever", "holder"]
    assert root["edge"] == "local keep"
    assert answer["steps"][-1]["type"] == "__main__.Holder"
    # A thread threading does not know by name is named by its ident, once.
    answer = targets.connect(program).request("referrers", type="__main__.Anonymous")
    root = answer["steps"][0]
    assert re.fullmatch(r"thread \d+: hold_anonymously\(\) at .*", root["root"]), root
    assert root["edge"] == "local keep"


def test_a_slot_is_named_like_an_attribute(targets: Targets) -> None:
    program, state = targets.start("leaky.py", "slots")
    wait_state(state, lambda s: s["counter"] >= 2)
    answer = targets.connect(program).request("referrers", type="__main__.Payload")
    assert answer["found"], answer
    edges = [step["edge"] for step in answer["steps"]]
    assert edges[0] == "global SLOTTED" and edges[-2] == ".payload", edges
    assert answer["steps"][-2]["type"] == "__main__.Slotted"


def test_referrers_of_a_row_find_an_object_allocated_there(leaking) -> None:
    client, _ = leaking
    answer = client.request("referrers", key={"filename": LEAKY, "lineno": LINES["list_leak"]})
    assert answer["found"] and answer["steps"][0]["root"] == "module __main__"
    assert answer["steps"][-1]["type"] == "__main__.Widget"


def test_referrers_of_a_line_with_no_container_say_why(leaking) -> None:
    client, _ = leaking
    answer = client.request("referrers", key={"filename": LEAKY, "lineno": LINES["spike"]})
    assert not answer["found"]
    assert "gc tracks containers only" in answer["reason"]


def test_repeated_use_keeps_nothing_in_the_target(targets: Targets, short_tmp: Path) -> None:
    trigger = short_tmp / "drop"
    program, state = targets.start("leaky.py", "static", str(trigger))
    wait_state(state, lambda s: s["counter"] >= 3)
    client = targets.connect(program)

    def use() -> None:
        client.request("types", limit=50)
        client.request("origins", type="__main__.Widget", sample=50)
        assert client.request("referrers", type="__main__.Widget")["found"]

    for _ in range(5):
        use()  # first uses load modules and fill caches once
    before = _settled_blocks(state)
    for _ in range(20):
        use()
    after = _settled_blocks(state)
    assert after - before < 20, f"{after - before} blocks after 20 uses"
    # No reference survived: once the program drops its widgets, they are freed.
    assert state_of(state)["watched_alive"] is True
    trigger.touch()
    wait_state(state, lambda s: s["watched_alive"] is False)


def _settled_blocks(state: Path) -> int:
    counter = state_of(state)["counter"]
    time.sleep(0.3)
    return wait_state(state, lambda s: s["counter"] > counter + 1)["allocated_blocks"]


def test_untraceable_instances_are_explained_on_3_11(targets: Targets) -> None:
    program, state = targets.start("leaky.py", "list", python=need_interpreter("3.11"))
    wait_state(state, lambda s: s["counter"] >= 3)
    client = targets.connect(program)
    found = client.request("origins", type="__main__.Widget", sample=20)
    assert found["untraced"] == found["sampled"] == 20 and found["sites"] == []
    assert "CPython 3.11 cannot map instances" in found["note"]
    chain = client.request("referrers", type="__main__.Widget")
    assert chain["found"] and chain["steps"][0]["edge"] == "global LEAKED"  # still found
    assert chain["allocated_at"] == [] and "3.11" in chain["note"]


def test_bad_arguments_are_refused(leaking) -> None:
    from memtop.errors import AgentError

    client, _ = leaking
    cases: list[tuple[str, dict[str, Any]]] = [
        ("origins", {"type": 42}),
        ("origins", {"type": ""}),
        ("referrers", {"key": "x"}),
        ("types", {"limit": "all"}),
    ]
    for cmd, args in cases:
        with pytest.raises(AgentError) as caught:
            client.request(cmd, **args)
        assert caught.value.code == "bad_args"
    assert client.request("types", limit=10**9)["rows"]  # capped, not refused


def test_a_thread_that_computes_its_name_runs_no_code_of_the_program(
    targets: Targets,
) -> None:
    """A Thread subclass with a `name` property: the thread root is named without calling it."""
    program, state = targets.start("costumed_thread.py")
    wait_state(state)
    answer = targets.connect(program).request("referrers", type="__main__.Kept")
    assert answer["found"], answer
    root = answer["steps"][0]
    assert root["edge"] == "local keep"
    assert root["root"].startswith("thread ") and "keep_one()" in root["root"], root
    assert not Path(f"{state}.ran").exists()


def test_a_walk_through_disguised_objects_runs_no_code_of_the_program(
    targets: Targets,
) -> None:
    """__class__ and __getattr__ of a slotted class, items() and __iter__ of container
    subclasses, a key's __repr__, a metaclass's __qualname__, a __sizeof__ (the types
    view), a lazily loaded module: the
    agent reads through all of them with the built-in types' own getters."""
    program, state = targets.start("disguised.py")
    wait_state(state)
    client = targets.connect(program)
    types = {row["type"]: row for row in client.request("types", limit=200)["rows"]}
    assert "__main__.Kept" in types
    assert types["__main__.Sized"]["count"] == 3 and types["__main__.Sized"]["size"] > 0
    answer = client.request("referrers", type="__main__.Kept")
    assert answer["found"], answer
    edges = [step["edge"] for step in answer["steps"]]
    assert edges[0] == "global HOLD" and edges[2:] == ["[0]", ".held", ""], edges
    assert edges[1].startswith("[<__main__.Key"), edges  # a key of the program: not repr()d
    ran = Path(f"{state}.ran")
    assert not ran.exists(), ran.read_text()
