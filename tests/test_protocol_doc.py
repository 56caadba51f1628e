"""docs/protocol.md stays true: every command the agent answers is documented, nothing
documented is gone, and every argument a command reads is listed under it."""

from __future__ import annotations

import re

from conftest import ROOT

AGENT = ROOT / "memtop" / "agent"
DOC = (ROOT / "docs" / "protocol.md").read_text()
# Arguments read through the helpers in memtop/agent/checks.py.
HELPERS = {
    "grouping_config": ("group_by", "cumulative", "include", "exclude"),
    "limit": ("limit",),
    "type_name": ("type",),
}


def handlers() -> dict[str, str]:
    """{command: body of its cmd_ method} from the agent's source."""
    source = "\n".join((AGENT / name).read_text() for name in ("commands.py", "object_commands.py"))
    table = dict(re.findall(r'"(\w+)": self\.cmd_(\w+),', source))
    bodies = dict(
        re.findall(
            r"\n    def cmd_(\w+)\(self, args, client\):(.*?)(?=\n    def |\n\S|\Z)", source, re.S
        )
    )
    assert table and set(table.values()) <= set(bodies)
    return {command: bodies[method] for command, method in table.items()}


def documented() -> dict[str, str]:
    """{command: its section} from docs/protocol.md."""
    commands = DOC.split("## Commands", 1)[1]
    return dict(re.findall(r"### `(\w+)`\n(.*?)(?=\n### |\Z)", commands, re.S))


def arguments(body: str) -> set[str]:
    found = set(re.findall(r'checks\.(?:get|choice|patterns)\(args, "(\w+)"', body))
    found |= set(re.findall(r'args\.get\("(\w+)"', body))
    found |= set(re.findall(r'"(\w+)" in args', body))
    for helper, names in HELPERS.items():
        if f"checks.{helper}(args" in body:
            found |= set(names)
    return found


def test_every_command_is_documented_and_nothing_else() -> None:
    assert set(documented()) == set(handlers())


def test_every_argument_a_command_reads_is_documented() -> None:
    sections = documented()
    for command, body in handlers().items():
        section = sections[command]
        grouping = "the grouping arguments" in section
        for name in sorted(arguments(body)):
            listed = f"`{name}`" in section or (grouping and name in HELPERS["grouping_config"])
            assert listed, f"{command}: argument {name!r} is not in docs/protocol.md"
