"""docs/protocol.md stays true to the agent's command registry: every registered command
is documented by its docstring and nothing else is, every argument it declares and every
field it replies is named there, and a real agent replies no field its command does not
declare."""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any

import pytest
from conftest import ROOT, Targets, need_interpreter, wait_state

from memtop import replies
from memtop.agent import commands, registry
from memtop.client import AgentClient

DOC = (ROOT / "docs" / "protocol.md").read_text()
COMMANDS = registry.COMMANDS
assert commands.Commands is not None  # importing it registers every command


def documented() -> dict[str, str]:
    """{command: its section} from docs/protocol.md."""
    section = DOC.split("## Commands", 1)[1]
    return dict(re.findall(r"### `(\w+)`\n(.*?)(?=\n### |\Z)", section, re.S))


def words(text: str) -> str:
    return " ".join(text.split())


def test_every_registered_command_is_documented_and_nothing_else() -> None:
    assert set(documented()) == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_section_is_its_commands_docstring(name: str) -> None:
    doc = COMMANDS[name].doc
    assert doc, f"{name} has no docstring"
    expected = inspect.cleandoc(doc)
    assert words(documented()[name]) == words(expected), (
        f"docs/protocol.md's section on `{name}` should read:\n\n{expected}"
    )


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_declared_argument_and_reply_field_is_named_in_the_docstring(name: str) -> None:
    spec = COMMANDS[name]
    doc = spec.doc or ""
    grouping = set(registry.GROUPING) <= spec.args and "the grouping arguments" in doc
    for arg in sorted(spec.args):
        assert f"`{arg}`" in doc or (grouping and arg in registry.GROUPING), (name, arg)
    as_stats = "as `stats`" in doc and spec.reply == registry.TOTALS
    for field in spec.reply:
        assert f"`{field}`" in doc or as_stats, (name, field)


def test_the_viewer_checks_replies_of_registered_commands_only() -> None:
    assert set(replies.RESULTS) <= set(COMMANDS)


def test_a_command_sees_only_the_arguments_it_declares() -> None:
    spec = COMMANDS["baseline"]
    args = {"action": "clear", "max_age": 1.0, "limit": 5, "__class__": "x"}
    assert registry.declared(spec, args) == {"action": "clear", "max_age": 1.0}


def _calls(client: AgentClient) -> dict[str, list[dict[str, Any]]]:
    """One reply or more of every registered command (detach last: it ends the agent)."""
    results: dict[str, list[dict[str, Any]]] = {}

    def call(cmd: str, **args: Any) -> dict[str, Any]:
        result: dict[str, Any] = client.request(cmd, **args)  # waits out busy replies
        results.setdefault(cmd, []).append(result)
        return result

    call("ping")
    call("stats")
    call("configure", idle_timeout=None)
    call("mode")
    top = call("top", max_age=0.0)
    row = top["rows"][0]
    call("top", max_age=0.0, group_by="traceback")
    call("tracebacks", key={"filename": row["filename"], "lineno": row["lineno"]})
    call("history")
    call("baseline", action="set")
    call("baseline", action="clear")
    call("reset_peak")
    call("types", limit=5)
    call("origins", type="dict")
    call("referrers", type="dict", timeout=1.0)
    call("referrers", key={"filename": "/nowhere.py", "lineno": 1})
    first = call("snapshot", part=0)
    for part in range(1, first["parts"]):
        call("snapshot", part=part, snapshot=first["snapshot"])
    call("detach")
    return results


@pytest.mark.parametrize("minor", [None, "3.9"], ids=["viewer-python", "3.9"])
def test_a_real_agent_replies_only_declared_fields(targets: Targets, minor: str | None) -> None:
    python = sys.executable if minor is None else need_interpreter(minor)
    program, state = targets.start("idle.py", python=python)
    wait_state(state)
    results = _calls(targets.connect(program))
    assert set(results) == set(COMMANDS), "every registered command is called here"
    for cmd, replied in results.items():
        for result in replied:
            undeclared = set(result) - set(COMMANDS[cmd].reply)
            assert not undeclared, f"{cmd} replies fields it does not declare: {undeclared}"
