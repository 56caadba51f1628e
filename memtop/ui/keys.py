"""Every key of the viewer, said once: the footer, the `?` screen, the command palette and
the README's key table are all made from this list (a test checks the README)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType


@dataclass(frozen=True)
class Key:
    """One key: what it does, its footer label, and its line on the help screen."""

    key: str  # Textual key name
    shown: str  # how the key is written for people
    action: str
    label: str  # footer and command palette title
    help: str
    section: str
    footer: bool = False
    screen: str = "main"  # main | types (the types view's own keys)


GROUPING = "Rows"
DELTAS = "Deltas and memory"
VIEW = "View"
LEAKS = "Leak hunting"
TYPES = "In the types view (o)"
LEAVING = "Leaving"

KEYS: tuple[Key, ...] = (
    Key("l", "l", "group('lineno')", "Lines", "group by source line (file:line)", GROUPING, True),
    Key("f", "f", "group('filename')", "Files", "group by file", GROUPING, True),
    Key(
        "t",
        "t",
        "group('traceback')",
        "Tracebacks",
        "group by whole traceback (as deep as --nframe)",
        GROUPING,
        True,
    ),
    Key(
        "c",
        "c",
        "toggle_cumulative",
        "Cumulative",
        "count every frame of a traceback, not only the allocating one",
        GROUPING,
    ),
    Key(
        "s",
        "s",
        "cycle_sort",
        "Sort",
        "sort by size, Δsize, count, Δcount, growth (largest growth first), suspects "
        "(steady growers first, by rate), in turn",
        GROUPING,
        True,
    ),
    Key(
        "slash",
        "/",
        "filter",
        "Filter",
        "show only files matching patterns (fnmatch, e.g. *cache*); empty clears",
        GROUPING,
    ),
    Key(
        "x",
        "x",
        "toggle_internal",
        "Internals",
        "hide or show importlib, <unknown> and memtop's own allocations",
        GROUPING,
    ),
    Key(
        "b",
        "b",
        "set_baseline",
        "Baseline",
        "set a baseline: Δ columns show growth since then",
        DELTAS,
        True,
    ),
    Key(
        "B",
        "B",
        "clear_baseline",
        "Clear baseline",
        "Δ columns since the previous table again",
        DELTAS,
    ),
    Key("r", "r", "reset_peak", "Reset peak", "reset tracemalloc's traced peak", DELTAS),
    Key(
        "space",
        "space",
        "toggle_pause",
        "Pause",
        "freeze the table (memory keeps updating)",
        VIEW,
        True,
    ),
    Key(
        "m",
        "m",
        "toggle_mode",
        "Mode",
        "switch between sampled mode (estimates with ± error bars, a few percent of cost) "
        "and exact mode (tracemalloc: every allocation, 5-25x slower; starts tracing afresh)",
        VIEW,
    ),
    Key("plus", "+", "interval(1)", "Slower", "refresh less often (longer interval)", VIEW),
    Key("minus", "-", "interval(-1)", "Faster", "refresh more often (shorter interval)", VIEW),
    Key(
        "enter",
        "Enter",
        "tracebacks",
        "Tracebacks of row",
        "the selected row's heaviest tracebacks, with source (Esc closes)",
        VIEW,
    ),
    Key(
        "p",
        "p",
        "cycle_process",
        "Process",
        "watching several processes: the merged table, then each process on its own, in turn",
        VIEW,
    ),
    Key("question_mark", "?", "help", "Help", "this screen", VIEW, True),
    Key(
        "o",
        "o",
        "types",
        "Types",
        "objects by type from the gc, sorted by growth: where they were allocated, "
        "what keeps them alive",
        LEAKS,
        True,
    ),
    Key(
        "w",
        "w",
        "who_keeps_alive",
        "Who keeps it alive",
        "what keeps an object allocated at the selected line alive: the chain of "
        "references from a global, a class or a thread (line grouping)",
        LEAKS,
    ),
    Key(
        "S",
        "S",
        "save_snapshot",
        "Save snapshot",
        "save every trace to memtop-PID-TIME.memtop here (`memtop view FILE` opens it)",
        LEAKS,
    ),
    Key(
        "u",
        "u",
        "update",
        "Update",
        "walk the gc again (only when asked: a walk costs the program ms to seconds)",
        TYPES,
        True,
        screen="types",
    ),
    Key(
        "b",
        "b",
        "mark",
        "Mark",
        "mark a baseline: Δ columns count from now",
        TYPES,
        True,
        screen="types",
    ),
    Key(
        "enter",
        "Enter",
        "origins",
        "Origins",
        "where the selected type's instances were allocated, each frame with its source",
        TYPES,
        screen="types",
    ),
    Key(
        "w",
        "w",
        "who_keeps_alive",
        "Who keeps it alive",
        "the chain of references from a root to one instance of the selected type",
        TYPES,
        True,
        screen="types",
    ),
    Key("escape", "Esc", "dismiss", "Close", "back to the table (q too)", TYPES, True, "types"),
    Key(
        "q",
        "q",
        "quit",
        "Quit",
        "quit: detach (tracing stops if memtop started it); under run/demo stop the program",
        LEAVING,
        True,
    ),
    Key(
        "Q",
        "Q",
        "quit_keep_agent",
        "Quit, keep agent",
        "quit but leave the agent serving: `memtop PID` resumes later",
        LEAVING,
    ),
)

# Actions that need the agent: greyed out while it cannot be reached.
AGENT_ACTIONS = {
    "toggle_mode",
    "set_baseline",
    "clear_baseline",
    "reset_peak",
    "types",
    "who_keeps_alive",
    "save_snapshot",
}
# Actions that mean nothing for a saved snapshot (memtop view FILE): greyed out, and a key
# press says why.
LIVE_ONLY = {
    "toggle_mode",
    "toggle_pause",
    "interval",
    "set_baseline",
    "clear_baseline",
    "reset_peak",
    "types",
    "who_keeps_alive",
}
# Actions that walk one process's heap (a source with HeapInspection), and that save its
# snapshot (Snapshots): a group of processes has neither.
HEAP_ACTIONS = {"types", "who_keeps_alive"}
SNAPSHOT_ACTIONS = {"save_snapshot"}
# The main screen's keys by Textual key name: (footer label, action name).
MAIN_KEYS = {
    key.key: (key.label, key.action.split("(")[0]) for key in KEYS if key.screen == "main"
} | {"equals_sign": ("Slower", "interval")}

SECTIONS = (GROUPING, DELTAS, VIEW, LEAKS, LEAVING, TYPES)

# Table navigation is DataTable's own; listed on the help screen only.
NAVIGATION = (
    ("↑ ↓", "move the cursor; it stays on its row across refreshes"),
    ("PgUp PgDn", "a page up or down (Home, End: first, last row)"),
    ("ctrl+p", "command palette: every action by name"),
)


def bindings(screen: str = "main") -> list[BindingType]:
    """The key bindings of the App (main) or of the types view (Enter belongs to the
    tables, so it is left out here)."""
    grouping = Binding.Group("Group", compact=True)  # "lft Group" in the footer
    out: list[BindingType] = [
        Binding(
            k.key,
            k.action,
            k.label,
            show=k.footer,
            key_display=k.shown,
            group=grouping if k.action.startswith("group(") else None,
        )
        for k in KEYS
        if k.key != "enter" and k.screen == screen
    ]
    if screen != "main":
        out.append(Binding("q", "dismiss", "Close", show=False))
        return out
    # Two more ways to say the same, for people used to them: no footer entries.
    out.append(Binding("equals_sign", "interval(1)", "Slower", show=False))
    out.append(Binding("ctrl+c", "quit", "Quit", show=False, priority=True))
    return out
