"""Formatting of sizes and of untrusted text from the target."""

from __future__ import annotations

import pytest

from memtop.batch import render_text
from memtop.formatting import clean_text, fit, format_count, format_size, location, short_path
from memtop.history import Suspect, Verdict
from memtop.model import Query, refresh_from_reply


@pytest.mark.parametrize(
    ("value", "signed", "text"),
    [
        (0, False, "0 B"),
        (1023, False, "1023 B"),
        (1024, False, "1.0 KiB"),
        (12_345_678, False, "11.8 MiB"),
        (123_456, True, "+120.6 KiB"),
        (-2048, True, "-2.0 KiB"),
        (0, True, "0 B"),
        (None, False, "n/a"),
        (5 * 1024**5, False, "5120.0 TiB"),
    ],
)
def test_format_size(value, signed, text) -> None:
    assert format_size(value, signed) == text


def test_format_count() -> None:
    assert format_count(1000, signed=True) == "+1000"
    assert format_count(-3, signed=True) == "-3"
    assert format_count(0, signed=True) == "0"


@pytest.mark.parametrize(
    "hostile",
    [
        "\x1b[2J\x1b[31mred",
        "a\x07bell",
        "\x9b31mcsi",
        "bad\udcffbytes",
        "osc\x1b]0;title\x07",
        "rtl\u202eevil",
        "nul\x00byte",
        "line\u2028sep",
        "del\x7f",
    ],
)
def test_clean_text_leaves_no_control_characters(hostile: str) -> None:
    cleaned = clean_text(hostile)
    assert all(ch.isprintable() for ch in cleaned), repr(cleaned)
    assert "\x1b" not in cleaned


def test_clean_text_keeps_ordinary_text() -> None:
    assert (
        clean_text("self._items.append(item)  # ünïcode ✓")
        == "self._items.append(item)  # ünïcode ✓"
    )


def test_short_path_is_relative_to_cwd_or_site_packages() -> None:
    assert short_path("/home/u/app/cache.py", 40, cwd="/home/u") == "app/cache.py"
    assert short_path("/venv/lib/python3.11/site-packages/django/db.py", 40) == "django/db.py"
    assert short_path("/usr/lib/python3.11/json/decoder.py", 40) == "json/decoder.py"
    cut = short_path("/a/very/long/path/to/a/module/deep/inside/file.py", 20)
    assert len(cut) == 20 and cut.startswith("…") and cut.endswith("/deep/inside/file.py"[-19:])


def test_location_keeps_the_line_number() -> None:
    text = location("/a/very/long/path/to/a/module/deep/inside/file.py", 12345, 20)
    assert text.endswith(":12345") and len(text) == 20


def test_fit_cuts_with_an_ellipsis() -> None:
    assert fit("abcdef", 4) == "abc…"
    assert fit("abc", 4) == "abc"


def test_batch_render_escapes_hostile_rows() -> None:
    row = {
        "filename": "/tmp/\x1b[31mevil.py",
        "lineno": 1,
        "size": 10,
        "count": 1,
        "size_diff": 0,
        "count_diff": 0,
        "source": "x = '\x1b]0;pwned\x07'",
        "traceback": [],
    }
    reply = {
        "totals": {"traced_current": 10, "traced_peak": 10, "tracemalloc_memory": 1, "nframe": 1},
        "sample": {
            "id": 1,
            "time": 0.0,
            "age": 0.0,
            "fresh": True,
            "pause_ms": 1.0,
            "next_in": 0.0,
            "budget": 0.05,
            "traced_blocks": 1,
        },
        "rows": [row],
        "total_rows": 1,
    }
    sample = refresh_from_reply(1, 0.0, Query(), reply, 100, None)
    text = render_text(sample, Verdict("steady", "steady"), "pid 1", 120)
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[31mevil.py:1" in text


def test_text_view_marks_suspects_as_the_screen_and_readme_do() -> None:
    rows = [
        {
            "filename": f"/srv/{name}.py",
            "lineno": 3,
            "size": 10,
            "count": 1,
            "size_diff": 0,
            "count_diff": 0,
            "source": "",
            "traceback": [],
        }
        for name in ("leaky", "calm")
    ]
    reply = {
        "totals": {"traced_current": 20, "traced_peak": 20, "tracemalloc_memory": 1, "nframe": 1},
        "sample": {
            "id": 1,
            "time": 0.0,
            "age": 0.0,
            "fresh": True,
            "pause_ms": 1.0,
            "next_in": 0.0,
            "budget": 0.05,
            "traced_blocks": 2,
        },
        "rows": rows,
        "total_rows": 2,
    }
    sample = refresh_from_reply(1, 0.0, Query(), reply, 100, None)
    suspects = {"/srv/leaky.py:3": Suspect(rate=4096.0, confidence=0.9, points=8)}
    text = render_text(sample, Verdict("steady", "steady"), "pid 1", 120, suspects=suspects)
    leaky = next(line for line in text.splitlines() if line.rstrip().endswith("leaky.py:3"))
    calm = next(line for line in text.splitlines() if line.rstrip().endswith("calm.py:3"))
    assert leaky.startswith("   1▲") and calm.startswith("   2 ")
    assert "!" not in text
