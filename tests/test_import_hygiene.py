"""The agent imports nothing outside the stdlib; the headless modules import no Textual."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import ROOT, interpreters

AGENT = ROOT / "memtop" / "agent"

CHECK = """
import sys
import {modules}
bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})
print(','.join(bad))
"""


def imported(modules: list[str], forbidden: set[str]) -> list[str]:
    code = CHECK.format(modules=", ".join(modules), forbidden=forbidden)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return [m for m in out.stdout.strip().split(",") if m]


def test_agent_and_model_import_no_ui_and_no_psutil() -> None:
    assert (
        imported(
            [
                "memtop.agent",
                "memtop.agent.launch",
                "memtop.model",
                "memtop.history",
                "memtop.leaks",
                "memtop.formatting",
            ],
            {"textual", "rich", "psutil"},
        )
        == []
    )


def test_headless_views_import_no_textual() -> None:
    assert (
        imported(
            ["memtop.batch", "memtop.client", "memtop.attach.runner", "memtop.source"],
            {"textual", "rich"},
        )
        == []
    )


# What the live viewer uses of the agent package: the wire, the run dir, row identity.
VIEWER_AGENT_MODULES = {
    "memtop.agent",
    "memtop.agent.nofollow",
    "memtop.agent.protocol",
    "memtop.agent.rowkeys",
    "memtop.agent.rundir",
}


@pytest.mark.parametrize(
    "module", ["memtop.client", "memtop.source", "memtop.cli", "memtop.ui.app"]
)
def test_live_viewer_loads_only_the_agent_modules_it_uses(module: str) -> None:
    loaded = set(imported([module], {"memtop"}))
    assert {m for m in loaded if m.startswith("memtop.agent")} <= VIEWER_AGENT_MODULES


def test_agent_imports_only_stdlib_and_itself() -> None:
    for path in AGENT.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                top = (node.module or "").split(".")[0]
                assert node.level > 0 or top in sys.stdlib_module_names, (
                    f"{path.name}: from {node.module}"
                )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in sys.stdlib_module_names, (
                        f"{path.name}: import {alias.name}"
                    )


def test_agent_compiles_under_python_3_9() -> None:
    python = interpreters().get("3.9")
    if python is None:
        pytest.skip("CPython 3.9 is not installed here (CI installs it)")
    files = [str(p) for p in sorted(AGENT.glob("*.py"))]
    files += [str(p) for p in sorted((ROOT / "tests" / "targets").glob("*.py"))]
    code = "import ast, sys\nfor f in sys.argv[1:]: ast.parse(open(f).read(), f)"
    result = subprocess.run([python, "-c", code, *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_agent_version_matches_the_package() -> None:
    from memtop import __version__
    from memtop.agent import AGENT_VERSION

    assert __version__ == AGENT_VERSION


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(
        line.strip()
        for line in ci.splitlines()
        if "pytest" in line and not line.lstrip().startswith("#")
    )
    assert command in readme
