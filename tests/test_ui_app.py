"""The TUI driven by keys (Textual's pilot) over a scripted data source: every key and
every state, asserting on what the table and status show."""

from __future__ import annotations

import io
import json
import re

import pytest
from conftest import ROOT
from rich.console import Console
from textual.widgets import Input
from ui_fakes import (
    CWD,
    HOSTILE,
    SITES,
    T0,
    FakeSource,
    Site,
    filled_history,
    header,
    lines_of,
    settle,
    status,
    table_lines,
)

from memtop.ending import Ending
from memtop.errors import AgentError, ConnectionLost
from memtop.model import SORT_KEYS, Query
from memtop.record import Recorder
from memtop.ui.app import MemtopApp, Outcome
from memtop.ui.help_screen import HelpScreen, help_table
from memtop.ui.keys import KEYS
from memtop.ui.memory_panel import MemoryPanel
from memtop.ui.text_lines import TextLines
from memtop.ui.traceback_panel import TracebackPanel
from memtop.ui.view_state import SORTS, ViewState

CACHE = f"{CWD}/app/cache.py:42"
IMPORTLIB = "<frozen importlib._bootstrap_external>:729"


def make_app(source: FakeSource | None = None, interval: float = 1.0) -> MemtopApp:
    """An app that refreshes only when told to, with a fixed clock."""
    return MemtopApp(
        source or FakeSource(),
        Query(),
        interval=interval,
        clock=lambda: T0 + 90,
        cwd=CWD,
        autorefresh=False,
    )


def last_query(source: FakeSource) -> Query:
    return source.queries[-1]


async def refresh(pilot) -> None:  # type: ignore[no-untyped-def]
    pilot.app.refresh_now()
    await settle(pilot)


# --- the table --------------------------------------------------------------------------


async def test_first_refresh_shows_rows_in_the_agents_order() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        expected = [row.key for row in source.sample(last_query(source), 1).rows]
        assert app.table.keys == expected
        assert app.table.keys[0] == CACHE
        first = table_lines(app)[1]
        assert "12.1 MiB" in first and "app/cache.py:42" in first
        assert "self._items.append(item)" in first


async def test_internal_frames_are_hidden_until_x() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert IMPORTLIB not in app.table.keys and "<unknown>:0" not in app.table.keys
        assert "hidden · x shows" in status(app)
        await pilot.press("x")
        await settle(pilot)
        assert last_query(source).exclude == ()
        assert IMPORTLIB in app.table.keys and "<unknown>:0" in app.table.keys


@pytest.mark.parametrize(
    ("key", "group_by", "first_key"),
    [
        ("f", "filename", f"{CWD}/app/cache.py"),
        ("t", "traceback", f"{CWD}/app/cache.py:42 <- {CWD}/main.py:10"),
    ],
)
async def test_grouping_keys_switch_rows(key: str, group_by: str, first_key: str) -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press(key)
        await settle(pilot)
        assert last_query(source).group_by == group_by
        assert app.table.keys[0] == first_key
        await pilot.press("l")
        await settle(pilot)
        assert last_query(source).group_by == "lineno"
        assert app.table.keys[0] == CACHE


async def test_c_toggles_cumulative_except_for_tracebacks() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert last_query(source).cumulative is True
        assert "group lineno cumulative" in header(app)
        await pilot.press("t", "c")
        await settle(pilot)
        assert last_query(source).group_by == "traceback"
        assert last_query(source).cumulative is False


async def test_s_cycles_the_sort_order() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        seen, asked = [], []
        for _ in SORTS:
            await pilot.press("s")
            await settle(pilot)
            seen.append(app.state.sort)
            asked.append(last_query(source).sort)
        assert seen == [*SORTS[1:], "size"]
        assert asked == [*SORT_KEYS[1:], "growth", "size"]  # suspects: the agent's growth order
        await pilot.press("s")
        await settle(pilot)
        rows = source.sample(last_query(source), source.refreshes).rows
        assert app.table.keys == [r.key for r in rows]
        assert app.table.keys[0] == CACHE  # the biggest |Δsize|
        assert "ΔSIZE▼" in table_lines(app)[0]
        assert "sort Δsize" in header(app)


