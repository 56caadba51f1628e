"""The live viewer: a Textual app over a data source.

The App is handed its source (the real agent connection, or a fake in tests) and a clock.
Every request to the agent runs in a worker thread; results come back as messages, and
the App hands the new state down to its widgets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.events import Resize
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer

from memtop.errors import EXIT_OK, EXIT_TARGET_GONE, ConnectionLost, MemtopError
from memtop.model import History, Query, Sample
from memtop.source import Source, wait_for_exit
from memtop.ui import keys
from memtop.ui.cells import NARROW_BELOW
from memtop.ui.filter_prompt import FilterPrompt
from memtop.ui.header_bar import HeaderBar
from memtop.ui.help_screen import HelpScreen
from memtop.ui.memory_panel import MemoryPanel
from memtop.ui.messages import (
    CommandDone,
    ConnectionDropped,
    Reconnected,
    RefreshFailed,
    SampleReady,
    TargetEnded,
)
from memtop.ui.status_line import StatusLine
from memtop.ui.texts import clock_time, format_interval
from memtop.ui.top_table import TopTable
from memtop.ui.traceback_panel import TracebackPanel
from memtop.ui.view_state import BadFilter, ViewState, parse_filter

# Actions that need the agent: greyed out while it cannot be reached.
AGENT_ACTIONS = {"set_baseline", "clear_baseline", "reset_peak"}
STATEFUL_ACTIONS = ("toggle_cumulative", *sorted(AGENT_ACTIONS))


@dataclass(frozen=True)
class Outcome:
    """How the user left: whether the agent stays serving, and the exit code."""

    keep_agent: bool = False
    exit_code: int = EXIT_OK


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
    ) -> None:
        """`autorefresh=False` refreshes only on mount and when asked (tests, screenshots)."""
        super().__init__()
        self.autorefresh = autorefresh
        self.source = source
        self.clock = clock
        self.cwd = os.getcwd() if cwd is None else cwd
        self.history = History() if history is None else history
        self.state = ViewState.from_query(query, interval)
        self.sample: Sample | None = None
        self.shown = 0
        self._busy = False
        self._again = False
        self._timer: Timer | None = None
        self._enabled: tuple[bool | None, ...] = ()

    # --- layout -------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield HeaderBar(self.source.info, self.state, id="header")
        yield MemoryPanel(id="memory")
        yield TopTable(cwd=self.cwd, id="top")
        yield StatusLine(self.state, id="status")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self._fit(self.size.width)
        self.query_one(TopTable).focus()
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
        self.query_one(TopTable).set_narrow(narrow)

    @property
    def table(self) -> TopTable:
        return self.query_one(TopTable)

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
        source = self.source
        try:
            if connection != "live":
                status = source.exit_status()
                if status is not None:
                    self.post_message(TargetEnded(status))
                    return
                source.reconnect()
                self.post_message(Reconnected())
            sample = source.refresh(query, max_age=interval * 0.9)
        except ConnectionLost as exc:
            status = wait_for_exit(source, 1.0)
            self.post_message(TargetEnded(status) if status else ConnectionDropped(exc.message))
        except MemtopError as exc:
            lost = connection != "live"  # a failed reconnect: keep trying
            self.post_message(
                ConnectionDropped(exc.message) if lost else RefreshFailed(exc.message)
            )
        except Exception as exc:  # never a raw traceback on screen
            self.post_message(RefreshFailed(f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(SampleReady(sample))

    def _fetched(self) -> None:
        self._busy = False
        if self._again:
            self._again = False
            self.refresh_now()

    def on_sample_ready(self, message: SampleReady) -> None:
        sample = message.sample
        self.history.add(sample)
        self.sample = sample
        self.shown += 1
        if self.state.error or not self.state.live:
            self.state = self.state.replace(error=None, connection="live", attempts=0)
        if sample.query == self.state.query and not self.state.paused:
            self.table.show(sample, self.history)
        self.query_one(MemoryPanel).show(sample, self.history, self.history.verdict())
        self._show_state()
        self._fetched()

    def on_refresh_failed(self, message: RefreshFailed) -> None:
        self._set_state(self.state.replace(error=message.error), refresh=False)
        self._fetched()

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
        self.query_one(HeaderBar).show(self.state, self.sample, now)
        self.query_one(StatusLine).show(self.state, waiting=self.sample is None)
        enabled = tuple(self.check_action(action, ()) for action in STATEFUL_ACTIONS)
        if enabled != self._enabled:
            # Only when it changes: the footer rebuilds its keys on every refresh_bindings.
            self._enabled = enabled
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out keys that do nothing in the current state."""
        state = self.state
        if action == "toggle_cumulative" and state.group_by == "traceback":
            return None
        if action in AGENT_ACTIONS and not state.live:
            return None
        if action == "clear_baseline" and state.baseline_time is None:
            return None
        return True

    # --- actions ------------------------------------------------------------------------

    def action_group(self, group_by: str) -> None:
        self._set_state(self.state.grouped(group_by))

    def action_toggle_cumulative(self) -> None:
        self._set_state(self.state.replace(cumulative=not self.state.cumulative))

    def action_cycle_sort(self) -> None:
        self._set_state(self.state.next_sort())

    def action_toggle_internal(self) -> None:
        self._set_state(self.state.replace(hide_internal=not self.state.hide_internal))

    def action_toggle_pause(self) -> None:
        paused = not self.state.paused
        self._set_state(self.state.replace(paused=paused))
        if not paused and self.sample is not None and self.sample.query == self.state.query:
            self.table.show(self.sample, self.history)

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

    def action_set_baseline(self) -> None:
        self._command("baseline", self.source.set_baseline)

    def action_clear_baseline(self) -> None:
        self._command("clear_baseline", self.source.clear_baseline)

    def action_reset_peak(self) -> None:
        self._command("reset_peak", self.source.reset_peak)

    def _command(self, action: str, call: Callable[[], None]) -> None:
        def work() -> None:
            try:
                call()
            except MemtopError as exc:
                self.post_message(CommandDone(action, exc.message))
            except Exception as exc:  # never a raw traceback on screen
                self.post_message(CommandDone(action, f"{type(exc).__name__}: {exc}"))
            else:
                self.post_message(CommandDone(action))

        self.run_worker(work, thread=True, exit_on_error=False, group="command")

    def on_command_done(self, message: CommandDone) -> None:
        if message.error is not None:
            self._say(f"{message.action}: {message.error}", severity="error")
            return
        if message.action == "baseline":
            now = self.clock()
            self._set_state(self.state.replace(baseline_time=now))
            self._say(f"Baseline set at {clock_time(now)}: Δ columns show growth since then.")
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

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        self.exit(self._outcome(keep_agent=False))

    def action_quit_keep_agent(self) -> None:
        self.exit(self._outcome(keep_agent=True))

    def _outcome(self, keep_agent: bool) -> Outcome:
        gone = self.shown == 0 and self.state.connection == "ended"
        return Outcome(keep_agent, EXIT_TARGET_GONE if gone else EXIT_OK)

    def _say(self, message: str, severity: SeverityLevel = "information") -> None:
        """A toast; short-lived unless it is a warning (toasts cover the table)."""
        timeout = 3.0 if severity == "information" else 6.0
        self.notify(message, severity=severity, timeout=timeout, markup=False)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every key's action in the command palette, by name."""
        yield from super().get_system_commands(screen)
        for key in keys.KEYS:
            title = f"{key.label} ({key.shown})"
            yield SystemCommand(title, key.help, partial(self.run_action, key.action))


def run_tui(source: Source, query: Query, interval: float) -> Outcome:
    """Run the viewer in this terminal until the user quits; no mouse capture, so the
    terminal's own text selection keeps working over SSH."""
    outcome = MemtopApp(source, query, interval).run(mouse=False)
    return outcome if outcome is not None else Outcome()
