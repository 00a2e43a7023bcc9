"""Drift thresholds calibrated to the batch's size: the statistic's null distribution, simulated.

Why
    A fixed PSI threshold or an i.i.d. p-value is wrong at both ends of the batch sizes this
    project sees. With 24 rows and 10 bins, PSI is ≈ 0.4 with no drift at all; and the rows of
    one interval are not an i.i.d. sample of the reference (the 24 hours of one day share one
    day's weather), so KS and chi-square p-values flag almost every night on real data. With 2
    million rows the i.i.d. p-values flag shifts too small to matter.

How
    The null is "tonight's batch is one more interval like the reference intervals". It is
    simulated from the reference's *per-interval* histograms (a K intervals x B bins count
    matrix, from one ``GROUP BY interval, bin`` query; no rows move):

    1. draw whole reference intervals, uniformly with replacement, until they hold at least
       ``n`` rows (the current batch's size), so the correlation inside an interval is part
       of the null;
    2. thin their summed counts to exactly ``n`` rows (multivariate hypergeometric, drawn bin
       by bin so that all draws are vectorised);
    3. compute the statistic against the reference *without* the drawn intervals (the real
       batch is not part of its reference either), or against the whole reference when the
       drawn intervals are more than half of it;
    4. repeat ``draws`` times with a generator seeded by the interval, so a re-run gives the
       same threshold.

    The threshold is the ``level = 1 - false_alarm_rate / tests`` quantile (Bonferroni over
    the per-feature tests). ``level`` is usually beyond what a few thousand draws (and a
    reference of a few dozen intervals) can show empirically: the empirical quantile alone
    flags a new interval more extreme than all K reference intervals, i.e. on ~1/(K+1) of
    nights. So the tail is extrapolated with a log-normal fitted to the draws, and the
    threshold is the larger of that and the empirical quantile (see :func:`tail_quantile`).
    Measured on simulated intervals with and without interval effects (K = 28 and 90, 24 and
    500-2000 rows), this keeps the false-alarm rate at or below the level; a scaled
    chi-square or an exponential tail over the top draws flagged up to 10x too often. The
    price is power on tiny batches: with 24 rows a PSI over 10 bins is bounded (about 8) and
    the threshold can be near or beyond that bound when intervals differ strongly, i.e. a
    single small interval cannot be told apart from an unusual one. Pool intervals
    (``drift.window_intervals``) for power; the calibrated mean-shift test (which sees the
    size of a shift, not only its bins) still catches a batch far outside the reference.
    The p-value is the larger of the empirical and the fitted tail probability.

    With fewer than :data:`MIN_NULL_INTERVALS` reference intervals (or a batch that would take
    more than :data:`MAX_INTERVALS_PER_DRAW` of them) there is no between-interval spread to
    learn from, and the null falls back to i.i.d. rows drawn from the pooled reference
    (``method="rows"``), which the threshold records.

    For large batches the null collapses towards 0 when the intervals are exchangeable row by
    row; the effect-size floors in :mod:`nightly_ml.monitoring.drift` keep a 2M-row batch from
    flagging a practically null shift.

Everything here is pure numpy (plus the standard library's normal quantile).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from nightly_ml.monitoring.statistics import DEFAULT_EPSILON

DEFAULT_DRAWS = 2000
# Fewer reference intervals than this: no usable between-interval spread, use the i.i.d. rows null.
MIN_NULL_INTERVALS = 5
# A batch that needs more reference intervals per draw than this uses the i.i.d. rows null.
MAX_INTERVALS_PER_DRAW = 512
Method = Literal["intervals", "rows"]


@dataclass(frozen=True)
class NullThreshold:
    """The calibrated threshold of one statistic for one batch, and where it came from."""

    threshold: float
    level: float  # the quantile of the null the threshold is (1 - alpha / tests)
    rows: int  # the batch size the null was simulated for
    intervals: int  # reference intervals the draws came from
    draws: int
    method: Method
    log_mean: float  # log-normal tail fitted to the draws
    log_sd: float
    null_draws: np.ndarray  # the simulated statistics (sorted)

    def pvalue(self, value: float) -> float:
        """P(null >= value): the larger of the empirical share and the fitted tail (NaN for NaN)."""
        if math.isnan(value):
            return math.nan
        empirical = float(len(self.null_draws) - np.searchsorted(self.null_draws, value, side="left"))
        empirical /= max(len(self.null_draws), 1)
        return max(empirical, _lognormal_sf(value, self.log_mean, self.log_sd))

    def describe(self) -> str:
        """A short phrase for reasons and reports."""
        source = f"{self.intervals} reference intervals" if self.method == "intervals" else "i.i.d. reference rows"
        return f"null q{self.level:.4g} at {self.rows} rows from {source}"


# --------------------------------------------------------------------------- seeds and levels


def stable_seed(*parts: object) -> int:
    """A seed from the interval (dataset, feature, interval start ...): equal across processes and re-runs."""
    text = "|".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def null_level(false_alarm_rate: float, tests: int) -> float:
    """The null quantile each of ``tests`` tests uses so that together they flag at most ``false_alarm_rate``."""
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    return 1.0 - false_alarm_rate / max(tests, 1)


def normal_quantile(level: float) -> float:
    return NormalDist().inv_cdf(level)


def t_quantile(level: float, dof: float) -> float:
    """Student t quantile (Cornish-Fisher expansion around the normal; within 1% for dof >= 5)."""
    z = normal_quantile(level)
    if math.isinf(dof):
        return z
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3 + g4 / dof**4


# --------------------------------------------------------------------------- statistics, vectorised


def psi_rows(reference: np.ndarray, current: np.ndarray, epsilon: float = DEFAULT_EPSILON) -> np.ndarray:
    """PSI of each row pair of two (M, B) count matrices, smoothed like :func:`statistics.psi`."""
    p, q = _smoothed(reference, epsilon), _smoothed(current, epsilon)
    return np.sum((q - p) * np.log(q / p), axis=1)


def _smoothed(counts: np.ndarray, epsilon: float) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.where(counts > 0, counts / np.where(totals > 0, totals, 1.0), epsilon)
    return shares / shares.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- null draws


def _thin(counts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``n`` rows of each row of ``counts`` (M, B), without replacement (hypergeometric per bin)."""
    counts = counts.astype(np.int64)
    out = np.zeros_like(counts)
    population = counts.sum(axis=1)
    wanted = np.full(counts.shape[0], n, dtype=np.int64)
    for b in range(counts.shape[1] - 1):
        good = counts[:, b]
        population = population - good
        taken = rng.hypergeometric(good, population, wanted) if wanted.any() else np.zeros_like(wanted)
        out[:, b] = taken
        wanted = wanted - taken
    out[:, -1] = wanted
    return out


