"""Calibrated drift thresholds: null draws from whole intervals, false-alarm rate, power, sizes, determinism."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from nightly_ml.monitoring import calibration, statistics

BINS = 10


def _day(rng: np.random.Generator, rows: int, tau: float, shift: float = 0.0) -> np.ndarray:
    """One interval: its own level (sd ``tau``, like one day's weather) plus row noise."""
    return shift + rng.normal(0.0, tau) + rng.normal(size=rows)


def _reference(rng: np.random.Generator, days: int, rows: int, tau: float) -> tuple[np.ndarray, tuple[float, ...]]:
    """Per-interval counts (days x bins) on the pooled reference's decile bins."""
    data = [_day(rng, rows, tau) for _ in range(days)]
    edges = statistics.reference_bin_edges(np.quantile(np.concatenate(data), statistics.quantile_levels(BINS)))
    return np.array([statistics.histogram_counts(d, edges) for d in data]), edges


def _flagged(counts: np.ndarray, current: np.ndarray, level: float, seed: int) -> bool:
    null = calibration.psi_threshold(counts, int(current.sum()), level, seed=seed, draws=500)
    return statistics.psi(counts.sum(axis=0), current) >= null.threshold


def test_vectorised_psi_equals_the_monitor_psi() -> None:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 50, size=(20, BINS))
    current = rng.integers(0, 5, size=(20, BINS))
    expected = [statistics.psi(r, c) for r, c in zip(reference, current, strict=True)]
    assert calibration.psi_rows(reference, current) == pytest.approx(expected, rel=1e-12)


def test_null_batches_are_whole_intervals_thinned_to_the_batch_size() -> None:
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 9, size=(30, BINS))
    batches, used = calibration.draw_interval_batches(counts, 24, 400, np.random.default_rng(2))
    assert (batches.sum(axis=1) == 24).all() and (batches >= 0).all()
    # a batch never holds more of a bin than the intervals it drew
    assert (batches <= used.astype(np.int64) @ counts).all()
    left = calibration._leave_out_references(counts, used)
    assert (left == counts.sum(axis=0) - used.astype(np.int64) @ counts).all()


@pytest.mark.parametrize("tau", [0.0, 1.0], ids=["iid-rows", "day-effects"])
def test_false_alarm_rate_on_exchangeable_intervals_is_at_most_the_level(tau: float) -> None:
    """400 nights, each a new 28-day reference and one more day like them: flagged on <= 5% (+ noise)."""
    rng = np.random.default_rng(42)
    nights, level = 400, 0.95
    flags = 0
    for night in range(nights):
        counts, edges = _reference(rng, 28, 24, tau)
        flags += _flagged(counts, statistics.histogram_counts(_day(rng, 24, tau), edges), level, night)
    rate = flags / nights
    print(f"tau {tau}: calibrated test at level {level} flagged {flags}/{nights} nights")
    assert rate <= (1 - level) + 2 * math.sqrt(level * (1 - level) / nights)


def test_the_fixed_psi_threshold_would_flag_every_small_batch() -> None:
    """Why calibration is needed: 24 rows in 10 bins give PSI far above 0.2 with no change at all."""
    rng = np.random.default_rng(5)
    counts, edges = _reference(rng, 28, 24, 1.0)
    values = [
        statistics.psi(counts.sum(axis=0), statistics.histogram_counts(_day(rng, 24, 1.0), edges)) for _ in range(50)
    ]
    assert min(values) > 0.2


@pytest.mark.parametrize("rows", [24, 200_000])
def test_an_obvious_shift_is_caught_at_any_batch_size(rows: int) -> None:
    """A day beyond the reference's range (every row in the top bin) drifts, even at 24 rows."""
    rng = np.random.default_rng(7)
    counts, edges = _reference(rng, 28, rows, 0.2)
    level = calibration.null_level(0.01, 8)
    shifted = statistics.histogram_counts(_day(rng, rows, 0.0, shift=6.0), edges)
    assert _flagged(counts, shifted, level, seed=3)


