"""Where one type's instances were allocated: the sites of a sample of them, each frame with
its source line (Enter in the types view opens it, Esc closes)."""

from __future__ import annotations

from rich.text import Text

from memtop.formatting import clean_text
from memtop.leaks import Origins
from memtop.source import HeapInspection
from memtop.ui.detail_panel import DetailPanel
from memtop.ui.messages import OriginsReady, attempt
from memtop.ui.traceback_panel import frames_text

SAMPLE = 200  # instances looked at, the newest first
SITES = 10


def origins_summary(origins: Origins) -> Text:
    """How many instances were sampled, how many sites, and why some have no traceback."""
    sites = len(origins.sites)
    text = Text.assemble(
        (f"{origins.sampled:,}", "bold"),
        f" newest instance{'s' if origins.sampled != 1 else ''} sampled · ",
        f"{sites} allocation site{'s' if sites != 1 else ''}",
    )
    if origins.untraced:
        text.append(
            f"\n{origins.untraced:,} of {origins.sampled:,} have no allocation traceback: ",
            style="bold",
        )
        text.append(clean_text(origins.note))
    return text


def origins_text(origins: Origins, cwd: str | None = None) -> Text:
    """The sites, most instances first; frames oldest first, the allocating one marked."""
    if origins.sampled == 0:
        return Text("no live instance of this type is tracked by the gc any more", style="dim")
    if not origins.sites:
        return Text("no sampled instance has an allocation traceback (see above)", style="dim")
    out = Text()
    for number, site in enumerate(origins.sites, 1):
        share = site.count / origins.sampled
        out.append(f"#{number}  {site.count:,} of {origins.sampled:,} sampled", style="bold")
        out.append(f"  ({share:.0%})\n", style="dim")
        out.append_text(frames_text(site.frames, cwd))
        out.append("\n")
    return out


class OriginsPanel(DetailPanel):
    """The allocation sites of a sample of one type's live instances."""

    def __init__(self, source: HeapInspection, type_name: str, cwd: str | None = None) -> None:
        super().__init__(
            f"Where {clean_text(type_name)} instances were allocated",
            Text(f"sampling up to {SAMPLE} of the newest instances…", style="dim"),
            "looking up allocation tracebacks…",
        )
        self.source = source
        self.type_name = type_name
        self.cwd = cwd
        self.origins: Origins | None = None

    def fetch(self) -> None:
        origins, error = attempt(
            lambda: self.source.origins(self.type_name, sample=SAMPLE, limit=SITES)
        )
        self.post_message(OriginsReady(origins, error))

    def on_origins_ready(self, message: OriginsReady) -> None:
        if message.origins is None:
            self.set_body(
                Text(f"could not find the origins: {clean_text(message.error or '')}", "bold")
            )
            return
        self.origins = message.origins
        self.set_summary(origins_summary(message.origins))
        self.set_body(origins_text(message.origins, self.cwd))