async def test_slash_filters_by_file_pattern_and_empty_clears() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        await pilot.press(*"cache", "enter")
        await settle(pilot)
        assert last_query(source).include == ("*cache*",)
        assert app.table.keys == [CACHE]
        assert "files *cache*" in status(app)
        await pilot.press("slash")
        app.screen.query_one(Input).value = ""
        await pilot.press("enter")
        await settle(pilot)
        assert last_query(source).include == ()
        assert len(app.table.keys) > 1


async def test_escape_cancels_the_filter_prompt() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"cache", "escape")
        await settle(pilot)
        assert last_query(source).include == ()


async def test_too_many_filter_patterns_are_refused() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        app.screen.query_one(Input).value = " ".join(f"p{i}" for i in range(40))
        await pilot.press("enter")
        await settle(pilot)
        assert last_query(source).include == ()
        assert any("at most 16 patterns" in n.message for n in app._notifications)


async def test_b_sets_a_baseline_and_B_clears_it() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("B")  # nothing to clear yet: the key is disabled
        await settle(pilot)
        assert "baseline clear" not in source.calls
        await pilot.press("b")
        await settle(pilot)
        assert source.calls[-1] == "baseline set"
        assert last_query(source).compare == "baseline"
        assert "Δ since baseline" in status(app) and "Δ since" in header(app)
        await pilot.press("B")
        await settle(pilot)
        assert source.calls[-1] == "baseline clear"
        assert last_query(source).compare == "previous"
        assert "Δ per refresh" in header(app)


async def test_a_baseline_from_before_a_tracing_restart_is_flagged_in_the_header() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        assert "tracing restart" not in header(app)
        source.restarted = True
        await refresh(pilot)
        assert "(before a tracing restart: b sets a new one)" in header(app)


async def test_r_resets_the_traced_peak() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert source.calls[-1] == "reset peak"
        assert any("peak reset" in n.message for n in app._notifications)


async def test_m_switches_to_sampled_mode_and_the_header_and_table_say_so() -> None:
    """m asks the source to switch; the header names the mode and rate, sizes get ±."""
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        assert "exact" in header(app) and "sampled" not in header(app)
        assert "±SIZE" not in "\n".join(table_lines(app))
        await pilot.press("m")
        await settle(pilot)
        assert source.calls[-1] == "mode sampled"
        await refresh(pilot)
        assert "sampled 1/256 KiB ±" in header(app)
        assert "cost 12.5 ms/refresh" in header(app)
        assert "±SIZE" in "\n".join(table_lines(app))
        assert any("Sampled mode, 1 sample per 256 KiB" in n.message for n in app._notifications)
        await pilot.press("m")
        await settle(pilot)
        assert source.calls[-1] == "mode exact"
        await refresh(pilot)
        assert "exact" in header(app) and "sampled" not in header(app)
        assert any("Exact mode: tracemalloc" in n.message for n in app._notifications)


async def test_a_mode_the_agent_refuses_is_said_and_nothing_changes() -> None:
    """The agent's reason (sampled mode unavailable: …) reaches the user."""
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        source.fail = AgentError("bad_args", "sampled mode unavailable: free-threaded build")
        await pilot.press("m")
        await settle(pilot)
        source.fail = None
        assert any("free-threaded build" in n.message for n in app._notifications)
        await refresh(pilot)
        assert "exact" in header(app) and "sampled" not in header(app)


async def test_space_freezes_the_table_but_not_the_memory_numbers() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        frozen = table_lines(app)
        memory = lines_of(app.query_one("#memory-labels", TextLines))
        await pilot.press("space")
        await refresh(pilot)
        assert "PAUSED" in status(app)
        assert table_lines(app) == frozen
        assert lines_of(app.query_one("#memory-labels", TextLines)) != memory
        await pilot.press("space")
        await settle(pilot)
        assert "PAUSED" not in status(app)
        assert table_lines(app) != frozen


