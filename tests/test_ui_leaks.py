"""Leak hunting in the TUI over the scripted source: suspect rows, the types view and its
walks on request, origins, who keeps it alive, saving snapshots, and saved snapshots
viewed offline (live-only keys refused, never a traceback)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from ui_fakes import (
    CWD,
    SITES,
    T0,
    FakeSource,
    Site,
    filled_history,
    header,
    screen_as,
    settle,
    status,
    table_lines,
    told,
    until,
)

from memtop.errors import AgentError, MemtopError
from memtop.filesource import FileSource
from memtop.leaks import ChainStep, ReferrerChain, chain_from_reply
from memtop.model import Frame, Query, Refresh
from memtop.snapfile import load
from memtop.source import HeapInspection, LiveControls, Snapshots
from memtop.ui.app import MemtopApp
from memtop.ui.help_screen import help_table
from memtop.ui.origins_panel import OriginsPanel
from memtop.ui.referrers_panel import ReferrersPanel, chain_text
from memtop.ui.save_snapshot import free_path
from memtop.ui.suspects import RULE
from memtop.ui.texts import clock_time, taken_time
from memtop.ui.types_screen import TypesScreen
from memtop.ui.view_state import ViewState

CACHE = f"{CWD}/app/cache.py:42"
SESSIONS = f"{CWD}/app/sessions.py:17"
# Jumps up and down between refreshes: the largest Δsize every other table, never steady.
FLAPPING = Site(f"{CWD}/app/batch.py", 5, "chunk = read(4 << 20)", 1 << 20, 10, 500_000)


class FlappingSource(FakeSource):
    """FakeSource plus a row whose size flaps: big growth now and then, not a leak."""

    def __init__(self) -> None:
        super().__init__(sites=(FLAPPING, *SITES))

    def _size(self, site: Site, n: int) -> int:
        if site is FLAPPING:
            return site.size + site.growth * (n % 2)
        return super()._size(site, n)


def watched(source: FakeSource | None = None, points: int = 20) -> MemtopApp:
    """An app with `points` refreshes of history behind it (enough to judge growth)."""
    source = source or FakeSource()
    history = filled_history(source, ViewState().query, points)
    return MemtopApp(
        source, Query(), 1.0, clock=lambda: T0 + 90, cwd=CWD, history=history, autorefresh=False
    )


async def press(pilot, *keys: str) -> None:  # type: ignore[no-untyped-def]
    """Press each key once the app has finished with the one before: a key pressed while
    a walk runs is one the screen has greyed out, which a test must not race."""
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


# --- suspects in the table ---------------------------------------------------------------


async def test_steadily_growing_rows_are_marked_as_suspects() -> None:
    app = watched()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        lines = {key: table_lines(app)[i + 1] for i, key in enumerate(app.table.keys)}
        assert lines[CACHE].lstrip().startswith("▲1")
        assert lines[SESSIONS].lstrip().startswith("▲2")
        flat = [key for key in app.table.keys if key not in (CACHE, SESSIONS)]
        assert flat and not any("▲" in lines[key] for key in flat)
        assert "▲ 2 suspects" in header(app)


async def test_a_row_without_history_is_no_suspect() -> None:
    app = watched(points=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert not any("▲" in line for line in table_lines(app))
        assert "suspect" not in header(app)


async def test_suspects_sort_puts_steady_growers_first() -> None:
    source = FlappingSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, *"ssss")
        assert app.state.sort == "growth"
        assert app.table.keys[0] == f"{CWD}/app/batch.py:5"  # the agent: largest Δsize
        growth_order = app.table.keys
        await press(pilot, "s")
        assert app.state.sort == "suspects"
        assert source.queries[-1].sort == "growth"  # the same request: the viewer reorders
        assert app.table.keys[:2] == [CACHE, SESSIONS]
        assert app.table.keys[2:] == [k for k in growth_order if k not in (CACHE, SESSIONS)]
        heading = table_lines(app)[0]
        assert "RATE/MIN▼" in heading and "AVG" not in heading
        assert "+6.9 MiB" in table_lines(app)[1]  # 120,000 B a second
        assert "sort suspects" in header(app)
        await press(pilot, "s")
        assert app.state.sort == "size" and "RATE/MIN" not in table_lines(app)[0]


async def test_the_selected_suspects_growth_rate_is_in_the_status_line() -> None:
    app = watched()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "▲ suspect app/cache.py:42: +6.9 MiB/min over 21 tables" in status(app)
        await press(pilot, "down")
        assert "▲ suspect app/sessions.py:17: +527 KiB/min" in status(app)
        await press(pilot, "down")
        assert "suspect" not in status(app)


def test_help_says_what_makes_a_row_a_suspect() -> None:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(help_table())
    shown = " ".join(console.export_text().split())
    assert "▲ by the rank" in shown and " ".join(RULE.split()) in shown


# --- the types view ------------------------------------------------------------------------


def type_names(app: MemtopApp) -> list[str]:
    assert isinstance(app.screen, TypesScreen)
    return app.screen.rows.names


def walk_line(app: MemtopApp) -> str:
    return str(app.screen.query_one("#types-walk").render())


def walks(source: FakeSource) -> list[str]:
    return [call for call in source.calls if call.startswith("types")]


async def test_o_opens_the_types_view_with_one_walk_and_its_limits() -> None:
    source = FakeSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "o")
        assert isinstance(app.screen, TypesScreen)
        assert walks(source) == ["types mark=False"]
        objects = sum(t.count + t.growth for t in source.types_list)
        assert f"gc walk: 23 ms over {objects:,} objects in 26 types" in walk_line(app)
        assert "first look: Δ columns count from here" in walk_line(app)
        limits = " ".join(str(app.screen.query_one("#types-limits").render()).split())
        assert "The gc sees containers only" in limits
        assert "strings, bytes and numbers show up in the allocation rows" in limits
        assert "plain class instances on CPython 3.11" in limits
        assert "Walks only when asked" in limits
        await pilot.pause(0.3)
        app.refresh_now()  # the table's refreshes go on; the types view does not walk again
        await settle(pilot)
        assert walks(source) == ["types mark=False"]


async def test_u_walks_again_and_rows_are_sorted_by_growth() -> None:
    source = FakeSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "o", "u")
        assert walks(source) == ["types mark=False"] * 2
        names = type_names(app)
        assert names[:3] == ["dict", "app.sessions.Session", "app.cache.Item"]
        assert names[-1] == "tuple"  # shrinking: last
        assert f"Δ since the previous look at {clock_time(T0 + 101)}" in walk_line(app)
        table = screen_as(app, TypesScreen).rows
        first = [str(cell) for cell in table.get_row_at(0)]
        assert first == ["1", "120360", "+180", "26.6 MiB", "+40.8 KiB", "dict"]


async def test_b_in_the_types_view_marks_the_baseline() -> None:
    source = FakeSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "o", "b")
        assert walks(source) == ["types mark=False", "types mark=True"]
        assert f"marked at {clock_time(T0 + 102)}" in walk_line(app)
        assert "baseline set" not in source.calls  # the table's baseline is another thing
        await press(pilot, "u", "u")
        assert f"Δ since the mark at {clock_time(T0 + 102)}" in walk_line(app)
        session = screen_as(app, TypesScreen).rows.get_row("app.sessions.Session")
        assert str(session[2]) == "+180"  # two walks of 90 since the mark


async def test_types_errors_become_notifications() -> None:
    source = FakeSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        source.fail = AgentError("timeout", "the walk took too long")
        await press(pilot, "o")
        assert any("Object types: agent error timeout" in m for m in told(app))
        assert "could not walk the gc" in walk_line(app)
        source.fail = None
        await press(pilot, "u")
        assert type_names(app)[0] == "dict"


@pytest.mark.parametrize("key", ["o", "enter", "question_mark"])
async def test_the_main_screen_keeps_counting_under_a_panel_or_view(key: str) -> None:
    # The clock (every second) and refreshes go on while a panel or the types view is on
    # top: the main screen's widgets are updated under it, not looked for on top of it.
    source = FakeSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, key)
        assert app.screen is not app.screen_stack[0]
        shown = app.shown
        app._show_state()  # what the 1 s timer does
        app.refresh_now()
        await settle(pilot)
        assert app.shown == shown + 1 and app.screen is not app.screen_stack[0]
        await press(pilot, "escape")
        assert app.screen is app.screen_stack[0]
        assert "group lineno" in header(app) and app.table.keys


async def test_escape_leaves_the_types_view() -> None:
    app = watched()
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "o")
        await press(pilot, "escape")
        assert not isinstance(app.screen, TypesScreen)


# --- origins ---------------------------------------------------------------------------------


async def test_enter_on_a_type_shows_where_its_instances_were_allocated() -> None:
    source = FakeSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "o", "u", "down", "enter")
        panel = app.screen
        assert isinstance(panel, OriginsPanel)
        assert source.calls[-1] == "origins app.sessions.Session"
        body = panel.body_text
        assert "#1  150 of 200 sampled  (75%)" in body and "#2  50 of 200 sampled" in body
        first = body.split("#2")[0]
        order = [first.index(s) for s in ("main.py:10", "app/views.py:31", "→ app/sessions.py:17")]
        assert order == sorted(order)  # oldest frame first, the allocating one last
        assert "serve_forever(app)" in first and "session = Session(user_id, token)" in first
        summary = str(panel.query_one(".detail-summary").render())
        assert "200 newest instances sampled · 2 allocation sites" in summary
        assert "no allocation traceback" not in summary
        await press(pilot, "escape")
        assert isinstance(app.screen, TypesScreen)


async def test_origins_say_why_some_instances_have_no_traceback() -> None:
    app = watched()
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "o", "enter")  # dict: the biggest type on the first walk
        summary = " ".join(str(app.screen.query_one(".detail-summary").render()).split())
        assert "80 of 200 have no allocation traceback: objects allocated before tracing" in (
            summary
        )


# --- who keeps it alive ----------------------------------------------------------------------


def chain_lines(app: MemtopApp) -> list[str]:
    panel = app.screen
    assert isinstance(panel, ReferrersPanel)
    return [line for line in panel.body_text.splitlines() if line.strip()]


async def test_w_in_the_types_view_shows_the_chain_root_first() -> None:
    source = FakeSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "o", "u", "down", "w")
        assert source.calls[-1] == "referrers app.sessions.Session"
        lines = chain_lines(app)
        assert lines[:4] == [
            "  module app.sessions  global SESSIONS",
            "→ app.sessions.SessionStore  ._sessions",
            "→ dict  ['8a9f03c2']",
            "→ app.sessions.Session   ← this object",
        ]
        assert lines[4:] == [
            "allocated at (oldest frame first)",
            "    main.py:10",
            "    app/sessions.py:17",
        ]
        title = str(app.screen.query_one(".detail-panel").border_title)
        assert title == "Who keeps it alive: the newest app.sessions.Session"


async def test_w_on_a_line_row_walks_from_an_object_allocated_there() -> None:
    source = FakeSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "down", "w")
        assert source.calls[-1] == f"referrers {SESSIONS}"
        assert chain_lines(app)[0] == "  module app.sessions  global SESSIONS"
        await press(pilot, "escape", "up", "w")
        assert source.calls[-1] == f"referrers {CACHE}"
        assert chain_lines(app)[0] == (
            "No chain to a root found: no object the gc tracks was found with that allocation line"
        )


async def test_w_needs_line_grouping() -> None:
    source = FakeSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "f", "w")
        assert not isinstance(app.screen, ReferrersPanel)
        assert not any(call.startswith("referrers") for call in source.calls)
        assert any("group by line (l, cumulative off)" in m for m in told(app))


async def test_referrer_errors_are_shown_in_the_panel() -> None:
    source = FakeSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        source.fail = AgentError("busy", "another walk runs")
        await press(pilot, "w")
        body = screen_as(app, ReferrersPanel).body_text
        assert "could not walk the referrers: agent error busy" in body


def test_chain_text_from_the_target_is_never_markup() -> None:
    chain = ReferrerChain(
        True,
        "x",
        (
            ChainStep("dict", "global [bold]X\x1b[31m", "module evil\x07"),
            ChainStep("evil.[i]T[/i]", "", ""),
        ),
        True,
        (Frame("/srv/app/evil\x1b.py", 3),),
        "no \x1b]0;title\x07 traceback",
        "",
    )
    text = chain_text(chain, CWD)
    assert "\x1b" not in text.plain and "\x07" not in text.plain
    assert "global [bold]X\\x1b[31m" in text.plain and "evil.[i]T[/i]" in text.plain
    assert "the walk was cut short" in text.plain
    assert "no \\x1b]0;title\\x07 traceback" in text.plain


def test_a_thread_root_reads_as_one_short_line() -> None:
    long_path = f"{CWD}/" + "deep/" * 12 + "jobs.py"
    root = chain_from_reply(
        {
            "found": True,
            "what": "x",
            "cut": False,
            "steps": [
                {
                    "type": "frame",
                    "edge": "local job",
                    "root": f"thread 139712: handle() at {long_path}:12",
                    "frame": [long_path, 12, "handle", "139712"],
                },
                {"type": "app.Job", "edge": "", "root": ""},
            ],
        }
    )
    first = chain_text(root, CWD).plain.splitlines()[0]
    assert first.startswith("  thread 139712 · handle() at ") and "thread thread" not in first
    assert "jobs.py:12" in first and first.endswith("local job") and len(first) <= 80


# --- saving snapshots ------------------------------------------------------------------------


async def test_S_saves_a_loadable_snapshot_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = FakeSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "S")
        await until(pilot, lambda: any("Snapshot saved" in m for m in told(app)), "the notice")
        saved = list(tmp_path.glob("memtop-4242-*.memtop"))
        assert len(saved) == 1
        assert any(f"Snapshot saved: {saved[0]}" in m for m in told(app))
        loaded = load(str(saved[0]))
        assert loaded.entries == source.snapshot().entries
        assert loaded.meta["pid"] == 4242


async def test_snapshot_errors_become_notifications(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = FakeSource()
    app = watched(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        source.fail = MemtopError("the agent sent an invalid snapshot: bad frame")
        await press(pilot, "S")
        assert any("snapshot: the agent sent an invalid snapshot" in m for m in told(app))
        assert list(tmp_path.iterdir()) == []


def test_a_second_save_in_the_same_second_gets_its_own_name() -> None:
    taken = {"/d/memtop-1-x.memtop", "/d/memtop-1-x-2.memtop"}
    assert free_path("/d/memtop-1-x.memtop", taken.__contains__) == "/d/memtop-1-x-3.memtop"
    assert free_path("/d/new.memtop", taken.__contains__) == "/d/new.memtop"


# --- saved snapshots, offline -----------------------------------------------------------------


def file_app(base: bool = False, autorefresh: bool = False) -> tuple[MemtopApp, FileSource]:
    fake = FakeSource()
    snapshot = fake.snapshot()
    if base:
        source = FileSource(snapshot, "/tmp/new.memtop", fake.snapshot(), "/tmp/old.memtop")
    else:
        source = FileSource(snapshot, "/tmp/app.memtop")
    app = MemtopApp(source, Query(), 0.25, clock=lambda: T0 + 90, cwd=CWD, autorefresh=autorefresh)
    return app, source


def test_a_saved_snapshot_serves_its_table_and_snapshot_only() -> None:
    """What needs the live process is not there to call (no method that raises)."""
    _, source = file_app()
    assert isinstance(source, Snapshots)
    assert not isinstance(source, LiveControls) and not isinstance(source, HeapInspection)


async def test_a_saved_snapshot_shows_its_file_in_the_header() -> None:
    app, _ = file_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert f"memtop · file app.memtop · taken {taken_time(T0)} · pid 4242" in header(app)
        assert " · up " not in header(app) and " · every " not in header(app)
        assert "saved snapshot: the table does not change" in status(app)
        assert app.table.keys[0] == CACHE


async def test_a_diff_of_two_files_says_so() -> None:
    app, _ = file_app(base=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "file new.memtop vs old.memtop" in header(app)


@pytest.mark.parametrize("key", ["o", "w", "space", "plus", "minus", "b", "r"])
async def test_live_only_keys_are_refused_on_a_saved_snapshot(key: str) -> None:
    app, _ = file_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        before = app.state
        await press(pilot, key)
        assert app.screen is app.screen_stack[0]  # no panel, no types view
        assert app.state == before
        assert any("needs the live process" in m for m in told(app))


async def test_the_command_palette_leaves_out_live_only_actions_on_a_file() -> None:
    app, _ = file_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert "Save snapshot (S)" in titles and "Tracebacks of row (Enter)" in titles
        assert "Types (o)" not in titles and "Pause (space)" not in titles


async def test_a_saved_snapshot_is_not_refreshed_on_a_timer() -> None:
    app, source = file_app(autorefresh=True)
    calls = []
    original = source.refresh

    def counted(query: Query, max_age: float) -> Refresh:
        calls.append(query)
        return original(query, max_age)

    source.refresh = counted  # type: ignore[method-assign]
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.pause(0.8)  # three intervals
        assert len(calls) == 1
        await press(pilot, "f")
        assert len(calls) == 2 and app.table.keys[0] == f"{CWD}/app/cache.py"


async def test_a_saved_snapshot_can_be_saved_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app, source = file_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, "S")
        (saved,) = tmp_path.glob("memtop-4242-*.memtop")
        assert load(str(saved)).entries == source.current.entries