def draw_interval_batches(
    counts: np.ndarray, n: int, draws: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``draws`` null batches of exactly ``n`` rows made of whole reference intervals (then thinned).

    Returns the batches (draws, B) and which intervals each used (draws, K), for leaving them out.
    """
    sizes = counts.sum(axis=1)
    candidates = np.flatnonzero(sizes > 0)
    k = counts.shape[0]
    batches = np.zeros((draws, counts.shape[1]), dtype=np.int64)
    used = np.zeros((draws, k), dtype=bool)
    held = np.zeros(draws, dtype=np.int64)
    rows = np.arange(draws)
    for _ in range(MAX_INTERVALS_PER_DRAW):
        need = held < n
        if not need.any():
            break
        pick = rng.choice(candidates, size=draws)
        batches[need] += counts[pick[need]]
        used[rows[need], pick[need]] = True
        held[need] += sizes[pick[need]]
    return _thin(batches, n, rng), used


def draw_row_batches(total: np.ndarray, n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``draws`` null batches of ``n`` i.i.d. rows (multinomial) from the pooled reference shares."""
    return rng.multinomial(n, total / total.sum(), size=draws)


def _leave_out_references(counts: np.ndarray, used: np.ndarray) -> np.ndarray:
    """The reference each draw is compared with: without its intervals, unless they are most of it."""
    total = counts.sum(axis=0)
    # float64 so that numpy uses BLAS: exact for counts below 2**53.
    left = np.rint(total[None, :] - used.astype(np.float64) @ counts.astype(np.float64))
    too_small = left.sum(axis=1) < total.sum() / 2
    left[too_small] = total
    return left.astype(np.int64)


# --------------------------------------------------------------------------- thresholds


def tail_quantile(null: np.ndarray, level: float) -> tuple[float, float, float]:
    """The ``level`` quantile of a positive statistic: max(empirical, log-normal fit). Returns (q, mu, sd).

    The log-normal (on log statistic) extrapolates beyond the few thousand draws, and beyond
    the few dozen distinct intervals they come from; it has a heavier tail than the scaled
    chi-square a PSI follows with i.i.d. rows, so it errs towards fewer false alarms.
    """
    positive = null[np.isfinite(null) & (null > 0)]
    if len(positive) < 2:
        value = float(np.max(null)) if len(null) else math.nan
        return value, math.nan, math.nan
    logs = np.log(positive)
    mu, sd = float(logs.mean()), float(logs.std(ddof=1))
    fitted = math.exp(mu + normal_quantile(level) * sd)
    empirical = float(np.quantile(null, level, method="higher"))
    return max(fitted, empirical), mu, sd


def _lognormal_sf(value: float, mu: float, sd: float) -> float:
    if math.isnan(mu) or math.isnan(sd):
        return math.nan if math.isnan(value) else 0.0
    if value <= 0:
        return 1.0
    if sd <= 0:
        return 1.0 if math.log(value) <= mu else 0.0
    return 1.0 - NormalDist(mu, sd).cdf(math.log(value))


def psi_threshold(
    interval_counts: np.ndarray | Sequence[Sequence[int]],
    n: int,
    level: float,
    *,
    seed: int,
    draws: int = DEFAULT_DRAWS,
    epsilon: float = DEFAULT_EPSILON,
) -> NullThreshold:
    """The PSI a batch of ``n`` rows must reach to be beyond sampling noise at ``level``.

    ``interval_counts`` is the reference's (K intervals x B bins) count matrix; the current
    batch's PSI is computed against its column sums on the same bins.
    """
    counts = np.asarray(interval_counts, dtype=np.int64).reshape(-1, np.shape(interval_counts)[-1])
    if n <= 0:
        raise ValueError(f"a batch needs at least one row, got {n}")
    total = counts.sum(axis=0)
    if total.sum() <= 0:
        raise ValueError("the reference has no rows")
    rng = np.random.default_rng(seed)
    sizes = counts.sum(axis=1)
    intervals = int(np.count_nonzero(sizes))
    mean_size = sizes[sizes > 0].mean()
    if intervals >= MIN_NULL_INTERVALS and n / mean_size <= MAX_INTERVALS_PER_DRAW / 2:
        batches, used = draw_interval_batches(counts, n, draws, rng)
        references = _leave_out_references(counts, used)
        method: Method = "intervals"
    else:
        batches = draw_row_batches(total, n, draws, rng)
        references = np.broadcast_to(total, batches.shape)
        method = "rows"
    null = np.sort(psi_rows(references, batches, epsilon))
    threshold, mu, sd = tail_quantile(null, level)
    return NullThreshold(threshold, level, n, intervals, draws, method, mu, sd, null)


# --------------------------------------------------------------------------- interval means


@dataclass(frozen=True)
class MeanTolerance:
    """How far a batch mean may move from the reference mean under the interval-level null."""

    reference_mean: float
    tolerance: float  # allowed |current mean - reference mean|
    between_sd: float  # sd of the interval effect (tau)
    within_sd: float  # pooled sd of rows inside an interval
    rows: int  # the batch size the tolerance is for
    intervals: int
    level: float


def mean_tolerance(
    sizes: Sequence[int] | np.ndarray,
    means: Sequence[float] | np.ndarray,
    variances: Sequence[float] | np.ndarray,
    n: int,
    level: float,
) -> MeanTolerance | None:
    """The two-sided ``level`` tolerance of a ``n``-row batch mean, from per-interval moments.

    One-way random effects: a batch mean varies by ``tau^2 + sigma_w^2 / n`` around the
    reference mean (``tau``: spread of the interval means beyond row noise, ``sigma_w``: the
    pooled within-interval sd, ``variances`` being population variances per interval). The
    reference mean's own error is added and the quantile is Student's t with K - 1 degrees of
    freedom, as for a prediction interval. None with fewer than two non-empty intervals.
    """
    k_sizes = np.asarray(sizes, dtype=np.float64)
    keep = k_sizes > 0
    k_sizes, k_means = k_sizes[keep], np.asarray(means, dtype=np.float64)[keep]
    k_vars = np.asarray(variances, dtype=np.float64)[keep]
    k = len(k_sizes)
    if k < 2 or n <= 0:
        return None
    rows = k_sizes.sum()
    grand = float(np.sum(k_sizes * k_means) / rows)
    within = float(np.sum(k_sizes * k_vars) / max(rows - k, 1))  # pooled, unbiased
    # Variance of the interval means around the grand mean, minus what row noise explains.
    spread = float(np.sum((k_means - grand) ** 2) / (k - 1))
    tau2 = max(0.0, spread - within * float(np.mean(1.0 / k_sizes)))
    batch_var = tau2 + within / n
    reference_var = tau2 / k + within / rows
    tolerance = t_quantile(1 - (1 - level) / 2, k - 1) * math.sqrt(batch_var + reference_var)
    return MeanTolerance(grand, tolerance, math.sqrt(tau2), math.sqrt(within), n, k, level)


def allowed_mean_shift(
    intervals: Sequence[tuple[int, float, float]], level: float, floor_sd: float, n: int | None = None
) -> tuple[float, float] | None:
    """(reference mean, allowed |batch mean - reference mean|) from per-interval (rows, mean, variance).

    The allowed deviation is the larger of the calibrated tolerance (:func:`mean_tolerance`, for a
    batch of ``n`` rows; default the median reference interval's size) and the effect-size floor
    ``floor_sd`` row standard deviations of the whole reference. None without any rows.
    """
    kept = [(k, m, v) for k, m, v in intervals if k > 0]
    if not kept:
        return None
    sizes = np.array([k for k, _, _ in kept], dtype=np.float64)
    means = np.array([m for _, m, _ in kept], dtype=np.float64)
    variances = np.array([v for _, _, v in kept], dtype=np.float64)
    rows = sizes.sum()
    grand = float(np.sum(sizes * means) / rows)
    total_var = float(np.sum(sizes * (variances + (means - grand) ** 2)) / max(rows - 1, 1))
    floor = floor_sd * math.sqrt(total_var) if total_var > 0 else 1e-9 * max(1.0, abs(grand))
    batch = n if n is not None else int(np.median(sizes))
    tolerance = mean_tolerance(sizes, means, variances, batch, level)
    return grand, floor if tolerance is None else max(floor, tolerance.tolerance)