async def test_plus_and_minus_change_the_interval() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("plus")
        assert app.state.interval == 2.0 and "every 2 s" in header(app)
        await pilot.press("minus", "minus")
        assert app.state.interval == 0.5 and "every 0.5 s" in header(app)


# --- the cursor ----------------------------------------------------------------------


class ShufflingSource(FakeSource):
    """Reverses the order of the rows below the first on every other refresh."""

    def rows(self, query, n):  # type: ignore[no-untyped-def]
        rows = super().rows(query, n)
        return [rows[0], *rows[:0:-1]] if n % 2 == 0 else rows


async def test_cursor_follows_its_row_when_rows_move() -> None:
    app = make_app(ShufflingSource())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("down", "down")
        chosen = app.table.selected_row()
        assert chosen is not None and app.table.cursor_row == 2
        await refresh(pilot)
        assert app.table.selected_row() == chosen or (
            app.table.selected_row().key == chosen.key  # type: ignore[union-attr]
        )
        assert app.table.cursor_row == app.table.keys.index(chosen.key) != 2


async def test_cursor_on_the_first_row_watches_the_top() -> None:
    app = make_app(ShufflingSource())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await refresh(pilot)
        assert app.table.cursor_row == 0


async def test_scroll_position_survives_a_refresh() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("pagedown", "pagedown")
        scrolled = app.table.scroll_offset.y
        cursor = app.table.cursor_row
        assert scrolled > 0
        await refresh(pilot)
        assert app.table.scroll_offset.y == scrolled
        assert app.table.cursor_row == cursor


# --- the traceback panel ---------------------------------------------------------------


async def test_enter_opens_the_heaviest_tracebacks_with_source_lines() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        panel = app.screen
        assert isinstance(panel, TracebackPanel)
        assert source.calls[-1] == f"tracebacks {CACHE}"
        text = str(panel.query_one("#traceback-body").render())
        assert "75% of the row" in text and "25% of the row" in text
        assert "main.py:10" in text and "serve_forever(app)" in text
        assert "worker.py:55" in text and "run_batch(jobs)" in text
        assert "→ app/cache.py:42" in text and "self._items.append(item)" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, TracebackPanel)


async def test_traceback_rows_show_their_own_traceback_without_a_request() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("t")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert not any(c.startswith("tracebacks") for c in source.calls)
        text = str(app.screen.query_one("#traceback-body").render())
        assert "100% of the row" in text and "serve_forever(app)" in text


async def test_one_frame_tracing_says_how_to_get_more() -> None:
    app = make_app(FakeSource(nframe=1))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        summary = str(app.screen.query_one("#traceback-summary").render())
        assert "1 frame per traceback" in summary and "--nframe 10" in summary


async def test_traceback_errors_are_shown_in_the_panel() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        source.fail = AgentError("internal", "no sample")
        await pilot.press("enter")
        await settle(pilot)
        text = str(app.screen.query_one("#traceback-body").render())
        assert "could not read the tracebacks: agent error internal: no sample" in text


# --- help, palette, quitting ---------------------------------------------------------


async def test_question_mark_shows_every_key() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(help_table())
        shown = console.export_text()
        for key in KEYS:
            assert f"  {key.shown} " in shown and key.help in shown
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_command_palette_offers_every_key_action() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for key in KEYS:
            if key.screen == "main":  # the types view's own keys act on that view only
                assert f"{key.label} ({key.shown})" in titles
        assert "Update (u)" not in titles


@pytest.mark.parametrize(("key", "keep"), [("q", False), ("Q", True), ("ctrl+c", False)])
async def test_quitting(key: str, keep: bool) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press(key)
    assert app.return_value == Outcome(keep_agent=keep, exit_code=0)


# --- connection states -----------------------------------------------------------------


async def test_lost_connection_reconnects() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        source.fail = ConnectionLost("the agent closed the connection")
        source.reconnect_fails = 1
        await refresh(pilot)
        assert app.state.connection == "lost"
        assert "agent connection lost: reconnecting" in status(app)
        await refresh(pilot)  # the first reconnect fails
        assert "reconnecting (attempt 1)" in status(app)
        await refresh(pilot)
        assert source.calls.count("reconnect") == 2
        assert app.state.connection == "live" and "reconnecting" not in status(app)


