"""The live viewer: a Textual app over a data source.

The App is handed its source (the real agent connection, or a fake in tests) and a clock.
Every request to the agent runs in a worker thread; results come back as messages, and
the App hands the new state down to its widgets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.events import Key, Resize
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer

from memtop.compiled import compiled_hint
from memtop.ending import Ending
from memtop.errors import (
    EXIT_OK,
    EXIT_TARGET_GONE,
    AgentBusy,
    BadReply,
    ConnectionLost,
    MemtopError,
)
from memtop.formatting import clean_text, location
from memtop.history import History, Verdict
from memtop.model import CUMULATIVE_KEYS, Query, Refresh, gaps_note
from memtop.sink import Sink, feed
from memtop.source import (
    HeapInspection,
    LiveControls,
    LiveSource,
    Snapshots,
    Source,
    wait_for_exit,
)
from memtop.table_view import TableView, table_view
from memtop.ui import keys
from memtop.ui.cells import NARROW_BELOW
from memtop.ui.filter_prompt import FilterPrompt
from memtop.ui.header_bar import HeaderBar
from memtop.ui.help_screen import HelpScreen
from memtop.ui.memory_panel import MemoryPanel
from memtop.ui.messages import (
    AgentUnusable,
    CommandDone,
    ConnectionDropped,
    Reconnected,
    RefreshFailed,
    RefreshReady,
    TargetEnded,
    attempt,
)
from memtop.ui.referrers_panel import ReferrersPanel
from memtop.ui.save_snapshot import save_snapshot
from memtop.ui.status_line import StatusLine
from memtop.ui.suspects import suspect_note
from memtop.ui.texts import clock_time, format_interval
from memtop.ui.top_table import TopTable
from memtop.ui.traceback_panel import TracebackPanel
from memtop.ui.types_screen import TypesScreen
from memtop.ui.view_state import BadFilter, ViewState, parse_filter

STATEFUL_ACTIONS = ("toggle_cumulative", *sorted(keys.AGENT_ACTIONS | keys.LIVE_ONLY))
FILE_VERDICT = Verdict("collecting", "a saved snapshot: no history to read a trend from")


@dataclass(frozen=True)
class Outcome:
    """How the view ended: whether the agent stays serving, the exit code, and the error
    that ended it (an agent memtop cannot use), if any."""

    keep_agent: bool = False
    exit_code: int = EXIT_OK
    error: str | None = None
    ended: Ending | None = None  # how the target ended, when it did while watched


class MemtopApp(App[Outcome]):
    """top for the Python heap."""

    CSS_PATH = "memtop.tcss"
    TITLE = "memtop"
    BINDINGS: ClassVar[list[BindingType]] = keys.bindings()

    def __init__(
        self,
        source: Source,
        query: Query,
        interval: float = 1.0,
        *,
        clock: Callable[[], float] = time.time,
        cwd: str | None = None,
        history: History | None = None,
        autorefresh: bool = True,
        hide_internal: bool = True,
        sinks: Sequence[Sink] = (),
    ) -> None:
        """`autorefresh=False` refreshes only on mount and when asked (tests, screenshots).
        A source without LiveControls (a saved snapshot) never changes: it refreshes only
        when the query does. `sinks` get every refresh too (--record)."""
        super().__init__()
        # What the source can do besides its table; the keys of what it cannot are off.
        self.live = source if isinstance(source, LiveControls) else None
        self.heap = source if isinstance(source, HeapInspection) else None
        self.snapshots = source if isinstance(source, Snapshots) else None
        offline = self.live is None
        self.autorefresh = autorefresh and not offline
        self.source = source
        self.sinks = sinks
        if isinstance(source, LiveSource):
            # The table never waits for the agent's time budget: a busy reply is shown and
            # the refresh made again when the agent said (panels wait, showing they do).
            source.refresh_wait = 0.0
        self.clock = clock
        self.cwd = os.getcwd() if cwd is None else cwd
        self.history = History() if history is None else history
        self.state = ViewState.from_query(query, interval).replace(
            offline=offline, hide_internal=hide_internal
        )
        # FileSource names its file(s): 'b.memtop vs a.memtop' for a diff.
        self.file_label = (source.info.label or "saved snapshot") if offline else ""
        # What a file does not record (a tracemalloc pickle: RSS, peak, tracer...) is said
        # where its figures would be read.
        unknown = getattr(source, "unknown", ()) if offline else ()
        self.file_verdict = (
            Verdict(
                FILE_VERDICT.kind, f"{FILE_VERDICT.text}; not in the file: {', '.join(unknown)}"
            )
            if unknown
            else FILE_VERDICT
        )
        self.sample: Refresh | None = None
        self.arrived = 0.0  # when self.sample arrived, by self.clock
        self.on_screen: tuple[Refresh, float] | None = None  # the table's sample, its arrival
        self.view: TableView | None = None  # what the table shows
        self.shown = 0
        self._busy = False
        self._again = False
        # The grouping whose history the agent kept was last asked for: before the first
        # refresh (a viewer that left with the agent serving, `Q`) and at each new grouping.
        self._seeded: tuple[object, ...] | None = None
        self._saving = False
        self._note: Text | None = None  # the selected row's suspect reading
        self._hint: Text | None = None  # about the whole table (memtop.compiled)
        self._timer: Timer | None = None
        self._enabled: tuple[bool | None, ...] = ()

    # --- layout -------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # Kept by reference: App.query_one searches the screen on top, which is a panel or
        # the types view while one is open, and refreshes and the clock go on under it.
        self.header_bar = HeaderBar(self.source.info, self.state, file=self.file_label, id="header")
        self.memory_panel = MemoryPanel(id="memory")
        self.top_table = TopTable(cwd=self.cwd, id="top")
        self.status_line = StatusLine(self.state, id="status")
        self.footer_bar = Footer(show_command_palette=False)
        yield from (
            self.header_bar,
            self.memory_panel,
            self.top_table,
            self.status_line,
            self.footer_bar,
        )

    def on_mount(self) -> None:
        self._fit(self.size.width)
        self.top_table.focus()
        self._timer = self.set_interval(
            self.state.interval, self.refresh_now, pause=not self.autorefresh
        )
        self.set_interval(1.0, self._show_state)  # the uptime keeps counting
        self._show_state()
        self.refresh_now()

    def on_resize(self, event: Resize) -> None:
        self._fit(event.size.width)

    def _fit(self, width: int) -> None:
        narrow = width < NARROW_BELOW
        self.set_class(narrow, "narrow")
        self.top_table.set_narrow(narrow)
        self.footer_bar.compact = narrow  # every footer key fits in 80 columns

    @property
    def table(self) -> TopTable:
        return self.top_table

    @property
    def refreshing(self) -> bool:
        """A refresh is under way."""
        return self._busy

    # --- refreshing ---------------------------------------------------------------------

    def refresh_now(self) -> None:
        """Ask for a refresh, unless one is on its way (then ask again when it lands)."""
        if self.state.connection == "ended":
            return
        if self._busy:
            self._again = True
            return
        self._busy = True
        state = self.state
        fetch = partial(self._fetch, state.query, state.interval, state.connection)
        self.run_worker(fetch, thread=True, exit_on_error=False, group="refresh")

    def _fetch(self, query: Query, interval: float, connection: str) -> None:
        """Worker thread: one refresh (reconnecting first if the connection dropped)."""
        source, live = self.source, self.live
        try:
            if connection != "live" and live is not None:
                status = live.exit_status()
                if status is not None:
                    self.post_message(TargetEnded(status))
                    return
                live.reconnect()
                self.post_message(Reconnected())
            seed = None
            grouping = (query.group_by, query.cumulative, query.include, query.exclude)
            if live is not None and grouping != self._seeded:
                seed = live.resume(query)
                self._seeded = grouping
            sample = source.refresh(query, max_age=interval * 0.9)
        except ConnectionLost as exc:
            status = wait_for_exit(live, 1.0) if live is not None else None
            self.post_message(TargetEnded(status) if status else ConnectionDropped(exc.message))
        except BadReply as exc:
            self.post_message(AgentUnusable(exc.message, exc.exit_code))
        except AgentBusy as exc:
            self.post_message(RefreshFailed(exc.message, exc.retry_in))
        except MemtopError as exc:
            lost = connection != "live"  # a failed reconnect: keep trying
            self.post_message(
                ConnectionDropped(exc.message) if lost else RefreshFailed(exc.message)
            )
        except Exception as exc:  # never a raw traceback on screen
            self.post_message(RefreshFailed(f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(RefreshReady(sample, seed))

    def _fetched(self) -> None:
        self._busy = False
        if self._again:
            self._again = False
            self.refresh_now()

    def on_refresh_ready(self, message: RefreshReady) -> None:
        sample = message.sample
        if self.sample is not None and sample.sampler_gaps > self.sample.sampler_gaps:
            self._say(gaps_note(sample.sampler_gaps), severity="warning")
        # A group's notes (a worker dropped out, joined, stopped answering): the text view
        # writes them to stderr, which is under this screen.
        take_notes = getattr(self.source, "take_notes", None)
        for note in take_notes() if take_notes is not None else ():
            self._say(clean_text(note), severity="warning")
        self.history.seed(message.seed)
        self.history.add(sample)
        feed(self.sinks, sample, self.history)
        self.sample, self.arrived = sample, self.clock()
        self.shown += 1
        hint = compiled_hint(sample, sample.extension_modules)
        self._hint = (
            Text(hint.text(location(hint.row.filename, hint.row.lineno, 40, self.cwd)))
            if hint is not None
            else None
        )
        if self.state.error or not self.state.live:
            self.state = self.state.replace(error=None, connection="live", attempts=0)
        if sample.query == self.state.query and not self.state.paused:
            self._draw_table(sample)
        verdict = self.file_verdict if self.state.offline else self.history.verdict()
        self.memory_panel.show(sample, self.history, verdict)
        self._show_state()
        self._fetched()

    def on_refresh_failed(self, message: RefreshFailed) -> None:
        self._set_state(self.state.replace(error=message.error), refresh=False)
        self._fetched()
        if message.retry_in is not None:
            # A busy agent said when to ask again: the table comes then, timer or not.
            self.set_timer(message.retry_in, self.refresh_now)

    def on_connection_dropped(self, message: ConnectionDropped) -> None:
        state = self.state
        attempts = state.attempts + 1 if state.connection == "lost" else 0
        self._set_state(
            state.replace(connection="lost", error=message.error, attempts=attempts), refresh=False
        )
        self._fetched()

    def on_reconnected(self, message: Reconnected) -> None:
        if self.state.baseline_time is not None:
            # The agent keeps a baseline per connection: the new one has none.
            self._say(
                "Reconnected to the agent. The baseline was lost with the old connection; "
                "press b to set a new one.",
                severity="warning",
            )
        else:
            self._say("Reconnected to the agent.")
        self._set_state(self.state.replace(baseline_time=None))

    def on_agent_unusable(self, message: AgentUnusable) -> None:
        # Nothing on screen can be trusted or refreshed: leave, and say why (cli prints it).
        self.exit(Outcome(exit_code=message.exit_code, error=message.error))

    def on_target_ended(self, message: TargetEnded) -> None:
        # The status line says so, in words and colour; a toast would cover it.
        self._set_state(self.state.replace(connection="ended", ended=message.status), refresh=False)
        self._busy = False
        self._again = False

    # --- state --------------------------------------------------------------------------

    def _set_state(self, state: ViewState, refresh: bool = True) -> None:
        """Adopt a new state; a new query is asked for at once."""
        changed = state.query != self.state.query
        self.state = state
        self._show_state()
        if refresh and changed:
            if self._timer is not None and self.autorefresh:
                self._timer.reset()  # the next periodic refresh a whole interval from now
            self.refresh_now()

    def _show_state(self) -> None:
        now = self.clock()
        header = self.header_bar
        suspects = self.view.suspect_count if self.view is not None else 0
        header.show(self.state, self.sample, now, suspects, self.on_screen)
        self.status_line.show(self.state, self.sample is None, self._note, self._hint)
        enabled = tuple(self.check_action(action, ()) for action in STATEFUL_ACTIONS)
        if enabled != self._enabled:
            # Only when it changes: the footer rebuilds its keys on every refresh_bindings.
            self._enabled = enabled
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out keys that do nothing in the current state."""
        state = self.state
        if action == "toggle_cumulative" and state.group_by not in CUMULATIVE_KEYS:
            return None
        if self._lacks(action) is not None:
            return None
        if action in keys.AGENT_ACTIONS and not state.live:
            return None
        if action == "clear_baseline" and state.baseline_time is None:
            return None
        return True

    def _lacks(self, action: str) -> str | None:
        """Why the source cannot do `action` (None: it can)."""
        if action in keys.LIVE_ONLY and self.live is None:
            return "needs the live process; a saved snapshot does not change"
        if (action in keys.HEAP_ACTIONS and self.heap is None) or (
            action in keys.SNAPSHOT_ACTIONS and self.snapshots is None
        ):
            pids = " ".join(str(pid) for pid in sorted(getattr(self.source, "members", ())))
            return f"walks one process's heap: run `memtop PID` for one of {pids}"
        return None

    def on_key(self, event: Key) -> None:
        """A key this source cannot serve (live-only on a saved snapshot, a heap walk of a
        group): say why nothing happens."""
        name, action = keys.MAIN_KEYS.get(event.key, ("", ""))
        why = self._lacks(action)
        if why is not None:
            self._say(f"{name}: {why}.")

    # --- actions ------------------------------------------------------------------------

    def action_group(self, group_by: str) -> None:
        self._set_state(self.state.grouped(group_by))

    def action_toggle_cumulative(self) -> None:
        self._set_state(self.state.replace(cumulative=not self.state.cumulative))

    def action_cycle_sort(self) -> None:
        state = self.state.next_sort()
        same_query = state.query == self.state.query  # growth and suspects ask the same
        self._set_state(state)
        if same_query:
            self._show_table()

    def _show_table(self) -> None:
        """Show the last refresh again (the order changed, not the query)."""
        sample = self.sample
        if sample is not None and sample.query == self.state.query and not self.state.paused:
            self._draw_table(sample)
            self._show_state()

    def _draw_table(self, sample: Refresh) -> None:
        """Lay the refresh out once (memtop.table_view); the table and header draw it."""
        self.view = table_view(sample, self.history, self.state.suspects_first)
        self.table.show(self.view)
        self.on_screen = (sample, self.arrived)

    def action_cycle_process(self) -> None:
        """A group: the merged table, then each process on its own, in turn."""
        members = getattr(self.source, "members", None)
        if not members:
            self._say("p: watching one process; `memtop PID --children` watches a pool.")
            return
        order: list[int | None] = [None, *sorted(members)]
        current = getattr(self.source, "focus", None)
        focus = order[(order.index(current) + 1) % len(order)] if current in order else None
        self.source.focus = focus  # type: ignore[attr-defined]
        self.history = History()  # one process's trend is not the group's
        self._set_state(self.state.replace(process=focus), refresh=False)
        self._say(
            f"Showing pid {focus} on its own; p shows the next." if focus is not None
            else f"Showing the {len(members)} processes merged."
        )  # fmt: skip
        self.refresh_now()

    def action_toggle_internal(self) -> None:
        self._set_state(self.state.replace(hide_internal=not self.state.hide_internal))

    def action_toggle_pause(self) -> None:
        paused = not self.state.paused
        self._set_state(self.state.replace(paused=paused))
        if not paused:
            self._show_table()

    def action_interval(self, step: int) -> None:
        state = self.state.stepped_interval(step)
        if state.interval == self.state.interval:
            self._say(f"Interval stays {format_interval(state.interval)}.")
            return
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(
            state.interval, self.refresh_now, pause=not self.autorefresh
        )
        self._set_state(state)
        self._say(f"Refreshing every {format_interval(state.interval)}.")

    def action_filter(self) -> None:
        current = " ".join(self.state.patterns)
        self.push_screen(FilterPrompt(current), self._filter_chosen)

    def _filter_chosen(self, text: str | None) -> None:
        if text is None:
            return
        try:
            patterns = parse_filter(text)
        except BadFilter as exc:
            self._say(f"Filter not applied: {exc}.", severity="error")
            return
        self._set_state(self.state.replace(patterns=patterns))

    def action_toggle_mode(self) -> None:
        current = self.sample.mode if self.sample is not None else self.source.info.mode
        target = "exact" if current == "sampled" else "sampled"
        self._say(f"Switching to {target} mode…")
        if self.live is not None:
            self._command("mode", partial(self.live.set_mode, target, None))

    def action_set_baseline(self) -> None:
        if self.live is not None:
            self._command("baseline", self.live.set_baseline)

    def action_clear_baseline(self) -> None:
        if self.live is not None:
            self._command("clear_baseline", self.live.clear_baseline)

    def action_reset_peak(self) -> None:
        if self.live is not None:
            self._command("reset_peak", self.live.reset_peak)

    def action_save_snapshot(self) -> None:
        if self.snapshots is None:
            return
        if self._saving:
            self._say("A snapshot is being saved already.")
            return
        self._saving = True
        self._say("Saving a snapshot…")
        self._command("snapshot", partial(save_snapshot, self.snapshots))

    def _command(self, action: str, call: Callable[[], str | None]) -> None:
        def work() -> None:
            result, error = attempt(call)
            self.post_message(CommandDone(action, error, result))

        self.run_worker(work, thread=True, exit_on_error=False, group="command")

    def on_command_done(self, message: CommandDone) -> None:
        if message.action == "snapshot":
            self._saving = False
        if message.error is not None:
            self._say(f"{message.action}: {clean_text(message.error)}", severity="error")
            return
        if message.action == "snapshot":
            self._say(message.result or "Snapshot saved.")
        elif message.action == "baseline":
            now = self.clock()
            self._set_state(self.state.replace(baseline_time=now))
            self._say(f"Baseline set at {clock_time(now)}: Δ columns show growth since then.")
        elif message.action == "mode":
            self.header_bar.info = self.source.info
            self._set_state(self.state.replace(baseline_time=None))
            self._say(message.result or "Mode switched.")
            self.refresh_now()
        elif message.action == "clear_baseline":
            self._set_state(self.state.replace(baseline_time=None))
            self._say("Baseline cleared: Δ columns show change per refresh.")
        else:
            self._say("Traced peak reset.")
            self.refresh_now()

    def action_tracebacks(self) -> None:
        row = self.table.selected_row()
        if row is None:
            return
        nframe = self.sample.nframe if self.sample is not None else self.source.info.nframe
        query = self.sample.query if self.sample is not None else self.state.query
        panel = TracebackPanel(
            self.source, query, row, nframe, self.source.info.tracing_owner, self.cwd
        )
        self.push_screen(panel)

    def on_top_table_selected(self, event: TopTable.Selected) -> None:
        self.action_tracebacks()

    def on_top_table_highlighted(self, event: TopTable.Highlighted) -> None:
        row, suspect = event.row, event.suspect
        self._note = suspect_note(row, suspect, self.cwd) if row and suspect else None
        self.status_line.show(self.state, self.sample is None, self._note, self._hint)

    def action_types(self) -> None:
        if self.heap is not None:
            self.push_screen(TypesScreen(self.heap, self.cwd))

    def action_who_keeps_alive(self) -> None:
        row = self.table.selected_row()
        if row is None:
            return
        if self.state.group_by != "lineno" or self.state.cumulative:
            self._say(
                "Who keeps it alive looks for an object allocated at a source line: group by "
                "line (l, cumulative off), or find the type in the types view (o).",
                severity="warning",
            )
            return
        if self.heap is not None:
            self.push_screen(ReferrersPanel(self.heap, row=row, cwd=self.cwd))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        self.exit(self._outcome(keep_agent=False))

    def action_quit_keep_agent(self) -> None:
        self.exit(self._outcome(keep_agent=True))

    def _outcome(self, keep_agent: bool) -> Outcome:
        """memtop's exit code: after the target ended, its own status (memtop.ending)."""
        ended = self.state.ended
        if self.state.connection != "ended" or ended is None:
            return Outcome(keep_agent, EXIT_OK)
        code = ended.exit_status if self.shown else EXIT_TARGET_GONE
        return Outcome(keep_agent, code, ended=ended)

    def _say(self, message: str, severity: SeverityLevel = "information") -> None:
        """A toast; short-lived unless it is a warning (toasts cover the table)."""
        timeout = 3.0 if severity == "information" else 6.0
        self.notify(message, severity=severity, timeout=timeout, markup=False)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every key's action in the command palette, by name (not those the source cannot
        serve: live-only ones on a saved snapshot, heap walks of a group)."""
        yield from super().get_system_commands(screen)
        for key in keys.KEYS:
            if key.screen != "main" or self._lacks(key.action.split("(")[0]) is not None:
                continue
            title = f"{key.label} ({key.shown})"
            yield SystemCommand(title, key.help, partial(self.run_action, key.action))


def run_tui(
    source: Source,
    query: Query,
    interval: float,
    hide_internal: bool = True,
    sinks: Sequence[Sink] = (),
) -> Outcome:
    """Run the viewer in this terminal until the user quits; no mouse capture, so the
    terminal's own text selection keeps working over SSH."""
    app = MemtopApp(source, query, interval, hide_internal=hide_internal, sinks=sinks)
    outcome = app.run(mouse=False)
    return outcome if outcome is not None else Outcome()
