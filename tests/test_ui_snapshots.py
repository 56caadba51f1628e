"""SVG snapshots of every screen at 80x24 and 120x40, over a scripted source and a fixed
clock. Update them with `pytest --snapshot-update` after an intended change, and look at
the report (snapshot_report.html) before committing."""

from __future__ import annotations

import pytest
from ui_fakes import CWD, T0, FakeSource, filled_history, settle

from memtop.ending import Ending
from memtop.errors import ConnectionLost
from memtop.model import Query, Tracing
from memtop.ui.app import MemtopApp
from memtop.ui.view_state import ViewState

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


def watched_app(source: FakeSource | None = None) -> MemtopApp:
    """An app that has been watching for a minute (charts and trends filled)."""
    source = source or FakeSource()
    query = Query()
    history = filled_history(source, ViewState.from_query(query, 1.0).query)
    return MemtopApp(
        source, query, 1.0, clock=lambda: T0 + 61, cwd=CWD, history=history, autorefresh=False
    )


async def settled(pilot) -> None:  # type: ignore[no-untyped-def]
    await settle(pilot)


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """Header (pid, python, run, uptime, interval, nframe; grouping, sort, rows, pause),
    RSS and traced charts, the traced/untraced bar, the verdict 'traced +… Python objects
    accumulating', the table with app/cache.py:42 first (red Δsize, rising trend), the
    status line and the footer keys; at 80 columns no AVG or ΔCOUNT column."""
    assert snap_compare(watched_app(), terminal_size=size, run_before=settled)


@pytest.mark.parametrize("size", SIZES)
def test_sampled_main_screen(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """Sampled mode: the header's first line reads 'sampled 1/256 KiB ±' and the cost; the
    table has a ±SIZE column next to SIZE at both widths."""
    app = watched_app(FakeSource(mode="sampled"))
    assert snap_compare(app, terminal_size=size, run_before=settled)


@pytest.mark.parametrize("size", SIZES)
def test_attached_main_screen(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """After an attach that started tracing 2 minutes ago: the header's second line ends
    with 'tracing since attach 2 min ago: older memory is not in the table' at 120
    columns, 'traced since attach 2 min ago' at 80."""
    source = FakeSource()
    source.tracing = Tracing("5f0c2a9e41d7", T0 - 59, "agent", sees_only_new=True)
    assert snap_compare(watched_app(source), terminal_size=size, run_before=settled)


@pytest.mark.parametrize("size", SIZES)
def test_traceback_panel(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """The panel for app/cache.py:42: two tracebacks (75 % and 25 % of the row), each
    frame with its source line, the allocating frame marked with →; 'Esc closes'."""

    async def open_panel(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(watched_app(), terminal_size=size, run_before=open_panel)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """Every key by section (Rows, Deltas and memory, View, Leaving), then moving around
    and how to read the screen; at 80x24 the start of the list, scrollable."""

    async def open_help(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(watched_app(), terminal_size=size, run_before=open_help)


@pytest.mark.parametrize("size", SIZES)
def test_paused(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """The status line reads 'PAUSED: table frozen, memory live · space resumes' on an
    accent background; the table still shows the rows from before the pause."""

    async def pause(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.press("space")
        pilot.app.refresh_now()
        await settle(pilot)

    assert snap_compare(watched_app(), terminal_size=size, run_before=pause)


@pytest.mark.parametrize("size", SIZES)
def test_disconnected(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """The status line reads '⚠ agent connection lost: reconnecting…' on a warning
    background, the last table stays on screen."""
    source = FakeSource()

    async def drop(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        source.fail = ConnectionLost("the agent closed the connection")
        source.reconnect_fails = 10
        pilot.app.refresh_now()
        await settle(pilot)

    assert snap_compare(watched_app(source), terminal_size=size, run_before=drop)


@pytest.mark.parametrize("size", SIZES)
def test_target_exited(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """The status line reads '■ target exited with code 1: last refresh kept on screen
    · q quits' on an error background; the last table stays on screen."""
    source = FakeSource()

    async def end(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        source.fail = ConnectionLost("the agent closed the connection")
        source.ended = Ending(code=1)
        pilot.app.refresh_now()
        await settle(pilot)

    assert snap_compare(watched_app(source), terminal_size=size, run_before=end)


@pytest.mark.parametrize("size", SIZES)
def test_suspects_sort(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """Sorted by suspects: app/cache.py:42 and app/sessions.py:17 first with ▲ beside
    their rank, 'sort suspects' and '▲ 2 suspects' in the header, at 120 columns a
    RATE/MIN▼ column (+6.9 MiB, +527 KiB), and the status line reading '▲ suspect
    app/cache.py:42: +6.9 MiB/min over 61 tables (confidence 100%)'."""

    async def sort(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.press(*"sssss")
        await settle(pilot)

    assert snap_compare(watched_app(), terminal_size=size, run_before=sort)


async def open_types(pilot, *keys: str) -> None:  # type: ignore[no-untyped-def]
    """The types view after a second walk (so Δ columns show growth), then `keys`."""
    await settle(pilot)
    for key in ("o", "u", *keys):
        await pilot.press(key)
        await settle(pilot)


@pytest.mark.parametrize("size", SIZES)
def test_types_view(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """The types view: 'gc walk: 23 ms over … objects in 26 types · Δ since the previous
    look at …', the limits in dim text (containers only; strings, bytes and numbers in the
    allocation rows; shallow sizes; no origins before tracing or on 3.11; walks only when
    asked), the table sorted by growth (dict, app.sessions.Session, app.cache.Item first,
    red Δ columns), and the footer keys ⏎ Origins, u Update, b Mark, w Who keeps it alive,
    Esc Close."""
    assert snap_compare(watched_app(), terminal_size=size, run_before=open_types)


@pytest.mark.parametrize("size", SIZES)
def test_origins_panel(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """'Where app.sessions.Session instances were allocated': '200 newest instances sampled
    · 2 allocation sites', site #1 (150, 75%) main.py:10 → app/views.py:31 → allocating
    app/sessions.py:17 marked →, each with its source line; site #2 (50, 25%)."""

    async def origins(pilot) -> None:  # type: ignore[no-untyped-def]
        await open_types(pilot, "down", "enter")

    assert snap_compare(watched_app(), terminal_size=size, run_before=origins)


@pytest.mark.parametrize("size", SIZES)
def test_referrers_panel(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """'Who keeps it alive: the newest app.sessions.Session': root first, one step per
    line — module app.sessions  global SESSIONS / → app.sessions.SessionStore  ._sessions /
    → dict  ['8a9f03c2'] / → app.sessions.Session ← this object — then 'allocated at'
    main.py:10, app/sessions.py:17."""

    async def chain(pilot) -> None:  # type: ignore[no-untyped-def]
        await open_types(pilot, "down", "w")

    assert snap_compare(watched_app(), terminal_size=size, run_before=chain)
