"""Compiled code and where tracemalloc charges its allocations.

tracemalloc records the Python frames of an allocation. Memory allocated inside a C
extension, a Cython module or mypyc-compiled code is charged to the last Python line on
the stack: the line that called into the compiled code. A program that spends its life in
compiled code (mypy is compiled with mypyc) shows most of its memory at one line, its
entry point, and a deeper nframe does not help: the compiled frames are not Python frames.

The viewer says so when both hold: one line holds most of the traced memory, and the
program has compiled extension modules loaded (read from /proc/PID/maps, from outside).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from memtop.model import Refresh, Row

SHARE = 0.5  # one line holding this share of traced memory or more
MIN_TRACED = 1024 * 1024  # below this, one line holding most of it says little

# CPython extension modules: name.cpython-312-x86_64-linux-gnu.so, name.abi3.so, and
# plain name.so in site-packages; not the interpreter's own (lib-dynload).
_EXTENSION = re.compile(r"\.(cpython-[^/]*|abi3)\.so$")
_PACKAGES = ("/site-packages/", "/dist-packages/")


def extension_modules(maps: str) -> frozenset[str]:
    """Paths of the compiled extension modules mapped in a process (text of its
    /proc/PID/maps), the standard library's own left out."""
    found = set()
    for line in maps.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6 or not fields[5].startswith("/"):
            continue
        path = fields[5].strip()
        # A module replaced on disk (a deploy, `pip install -U`) is still loaded.
        path = path.removesuffix(" (deleted)")
        if "/lib-dynload/" in path:
            continue
        if _EXTENSION.search(path) or (path.endswith(".so") and any(p in path for p in _PACKAGES)):
            found.add(path)
    return frozenset(found)


def read_extension_modules(pid: int) -> frozenset[str] | None:
    """The compiled extension modules of process `pid`, or None when unreadable."""
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            return extension_modules(maps.read())
    except OSError:
        return None


@dataclass(frozen=True)
class CompiledHint:
    """Most traced memory charged to one line while compiled code is loaded."""

    row: Row
    share: float  # of traced memory
    modules: int  # compiled extension modules loaded

    def text(self, where: str) -> str:
        """What it means, with the row's location as the caller shows it."""
        return (
            f"{self.share:.0%} of traced memory is charged to {where}: allocations made "
            f"inside compiled code ({self.modules} extension module"
            f"{'s' if self.modules != 1 else ''} loaded) are charged to the Python line "
            f"that called it; a deeper nframe does not help"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "key": self.row.key,
            "share": round(self.share, 3),
            "extension_modules": self.modules,
        }


def crowded_line(sample: Refresh) -> tuple[Row, float] | None:
    """The line holding SHARE of traced memory or more, and its share, in a refresh
    grouped by line; else None."""
    query = sample.query
    if query.group_by != "lineno" or query.cumulative or not sample.rows:
        return None
    traced = sample.traced_current
    if traced < MIN_TRACED:
        return None
    top = max(sample.rows, key=lambda row: row.size)
    share = top.size / traced
    return (top, min(share, 1.0)) if share >= SHARE else None


def compiled_hint(sample: Refresh, modules: int) -> CompiledHint | None:
    """The hint for one refresh, or None when it does not apply."""
    crowded = crowded_line(sample) if modules > 0 else None
    return CompiledHint(crowded[0], crowded[1], modules) if crowded is not None else None