async def test_reconnect_reports_the_lost_baseline() -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        source.fail = ConnectionLost("gone")
        await refresh(pilot)
        await refresh(pilot)
        assert app.state.baseline_time is None
        assert last_query(source).compare == "previous"
        assert any("baseline was lost" in n.message for n in app._notifications)


@pytest.mark.parametrize(
    ("ending", "words", "code"),
    [
        (Ending(signal=9), "target killed by SIGKILL", 137),
        (Ending(code=7), "target exited with code 7", 7),
        (Ending(code=0), "target exited with code 0", 0),
        (Ending(), "target exited (its exit code is unknown", 3),
    ],
)
async def test_target_exit_is_shown_and_becomes_the_exit_code(
    ending: Ending, words: str, code: int
) -> None:
    """The status line says how the target ended; quitting afterwards exits with the
    program's own status (128 + N for signal N, 3 when unknown)."""
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        source.fail = ConnectionLost("gone")
        source.ended = ending
        await refresh(pilot)
        assert words in status(app)
        asked = len(source.queries)
        await refresh(pilot)
        assert len(source.queries) == asked
        assert app.table.keys  # the last table stays on screen
        await pilot.press("q")
    assert app.return_value == Outcome(keep_agent=False, exit_code=code, ended=ending)


async def test_target_gone_before_any_refresh_exits_3() -> None:
    source = FakeSource()
    source.fail = ConnectionLost("gone")
    source.ended = Ending(code=1)
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("q")
    assert app.return_value == Outcome(keep_agent=False, exit_code=3, ended=Ending(code=1))


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (AgentError("bad_args", "include must be a list"), "agent error bad_args"),
        (RuntimeError("boom"), "RuntimeError: boom"),
    ],
)
async def test_errors_are_shown_never_raised(error: Exception, shown: str) -> None:
    source = FakeSource()
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        source.fail = error
        await refresh(pilot)
        assert shown in status(app)
        source.fail = None
        await refresh(pilot)
        assert shown not in status(app)


# --- what reaches the terminal ---------------------------------------------------------


async def test_target_text_is_escaped_never_interpreted() -> None:
    source = FakeSource(sites=(HOSTILE, *SITES))
    app = make_app(source)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await pilot.press("down")
        line = table_lines(app)[2]
        assert "evil\\x1b[31m[bold]red.py:3" in line
        assert "print('\\x1b]0;pwned\\x07 [b]not bold[/b]')" in line
        assert all("\x1b" not in text and "\x07" not in text for text in table_lines(app))
        await pilot.press("enter")
        await settle(pilot)
        body = str(app.screen.query_one("#traceback-body").render())
        assert "evil\\x1b[31m[bold]red.py:3" in body and "\x1b" not in body
        assert "[bold]" in str(app.screen.query_one("#traceback-panel").border_title)


@pytest.mark.parametrize(("size", "narrow"), [((80, 24), True), ((120, 40), False)])
async def test_columns_fit_the_terminal(size: tuple[int, int], narrow: bool) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        assert app.has_class("narrow") is narrow
        heading = table_lines(app)[0]
        assert ("AVG" in heading) is not narrow and ("ΔCOUNT" in heading) is not narrow
        for text in [*table_lines(app), header(app), status(app)]:
            for line in text.splitlines():
                assert len(line.rstrip()) <= size[0]


async def test_stretched_table_says_how_old_it_is() -> None:
    source = FakeSource()
    source.stretched = True
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "table 8 s old · next in 3 s (5% budget)" in header(app)


@pytest.mark.parametrize("size", [(80, 24), (60, 20), (40, 15)])
async def test_a_stale_table_says_so_at_every_width(size: tuple[int, int]) -> None:
    source = FakeSource()
    source.stretched = True
    history = filled_history(source, ViewState().query, 20)
    app = MemtopApp(
        source,
        Query(),
        interval=1.0,
        clock=lambda: T0 + 90,
        cwd=CWD,
        autorefresh=False,
        history=history,
    )
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        assert (
            app.view is not None and app.view.suspect_count > 0
        )  # the part that used to push the notice out
        assert "table 8 s old" in header(app).splitlines()[1]


