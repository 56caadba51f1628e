"""The verdict: an explicit account of RSS (traced, tracer, memtop, untraced), each part's
rate with its own noise, and words that never contradict the numbers beside them."""

from __future__ import annotations

import random
import re

from memtop.verdict import KIB, MIB, MemoryPoint, judge, slope


def test_slope_of_a_line() -> None:
    assert slope([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) == 2.0
    assert slope([(0.0, 1.0)]) == 0.0
    assert slope([(1.0, 1.0), (1.0, 5.0)]) == 0.0


def points(traced, rss, step: float = 5.0) -> list[MemoryPoint]:
    return [MemoryPoint(i * step, r, t) for i, (t, r) in enumerate(zip(traced, rss, strict=True))]


def test_verdict_waits_for_enough_history() -> None:
    assert judge([]).kind == "collecting"
    assert judge(points([1, 2], [10, 10])).kind == "collecting"


def test_verdict_growing_traced_memory() -> None:
    traced = [50 * MIB + i * MIB for i in range(12)]  # +1 MiB every 5 s = 12 MiB/min
    verdict = judge(points(traced, [t + 30 * MIB for t in traced]))
    assert verdict.kind == "growing"
    assert verdict.text == "traced +12.0 MiB/min: Python objects accumulating"
    assert abs(verdict.traced_rate - 12 * MIB) < 1


def test_verdict_rss_growing_while_traced_is_flat() -> None:
    verdict = judge(points([50 * MIB] * 12, [100 * MIB + i * 2 * MIB for i in range(12)]))
    assert verdict.kind == "untraced-growing"
    assert verdict.text.startswith("untraced +24.0 MiB/min: native memory or fragmentation")


def test_verdict_fragmentation_after_a_big_free() -> None:
    traced = [80 * MIB] * 6 + [20 * MIB] * 6
    verdict = judge(points(traced, [120 * MIB] * 12))
    assert verdict.kind == "fragmentation"
    assert "25%" in verdict.text


def test_verdict_mostly_untraced() -> None:
    verdict = judge(points([10 * MIB] * 12, [400 * MIB] * 12))
    assert verdict.kind == "untraced"
    assert verdict.text.startswith("98% of RSS is untraced")


def test_verdict_steady() -> None:
    assert judge(points([50 * MIB] * 12, [90 * MIB] * 12)).kind == "steady"


def test_verdict_leads_with_fragmentation_and_adds_ongoing_growth() -> None:
    # A burst 80 -> 20 MiB traced while RSS stays put, and a slow leak all along.
    traced = [80 * MIB + i * 64 * KIB for i in range(6)] + [
        20 * MIB + i * 64 * KIB for i in range(6, 12)
    ]
    verdict = judge(points(traced, [120 * MIB] * 12))
    assert verdict.kind == "fragmentation"
    assert verdict.text.startswith("RSS high but traced fell to")


def test_a_past_rss_burst_is_not_growth_now() -> None:
    rss = [100 * MIB] * 4 + [300 * MIB] * 20
    verdict = judge(points([50 * MIB] * 24, rss))
    assert verdict.kind not in ("untraced-growing", "growing")


def test_growth_that_goes_on_after_a_burst_follows_the_leading_finding() -> None:
    traced = [80 * MIB] * 3 + [20 * MIB + i * 512 * KIB for i in range(12)]
    verdict = judge(points(traced, [120 * MIB] * 15))
    assert verdict.kind == "fragmentation"
    assert verdict.text.endswith("· traced +6.0 MiB/min")


def test_growth_leads_a_static_untraced_share() -> None:
    traced = [10 * MIB + i * MIB for i in range(12)]
    verdict = judge(points(traced, [400 * MIB] * 12))
    assert verdict.kind == "growing"


def account(
    n: int,
    traced: float = 0.0,
    tracer: float = 0.0,
    untraced: float = 0.0,
    memtop: float = 0.0,
    step: float = 5.0,
    base: int = 40 * MIB,
) -> list[MemoryPoint]:
    """Points whose parts grow by the given bytes per minute (RSS is their sum)."""
    out = []
    for i in range(n):
        minutes = i * step / 60.0
        t, tr, m = 50 * MIB + traced * minutes, 10 * MIB + tracer * minutes, memtop * minutes
        rss = base + t + tr + m + untraced * minutes
        out.append(MemoryPoint(i * step, int(rss), int(t + m), int(tr), int(m)))
    return out


def test_a_python_leak_is_python_growth_even_with_the_tracer_growing_alongside() -> None:
    # tracemalloc's own tables grow as fast as the traced total: that is no native growth.
    verdict = judge(account(24, traced=4 * MIB, tracer=4 * MIB, untraced=MIB))
    assert verdict.kind == "growing"
    assert verdict.text == "traced +4.0 MiB/min: Python objects accumulating"
    assert abs(verdict.tracer.per_minute - 4 * MIB) < KIB


def test_python_and_native_growth_are_both_named_with_their_own_rates() -> None:
    # RSS +9.6, traced +1.7, tracer +1.7 MiB/min: 6.2 MiB/min is neither.
    verdict = judge(account(24, traced=1.7 * MIB, tracer=1.7 * MIB, untraced=6.2 * MIB))
    assert verdict.kind == "untraced-growing"
    assert verdict.text == (
        "untraced +6.2 MiB/min: native memory or fragmentation (outside tracemalloc)"
        " · traced +1.7 MiB/min"
    )
    assert "flat" not in verdict.text


def test_a_native_leak_is_untraced_growth() -> None:
    verdict = judge(account(24, untraced=30 * MIB))
    assert verdict.kind == "untraced-growing"
    assert verdict.text.startswith("untraced +30.0 MiB/min")
    assert abs(verdict.untraced.per_minute - 30 * MIB) < KIB


def test_memtop_own_memory_is_not_the_program_growing() -> None:
    verdict = judge(account(24, memtop=2 * MIB))
    assert verdict.kind == "steady"
    assert abs(verdict.traced.per_minute) < KIB


def test_noise_without_a_trend_is_steady() -> None:
    rng = random.Random(7)
    noisy = [
        MemoryPoint(
            i * 2.0, 120 * MIB + rng.randint(-8, 8) * MIB, 50 * MIB + rng.randint(-1, 1) * MIB
        )
        for i in range(60)
    ]
    assert judge(noisy).kind == "steady"


def test_growth_is_judged_against_its_own_noise() -> None:
    # The same +3 MiB/min is growth on a quiet series and noise on a series jumping by
    # tens of MiB from one refresh to the next.
    rng = random.Random(3)
    quiet = account(24, untraced=3 * MIB)
    loud = [
        MemoryPoint(p.time, (p.rss or 0) + rng.choice((-40, 40)) * MIB, p.traced, p.tracer)
        for p in quiet
    ]
    assert judge(quiet).kind == "untraced-growing"
    assert judge(loud).kind == "steady"


RATE = re.compile(r"\b(untraced|traced) ([+-][0-9.]+) (MiB|KiB)/min")


def test_the_words_never_contradict_the_numbers() -> None:
    rng = random.Random(11)
    for _ in range(400):
        parts = {
            name: rng.choice((0.0, 0.2, 1.0, 5.0, -3.0)) * MIB
            for name in ("traced", "tracer", "untraced", "memtop")
        }
        points = account(
            rng.randint(5, 40),
            parts["traced"],
            parts["tracer"],
            parts["untraced"],
            parts["memtop"],
            step=rng.choice((1.0, 5.0)),
        )
        if rng.random() < 0.5:
            points = [
                MemoryPoint(
                    p.time, (p.rss or 0) + rng.randint(-4, 4) * MIB, p.traced, p.tracer, p.memtop
                )
                for p in points
            ]
        verdict = judge(points)
        assert "flat" not in verdict.text
        for part, shown, unit in RATE.findall(verdict.text):
            value = float(shown) * (MIB if unit == "MiB" else KIB)
            rate = verdict.traced if part == "traced" else verdict.untraced
            # A rate named on the line is a growth, and the number is that part's own.
            assert value > 0, verdict
            assert min(abs(value - rate.per_minute), abs(value - rate.now)) <= 0.05 * MIB, verdict
        if verdict.kind == "growing":
            assert verdict.traced.per_minute > 0 or verdict.traced.now > 0
        if verdict.kind == "untraced-growing":
            assert verdict.untraced.per_minute > 0 or verdict.untraced.now > 0


def test_a_start_up_ramp_then_a_plateau_is_not_growth() -> None:
    # RSS climbs by 8 MiB in the first 5 s (imports, arenas), then stays.
    rss = [20 * MIB + min(i, 10) * 800 * KIB for i in range(60)]
    verdict = judge([MemoryPoint(i * 0.5, r, 2 * MIB, 2 * MIB) for i, r in enumerate(rss)])
    assert verdict.kind == "steady", verdict.text


def test_untraced_growth_within_the_tracers_own_overhead_is_no_finding() -> None:
    # Tiny objects: untraced grows with the tracer's per-block overhead, not beyond it.
    verdict = judge(account(24, traced=2 * MIB, tracer=3.8 * MIB, untraced=3.4 * MIB))
    assert verdict.kind == "growing"
    assert "untraced" not in verdict.text
