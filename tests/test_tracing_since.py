"""An attach traces only what is allocated from then on: memtop says so on screen, in the
text view and in JSON, and a comparison across two tracing sessions is flagged. Real
programs, real attaches, the real command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import (
    TARGETS,
    Plain,
    Targets,
    marked_lines,
    memtop_cli,
    need_attachable,
    wait_state,
)
from test_ui_e2e import wait_until
from ui_fakes import header

from memtop.attach.chain import attach
from memtop.model import Query
from memtop.source import LiveSource
from memtop.ui.app import MemtopApp

pytestmark = pytest.mark.e2e
LEAK_LINE = marked_lines(TARGETS / "leaky.py")["list_leak"]
ONLY_NEW = "older memory is not in the table"
NOTHING_HELD = re.compile(r"0 rows: nothing allocated since the attach \d+ s ago is held")


def quiet_target(plain: Plain):  # type: ignore[no-untyped-def]
    """A program that allocates nothing once it is ready (3.14: attached by remote-exec)."""
    proc, state = plain.start(need_attachable("3.14"), "attachable.py", "quiet")
    wait_state(state)
    return proc


def test_json_of_an_attach_says_it_sees_only_new_allocations(plain: Plain) -> None:
    proc = quiet_target(plain)
    result = memtop_cli(str(proc.pid), "--json", "-n", "3", "-i", "0.3")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert line["sees_only_new"] is True
        assert line["time"] - 30 < line["tracing_since"] <= line["time"]
        assert line["tracing_session"] == lines[0]["tracing_session"]
        # Nothing allocated since the attach is held: memtop's own work is not a row.
        assert line["rows"] == [] and line["total_rows"] == 0


def test_batch_text_of_an_attach_warns_and_explains_an_empty_table(plain: Plain) -> None:
    proc = quiet_target(plain)
    result = memtop_cli(str(proc.pid), "-b", "-n", "2", "-i", "0.3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("memtop 0") for line in lines) == 2
    warned = [line for line in lines if line.startswith("warning: tracing since attach")]
    assert len(warned) == 2
    assert all(line.endswith(f" s ago: {ONLY_NEW}") for line in warned)
    assert sum(bool(re.fullmatch("warning: " + NOTHING_HELD.pattern, x)) for x in lines) == 2


async def test_the_header_of_an_attach_says_older_memory_is_missing(plain: Plain) -> None:
    proc = quiet_target(plain)
    attached = attach(proc.pid)
    source = LiveSource(attached.client, proc.pid, attached.how, token=attached.token)
    try:
        app = MemtopApp(source, Query(), interval=0.3)
        async with app.run_test(size=(160, 40)) as pilot:
            await wait_until(pilot, lambda: app.sample is not None, "the first table")
            await wait_until(pilot, lambda: ONLY_NEW in header(app), "the note")
            assert "tracing since attach" in header(app)
            assert NOTHING_HELD.search(header(app))
            await pilot.resize_terminal(80, 24)
            # Narrow: the empty table's explanation says it on its own.
            await wait_until(pilot, lambda: "Δ" not in header(app), "the narrow header")
            assert NOTHING_HELD.search(header(app)), header(app)
            await pilot.press("q")
    finally:
        source.close()


def test_snapshot_keep_then_view_base_shows_what_grew(plain: Plain, short_tmp: Path) -> None:
    """README's workflow: a first snapshot with --keep, a second later, and `view --base`
    shows the leak's growth with no warning; snapshots of two tracings are flagged."""
    proc, state = plain.start(need_attachable("3.14"), "leaky.py", "list")
    wait_state(state)
    before, after, other = (str(short_tmp / name) for name in ("a.memtop", "b.memtop", "c.memtop"))
    first = memtop_cli("snapshot", str(proc.pid), "-o", before, "--keep", "--mode", "exact")
    assert first.returncode == 0, first.stderr
    assert "keeps tracing" in first.stderr and "warning" not in first.stderr
    counter = wait_state(state)["counter"]
    wait_state(state, lambda s: s["counter"] >= counter + 10)  # 100 more leaked widgets
    second = memtop_cli("snapshot", str(proc.pid), "-o", after, "--mode", "exact")
    assert second.returncode == 0, second.stderr

    diff = memtop_cli("view", after, "--base", before, "--json")
    assert diff.returncode == 0, diff.stderr
    assert "warning" not in diff.stderr
    line = json.loads(diff.stdout)
    assert line["baseline_restarted"] is False and line["sees_only_new"] is True
    leak = next(r for r in line["rows"] if r["lineno"] == LEAK_LINE)
    assert leak["count_diff"] >= 100 * 2  # a Widget and its bytes per turn

    assert memtop_cli("detach", str(proc.pid)).returncode == 0
    third = memtop_cli("snapshot", str(proc.pid), "-o", other, "--wait", "0.5", "--mode", "exact")
    assert third.returncode == 0, third.stderr
    mixed = memtop_cli("view", other, "--base", before, "-b")
    assert mixed.returncode == 0, mixed.stderr
    assert "come from two tracing sessions" in mixed.stderr
    assert "warning: tracing restarted after the baseline was set" in mixed.stdout
    mixed_json = json.loads(memtop_cli("view", other, "--base", before, "--json").stdout)
    assert mixed_json["baseline_restarted"] is True


async def test_a_resumed_tui_shows_the_suspect_and_charts_at_once(targets: Targets) -> None:
    """`Q`, then a new viewer: its first screen already marks the leak and draws the
    memory chart from the history the agent kept."""
    program, state_path = targets.start("leaky.py", "list")
    wait_state(state_path)
    key = f"{TARGETS / 'leaky.py'}:{LEAK_LINE}"
    first = LiveSource(targets.connect(program), program.pid, "run", program)
    app = MemtopApp(first, Query(), interval=0.2)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: key in app.history.suspects(), "the suspect", 60)
        rate = app.history.growth_rate(key)
        await pilot.press("Q")
    assert app.return_value is not None and app.return_value.keep_agent
    first.close(keep_agent=True)

    second = LiveSource(targets.connect(program), program.pid, "run", program)
    resumed = MemtopApp(second, Query(), interval=60.0)  # no refresh but the first
    async with resumed.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: resumed.shown == 1, "the first table")
        assert key in resumed.history.suspects()
        assert resumed.history.growth_rate(key) == pytest.approx(rate, rel=0.5)
        assert resumed.view is not None and resumed.view.suspect_count >= 1
        assert "suspect" in header(resumed)
        assert len(resumed.history.points) > 3
        await pilot.press("q")
    second.close()