def test_one_million_rows_is_fast_and_the_null_collapses_without_interval_effects() -> None:
    rng = np.random.default_rng(8)
    counts = rng.multinomial(1_000_000, np.full(BINS, 1 / BINS), size=28)
    started = time.perf_counter()
    null = calibration.psi_threshold(counts, 1_000_000, calibration.null_level(0.01, 8), seed=1)
    assert time.perf_counter() - started < 2.0
    assert null.method == "intervals" and null.threshold < 1e-3
    # a 2% share moved between two bins: beyond noise, and left to the effect-size floors to dismiss
    moved = counts.sum(axis=0) / 28
    moved[0], moved[1] = moved[0] + 20_000, moved[1] - 20_000
    assert statistics.psi(counts.sum(axis=0), moved.astype(np.int64)) < 0.2


def test_same_seed_same_threshold_and_the_seed_is_stable() -> None:
    rng = np.random.default_rng(9)
    counts, _ = _reference(rng, 28, 24, 1.0)
    first = calibration.psi_threshold(counts, 24, 0.999, seed=calibration.stable_seed("d", "f", "2024-01-02"))
    again = calibration.psi_threshold(counts, 24, 0.999, seed=calibration.stable_seed("d", "f", "2024-01-02"))
    other = calibration.psi_threshold(counts, 24, 0.999, seed=calibration.stable_seed("d", "f", "2024-01-03"))
    assert first.threshold == again.threshold and (first.null_draws == again.null_draws).all()
    assert not np.array_equal(other.null_draws, first.null_draws)
    assert calibration.stable_seed("a", 1) == 16088270529115459560  # no per-process hash salt


def test_few_intervals_fall_back_to_iid_rows() -> None:
    counts = np.array([[10, 20, 30], [12, 18, 30]])
    null = calibration.psi_threshold(counts, 50, 0.99, seed=1)
    assert null.method == "rows" and null.intervals == 2
    assert "i.i.d." in null.describe()
    assert null.pvalue(0.0) == pytest.approx(1.0) and null.pvalue(100.0) < 1e-6


def test_levels_split_the_false_alarm_rate_over_the_tests() -> None:
    assert calibration.null_level(0.01, 8) == pytest.approx(1 - 0.00125)
    with pytest.raises(ValueError, match="false_alarm_rate"):
        calibration.null_level(0.0, 3)


@pytest.mark.parametrize("dof", [5, 27, 100])
def test_t_quantile_matches_scipy(dof: int) -> None:
    for level in (0.9, 0.995, 0.9995):
        assert calibration.t_quantile(level, dof) == pytest.approx(stats.t.ppf(level, dof), rel=0.01)


def _moments(days: list[np.ndarray]) -> tuple[list[int], list[float], list[float]]:
    return [len(d) for d in days], [float(d.mean()) for d in days], [float(d.var()) for d in days]


def test_mean_tolerance_follows_the_spread_of_interval_means() -> None:
    """With day effects (tau 2, row sd 1) a 24-row day's mean moves ~2 sd: the row sd alone would flag it."""
    rng = np.random.default_rng(11)
    tolerances, nights, flags = [], 400, 0
    level = calibration.null_level(0.05, 1)
    for _ in range(nights):
        days = [_day(rng, 24, 2.0) for _ in range(28)]
        tolerance = calibration.mean_tolerance(*_moments(days), 24, level)
        assert tolerance is not None
        tolerances.append(tolerance.tolerance)
        reference_mean = np.concatenate(days).mean()
        flags += abs(_day(rng, 24, 2.0).mean() - reference_mean) > tolerance.tolerance
    assert np.median(tolerances) == pytest.approx(stats.norm.ppf(0.975) * math.sqrt(4 + 1 / 24), rel=0.2)
    assert flags / nights <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / nights)


def test_allowed_mean_shift_is_floored_at_the_row_sd() -> None:
    rng = np.random.default_rng(12)
    days = [rng.normal(10.0, 1.0, 2000) for _ in range(28)]  # no day effect, large batches
    intervals = list(zip(*_moments(days), strict=True))
    mean, allowed = calibration.allowed_mean_shift(intervals, calibration.null_level(0.01, 4), floor_sd=0.5)
    assert mean == pytest.approx(10.0, abs=0.01)
    assert allowed == pytest.approx(0.5, rel=0.02)  # the calibrated tolerance (~0.08) is below the floor
    assert calibration.allowed_mean_shift([], 0.99, 0.5) is None
