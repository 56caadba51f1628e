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


GROUPING = "Rows"
DELTAS = "Deltas and memory"
VIEW = "View"
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
        "sort by size, Δsize, count, Δcount, growth (largest growth first), in turn",
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
    Key("question_mark", "?", "help", "Help", "this screen", VIEW, True),
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

SECTIONS = (GROUPING, DELTAS, VIEW, LEAVING)

# Table navigation is DataTable's own; listed on the help screen only.
NAVIGATION = (
    ("↑ ↓", "move the cursor; it stays on its row across refreshes"),
    ("PgUp PgDn", "a page up or down (Home, End: first, last row)"),
    ("ctrl+p", "command palette: every action by name"),
)


def bindings() -> list[BindingType]:
    """The App's key bindings (Enter belongs to the table, so it is left out here)."""
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
        if k.key != "enter"
    ]
    # Two more ways to say the same, for people used to them: no footer entries.
    out.append(Binding("equals_sign", "interval(1)", "Slower", show=False))
    out.append(Binding("ctrl+c", "quit", "Quit", show=False, priority=True))
    return out
