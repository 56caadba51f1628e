"""Modes in the viewer's pure parts: the --mode/--rate grammar and defaults, and leak
suspects in sampled mode, which must rise above the sampling noise."""

from __future__ import annotations

import argparse

import pytest

from memtop.batch import render_text
from memtop.errors import UsageError
from memtop.history import History
from memtop.model import Frame, Query, Refresh, Row, TableInfo, mode_text
from memtop.modes import DEFAULT_RATE, ModeRequest, mode_request, parse_rate
from memtop.verdict import Verdict

RATE = 256 * 1024
STEADY = Verdict("steady", "steady")
KEY = "/app/cache.py:42"


def args(mode: str | None = None, rate: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(mode=mode, rate=rate)


def test_attach_defaults_to_sampled_and_run_to_exact_and_neither_is_explicit() -> None:
    assert mode_request(args(), "sampled") == ModeRequest("sampled", DEFAULT_RATE, False)
    assert mode_request(args(), "exact") == ModeRequest("exact", DEFAULT_RATE, False)


def test_a_named_mode_or_a_rate_is_explicit_and_a_rate_means_sampled() -> None:
    assert mode_request(args("sampled"), "exact").explicit
    assert mode_request(args(rate=65536), "exact") == ModeRequest("sampled", 65536, True)


def test_a_rate_with_exact_mode_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--rate applies to sampled mode only"):
        mode_request(args("exact", 65536), "sampled")


def test_only_an_explicit_sampled_mode_makes_the_agent_strict() -> None:
    assert ModeRequest("sampled", RATE, True).agent_config()["strict"] is True
    assert ModeRequest("sampled", RATE, False).agent_config()["strict"] is False
    assert ModeRequest("exact", RATE, True).agent_config()["strict"] is False


@pytest.mark.parametrize(
    ("text", "value"), [("262144", 262144), ("256K", 262144), ("1m", 1 << 20), ("64KiB", 65536)]
)
def test_rates_take_binary_suffixes(text: str, value: int) -> None:
    assert parse_rate(text) == value


@pytest.mark.parametrize("text", ["0", "12", "lots", "-5K", "32G"])
def test_bad_rates_are_refused_with_the_range(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_rate(text)


def sample(n: int, size: int, error: int, mode: str) -> Refresh:
    frames = (Frame("/app/cache.py", 42),)
    row = Row(KEY, "/app/cache.py", 42, size, 1, 0, 0, "", frames, size_error=error)
    return Refresh(
        pid=1,
        time=100.0 + n,
        query=Query(),
        rss=None,
        uss=None,
        traced_current=size,
        traced_peak=size,
        tracemalloc_memory=0,
        traced_blocks=1,
        nframe=64,
        work_ms=0.1,
        table=TableInfo(n, 100.0 + n, 0.0, True, 0.1, 0.0, 0.05),
        rows=(row,),
        total_rows=1,
        mode=mode,
        sample_rate=RATE if mode == "sampled" else None,
    )


def history_of(samples: list[tuple[int, int]], mode: str) -> History:
    history = History()
    for n, (size, error) in enumerate(samples, 1):
        history.add(sample(n, size, error, mode))
    return history


# A small site gaining a few samples, steadily enough to look like growth: each sample is
# worth about R, with error bars of 1.96 sqrt(k) R after k samples.
FEW_SAMPLES = [(k * RATE, round(1.96 * k**0.5 * RATE)) for k in (1, 2, 2, 3, 3, 4)]


def test_a_site_gaining_samples_within_its_error_bars_is_not_a_suspect() -> None:
    assert KEY not in history_of(FEW_SAMPLES, "sampled").suspects()


def test_the_same_sizes_measured_exactly_are_a_suspect() -> None:
    exact = [(size, 0) for size, _ in FEW_SAMPLES]
    assert KEY in history_of(exact, "exact").suspects()


def test_a_sampled_leak_growing_past_its_error_bars_is_a_suspect() -> None:
    growing = [(k * 5 * RATE, round(1.96 * (k * 5) ** 0.5 * RATE)) for k in range(1, 11)]
    assert KEY in history_of(growing, "sampled").suspects()


def test_the_mode_in_words() -> None:
    assert mode_text(sample(1, 0, 0, "sampled")) == "sampled, 1 per 256 KiB"
    assert mode_text(sample(1, 0, 0, "exact")) == "exact (tracemalloc)"


def test_the_text_view_of_sampled_mode_shows_estimates_and_their_error_bars() -> None:
    """≈ totals, the mode and rate on the first line, ± columns aligned with their heads."""
    text = render_text(sample(1, 5 * 1024 * 1024, 700 * 1024, "sampled"), STEADY, "pid 1", 160)
    lines = text.splitlines()
    assert "sampled, 1 per 256 KiB" in lines[0] and "nframe 64" in lines[0]
    assert "traced ≈5.0 MiB" in lines[1]
    head = next(line for line in lines if "±SIZE" in line)
    row = lines[lines.index(head) + 1]
    assert row[: head.index("±SIZE") + 5].endswith("±700.0 KiB")
    assert row[: head.index("±COUNT") + 6].endswith("±0")


def test_the_text_view_of_exact_mode_has_no_error_columns() -> None:
    text = render_text(sample(1, 5 * 1024 * 1024, 0, "exact"), STEADY, "pid 1", 160)
    assert "±" not in text and "≈" not in text and "exact (tracemalloc)" in text
