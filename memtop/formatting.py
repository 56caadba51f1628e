"""Turning numbers and untrusted target text into what a terminal may show."""

from __future__ import annotations

import os

from memtop.terminal import clean_text

SUSPECT_MARK = "▲"  # beside the rank of a leak suspect, on screen and in the text view
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_size(n: float | None, signed: bool = False) -> str:
    """Human-readable byte count: '11.8 MiB', or '+120.6 KiB' when signed."""
    if n is None:
        return "n/a"
    sign = ""
    if signed:
        sign = "+" if n > 0 else "-" if n < 0 else ""
    value = abs(float(n))
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{sign}{value:.0f} B"
            return f"{sign}{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_count(n: int, signed: bool = False) -> str:
    """Integer with a sign when asked ('+1000', '-3', '0')."""
    return f"{n:+d}" if signed and n else f"{n:d}"


def short_path(path: str, width: int, cwd: str | None = None) -> str:
    """A path shortened for display: relative to cwd or site-packages, then cut on the left."""
    path = clean_text(path)
    if cwd and path.startswith(cwd.rstrip(os.sep) + os.sep):
        path = path[len(cwd.rstrip(os.sep)) + 1 :]
    else:
        for marker in ("/site-packages/", "/dist-packages/", "/lib/python"):
            index = path.rfind(marker)
            if index >= 0:
                rest = path[index + len(marker) :]
                if marker == "/lib/python":
                    rest = rest.split("/", 1)[-1]
                path = rest
                break
    if len(path) > width:
        path = "…" + path[-(width - 1) :]
    return path


def location(filename: str, lineno: int | None, width: int, cwd: str | None = None) -> str:
    """'file:line' fitted into `width` columns, keeping the line number."""
    suffix = f":{lineno}" if lineno is not None else ""
    return short_path(filename, max(4, width - len(suffix)), cwd) + suffix


def fit(text: str, width: int) -> str:
    """Clean and cut text to `width` columns with an ellipsis."""
    text = clean_text(text)
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


# `memtop run` starts `python -c BOOTSTRAP cfg_fd status_fd kind target args...`; the
# bootstrap ends with this line (memtop/attach/bootstrap.py).
RUN_BOOTSTRAP_END = "l.main(sys.argv[1:])\n"


def display_command(cmdline: str) -> str:
    """The command line as a person would have typed it (not memtop's bootstrap code)."""
    head, found, tail = cmdline.partition(RUN_BOOTSTRAP_END)
    parts = tail.split()
    if found and len(parts) >= 4:
        python = os.path.basename(head.split(" ", 1)[0]) or "python"
        module = ["-m"] if parts[2] == "module" else []
        cmdline = " ".join([python, *module, *parts[3:]])
    return clean_text(cmdline)


def utf8_text(text: str) -> str:
    """`text` as valid UTF-8 (for formats that require it: proto strings, metric labels).
    A file name that is not UTF-8, which Python keeps as lone surrogates standing for its
    bytes, shows those bytes as \\xNN."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    only_bytes = all(not 0xD800 <= ord(c) < 0xDC80 and not 0xDD00 <= ord(c) <= 0xDFFF for c in text)
    raw = text.encode("utf-8", "surrogateescape" if only_bytes else "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")
