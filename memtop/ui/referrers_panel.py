"""Who keeps it alive: the chain of references from a root (a module's global, a class, a
thread's frame) down to one sample object, root first, one step per line (Esc closes)."""

from __future__ import annotations

from rich.text import Text

from memtop.formatting import clean_text, location
from memtop.leaks import NOT_SHOWN, ReferrerChain, values_not_shown
from memtop.model import Row
from memtop.source import HeapInspection
from memtop.ui.detail_panel import DetailPanel
from memtop.ui.messages import ChainReady, attempt_or_wait

CUT = (
    "the walk was cut short (it is bounded in time and size so the program is not held up): "
    "a longer chain may exist"
)


NOT_SHOWN_WHY = (
    "showing it would run the program's own code (its __repr__, __eq__ or a property) in "
    "memtop's thread inside the program, which memtop never does"
)


def chain_text(chain: ReferrerChain, cwd: str | None = None) -> Text:
    """Root first, one step per line: what it is, then how it refers to the next step; the
    object itself last. Then where the object was allocated, and notes."""
    out = Text()
    if chain.found:
        last = len(chain.steps) - 1
        for index, step in enumerate(chain.steps):
            root = index == 0 and bool(step.root)
            out.append("  " if index == 0 else "→ ", style="dim")
            if root and step.frame is not None:
                # thread worker · handle() at app/jobs.py:12  local job
                out.append(f"thread {clean_text(step.thread)}", style="bold")
                out.append(" · ", style="dim")
                out.append(clean_text(f"{step.function}() at "))
                out.append(location(step.frame.filename, step.frame.lineno, 30, cwd))
            else:
                out.append(clean_text(step.root if root else step.type_name), style="bold")
            if step.edge:
                out.append("  ")
                out.append(clean_text(step.edge), style="italic")
            if index == last:
                out.append("   ← this object", style="dim")
            out.append("\n")
    else:
        out.append("No chain to a root found: ", style="bold")
        out.append(clean_text(chain.reason or "the walk ended without reaching a root"))
        out.append("\n")
    if chain.cut:
        out.append(f"\n{CUT}\n", style="bold")
    if chain.allocated_at:
        out.append("\nallocated at (oldest frame first)\n", style="dim")
        for frame in chain.allocated_at:
            out.append(f"    {location(frame.filename, frame.lineno, 100, cwd)}\n")
    if chain.note:
        out.append("\nno allocation traceback: ", style="bold")
        out.append(clean_text(chain.note) + "\n")
    if values_not_shown(chain):
        out.append(f"\n{NOT_SHOWN}: ", style="bold")
        out.append(NOT_SHOWN_WHY + "\n")
    return out


class ReferrersPanel(DetailPanel):
    """What keeps the newest instance of a type, or an object allocated at a row's line,
    alive."""

    def __init__(
        self,
        source: HeapInspection,
        *,
        type_name: str | None = None,
        row: Row | None = None,
        cwd: str | None = None,
    ) -> None:
        if type_name is not None:
            what = f"the newest {clean_text(type_name)}"
        elif row is not None:
            what = f"an object allocated at {location(row.filename, row.lineno, 60, cwd)}"
        else:
            raise ValueError("a referrer chain needs a type or a row")
        super().__init__(
            f"Who keeps it alive: {what}",
            Text(
                f"References from a root (a module's global, a class, a thread's frame) "
                f"down to {what}, root first:"
            ),
            "walking the gc's referrers (at most a few seconds)…",
        )
        self.source = source
        self.type_name = type_name
        self.row = row
        self.cwd = cwd
        self.chain: ReferrerChain | None = None

    def fetch(self) -> None:
        chain, error, retry_in = attempt_or_wait(
            lambda: self.source.referrers(type_name=self.type_name, row=self.row)
        )
        self.post_message(ChainReady(chain, error, retry_in))

    def on_chain_ready(self, message: ChainReady) -> None:
        if message.chain is None and message.retry_in is not None:
            # The agent's time budget is spent: say so and ask once it allows.
            error = clean_text(message.error or "")
            self.set_body(Text(f"{error}; asking again in {message.retry_in:.1f} s"))
            self.set_timer(message.retry_in, self.on_mount)
            return
        if message.chain is None:
            error = clean_text(message.error or "")
            self.set_body(Text(f"could not walk the referrers: {error}", style="bold"))
            return
        self.chain = message.chain
        self.set_body(chain_text(message.chain, self.cwd))
