"""What may reach a terminal: every string from the target or a file passes through here.

A target controls its file names, source lines, type names, dict keys, `sys.version` and
process name; a snapshot file controls everything in it. Any of them can hold escape
sequences that set the window title, write the clipboard (OSC 52), clear the screen or
reorder the text (bidi overrides). `clean_text` shows each such character as a visible
escape instead. Rich markup is the UI's concern: target text is only ever put in a rich
`Text` as plain text, never parsed as markup.
"""

from __future__ import annotations

import re
from typing import Any, TextIO

# C0 controls, DEL, C1 controls (ESC, CSI, OSC, ...), lone surrogates from undecodable
# bytes, line/paragraph separators, and the invisible format characters that reorder or
# hide text (bidi embeddings, overrides and isolates, zero-width marks, BOM).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200b-\u200f\u2028-\u202e"
    "\u2060-\u2069\ufeff\ufff9-\ufffb]"
)


def _visible(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean_text(text: str, keep: str = "") -> str:
    """`text` with every control or invisible formatting character replaced by a visible
    escape (`\\x1b`, `\\u202e`); characters in `keep` (e.g. "\\n") pass unchanged."""
    text = str(text)
    if keep:
        return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _visible(m.group()), text)
    return _UNSAFE.sub(lambda m: _visible(m.group()), text)


class SafeStream:
    """A text stream that writes only what `clean_text` lets through, keeping line breaks
    and tabs: memtop's own messages on stderr and its `--batch` text quote the target."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(clean_text(text, keep="\n\t"))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
