"""Turning numbers and untrusted target text into what a terminal may show."""

from __future__ import annotations

import os

from memtop.terminal import clean_text

__all__ = ["clean_text", "fit", "format_count", "format_size", "location", "short_path"]

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