async def test_paused_header_counts_the_age_of_the_table_on_screen() -> None:
    source = FakeSource()
    now = [T0 + 90]
    app = MemtopApp(source, Query(), interval=1.0, clock=lambda: now[0], cwd=CWD, autorefresh=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("space")
        for _ in range(3):
            now[0] += 10
            await refresh(pilot)
        app._show_state()
        line = header(app).splitlines()[1]
        # The agent's newest table is fresh (0.1 s); the one on screen arrived 30 s ago.
        assert "paused, table 30 s old" in line
        await pilot.press("space")
        await settle(pilot)
        assert "paused" not in header(app) and "s old" not in header(app)


async def test_memory_panel_shows_the_rss_traced_story() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        labels = lines_of(app.query_one("#memory-labels", TextLines))
        assert labels[0].startswith("RSS") and labels[1].startswith("traced")
        assert labels[2].startswith("untraced")
        verdict = lines_of(app.query_one(MemoryPanel).query_one("#verdict", TextLines))[0]
        assert "of RSS" in verdict


def test_readme_documents_every_key() -> None:
    readme = (ROOT / "README.md").read_text()
    keys_section = readme.split("### Keys", 1)[1].split("\n## ", 1)[0]
    for key in KEYS:
        assert f"`{key.shown}`" in keys_section, key.shown


def test_sites_are_consistent() -> None:
    assert all(isinstance(site, Site) for site in SITES)


async def test_no_color_renders_every_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.no_color
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("escape", "question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and "<svg" in app.export_screenshot()
        await pilot.press("escape", "q")
    assert app.return_value == Outcome()


async def test_refreshes_come_every_interval() -> None:
    source = FakeSource()
    app = MemtopApp(source, Query(), interval=0.25, clock=lambda: T0, cwd=CWD)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(600):  # up to 30 s on a loaded machine; 0.75 s on an idle one
            if source.refreshes >= 3:
                break
            await pilot.pause(0.05)
        assert source.refreshes >= 3


@pytest.mark.parametrize("size", [(60, 20), (50, 16), (80, 24)])
async def test_small_terminals_cut_columns_never_a_line_number(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        lines = table_lines(app)
        assert "SIZE" in lines[0]
        for row, line in zip(app.table.keys, lines[1:], strict=False):
            site = next(s for s in SITES if f"{s.filename}:{s.lineno}" == row)
            assert len(line.rstrip()) <= size[0]
            if site.lineno:
                # The whole line number, followed by the source or the cell's end.
                assert re.search(rf":{site.lineno}(\s|$)", line), (row, line)


def test_help_for_the_sort_key_names_every_sort_it_cycles_through() -> None:
    from memtop.ui.texts import SORT_NAMES

    help_text = next(key.help for key in KEYS if key.action == "cycle_sort")
    for sort in SORTS:
        assert re.search(rf"(^|[ (]){re.escape(SORT_NAMES[sort])}[ ,)]", help_text), sort


async def test_the_clock_ticking_while_the_app_closes_is_harmless() -> None:
    # The 1 s timer can fire after the screen's widgets were removed (a loaded machine,
    # quitting): it used to look them up and fail with NoMatches.
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
    app._show_state()  # raised NoMatches when it looked the header up
    # A refresh that lands while the app closes draws the memory panel: the same.
    assert app.sample is not None
    app.memory_panel.show(app.sample, app.history, app.history.verdict())


async def test_record_gets_every_refresh_the_view_shows_with_its_verdict() -> None:
    """--record under the TUI: one JSON line per refresh, with the view's verdict."""
    out = io.StringIO()
    source = FakeSource()
    app = MemtopApp(
        source, Query(), 1.0, clock=lambda: T0 + 90, cwd=CWD, autorefresh=False,
        sinks=[Recorder(out)],
    )  # fmt: skip
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await refresh(pilot)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == app.shown == 2
    assert lines[-1]["rows"][0]["key"] == CACHE
    assert lines[-1]["verdict"] == app.history.verdict().text
