"""Drift statistics and the retraining decision: pure functions over counts, no database.

The warehouse computes the aggregates (quantiles, bin counts, per-category counts and the
exact two-sample KS statistic, see :mod:`nightly_ml.monitoring`); this module turns them
into statistics and verdicts.

Binning
    Numeric bins are fixed by the reference (the champion's training window): its
    quantiles at ``1/bins, ..., (bins-1)/bins`` are the interior edges, duplicates removed
    (discrete features), and the first and last bins are open-ended, so ``k`` edges make
    ``k + 1`` bins ``(-inf, e1), [e1, e2), ..., [ek, +inf)`` -- exactly PostgreSQL's
    ``width_bucket(value, edges)`` (bin 0 .. k) and :func:`bin_index` here.

Decision rule (per feature; thresholds from the spec's ``drift`` section)
    numeric      drifted if PSI >= psi_threshold,
                 or (KS p-value < ks_pvalue and KS statistic >= 0.1);
    categorical  drifted if PSI >= psi_threshold,
                 or (chi-square p-value < chi2_pvalue and Cramér's V >= 0.1),
                 or categories unseen in the reference carry >= 5% of the current rows.

    A p-value alone flags tiny, harmless shifts once samples are large (a 40k-row
    reference makes KS significant at D ~ 0.045), so every test is paired with an effect
    size floor; PSI is an effect size on its own. Cramér's V is computed on the table of
    *shares* (both samples weighted equally), so it measures how far the two
    distributions are apart and does not shrink with the usual 20:1 reference/current
    size ratio, as V on raw counts would.

Retraining (:func:`decide`)
    Retrain when at least ``min_drifted_features`` features drifted, when prediction PSI
    >= ``prediction_psi_threshold``, when live performance on >= ``min_labelled_rows``
    labelled rows is worse than the champion's holdout value by more than
    ``performance_tolerance`` (absolute, in the promotion's primary metric), or when a
    numeric feature's mean leaves reference mean +- ``validation.mean_shift_tolerance_sd``
    reference standard deviations (soft expectation failure).

Nulls are left out of the distribution tests (PSI, KS, chi-square); null shares are
reported beside them because the validation step owns null rules.

Dependencies: numpy, scipy and (in :func:`live_metrics`) scikit-learn; scipy and scikit-learn
are imported inside the functions that use them, so importing this module stays cheap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from nightly_ml.spec import METRIC_GREATER_IS_BETTER, DatasetSpec, DriftRules, TaskType

Kind = Literal["numeric", "categorical"]

# Effect-size floors that pair with the significance tests (see the module docstring).
MIN_KS_STATISTIC = 0.1
MIN_CRAMERS_V = 0.1
# Share of current rows in categories the reference never saw that counts as drift.
MAX_UNSEEN_SHARE = 0.05
DEFAULT_EPSILON = 1e-4
NO_CHAMPION_REASON = "no champion yet: bootstrap training"

NAN = float("nan")


def _fmt(value: float | None) -> str:
    """Numbers in sentences: 4 significant digits, NaN spelled out."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.4g}"


# --------------------------------------------------------------------------- bins


def quantile_levels(bins: int) -> list[float]:
    """Interior quantile levels ``1/bins .. (bins-1)/bins`` that cut the reference into ``bins`` bins."""
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    return [i / bins for i in range(1, bins)]


def reference_bin_edges(quantiles: Sequence[float | None] | None) -> tuple[float, ...]:
    """Interior bin edges from reference quantiles: finite, sorted and deduplicated.

    ``None`` (an empty reference) or missing quantiles give no edges, i.e. a single bin.
    """
    if quantiles is None:
        return ()
    finite = {float(q) for q in quantiles if q is not None and math.isfinite(float(q))}
    return tuple(sorted(finite))


def bin_index(values: np.ndarray | Sequence[float], edges: Sequence[float]) -> np.ndarray:
    """The bin (0..len(edges)) of each value, with PostgreSQL ``width_bucket(value, edges)`` semantics."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64), side="right")


def histogram_counts(values: np.ndarray | Sequence[float], edges: Sequence[float]) -> np.ndarray:
    """Counts per reference bin of the non-NaN ``values`` (the numpy twin of the SQL bin counts)."""
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    return np.bincount(bin_index(array, edges), minlength=len(edges) + 1)


def bin_labels(edges: Sequence[float]) -> tuple[str, ...]:
    """Readable labels for the open-ended bins defined by ``edges``."""
    if not edges:
        return ("all",)
    labels = [f"< {_fmt(edges[0])}"]
    labels += [f"[{_fmt(lo)}, {_fmt(hi)})" for lo, hi in itertools.pairwise(edges)]
    labels.append(f"≥ {_fmt(edges[-1])}")
    return tuple(labels)


# --------------------------------------------------------------------------- statistics


def smoothed_shares(counts: Sequence[int] | np.ndarray, epsilon: float = DEFAULT_EPSILON) -> np.ndarray:
    """Shares of ``counts`` with empty bins raised to ``epsilon`` (then renormalised), so logs stay finite."""
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    if total <= 0:
        raise ValueError("cannot take shares of an empty sample")
    shares = np.where(array > 0, array / total, epsilon)
    return shares / shares.sum()


def psi(
    reference_counts: Sequence[int] | np.ndarray,
    current_counts: Sequence[int] | np.ndarray,
    epsilon: float = DEFAULT_EPSILON,
) -> float:
    """Population stability index over aligned bins: sum((cur - ref) * ln(cur / ref)) of smoothed shares.

    NaN when either sample is empty. Rules of thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 shifted.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.shape != cur.shape:
        raise ValueError(f"bins are not aligned: {ref.shape[0]} reference vs {cur.shape[0]} current")
    if ref.sum() <= 0 or cur.sum() <= 0:
        return NAN
    p, q = smoothed_shares(ref, epsilon), smoothed_shares(cur, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_pvalue(statistic: float, n_ref: int, n_cur: int) -> float:
    """Two-sided p-value of a two-sample KS statistic (scipy's asymptotic method in ``ks_2samp``).

    Uses the one-sample distribution ``kstwo`` at the effective size n_ref*n_cur/(n_ref+n_cur).
    With ties (discrete features) the test is conservative: p-values are too large, never too small.
    """
    if n_ref <= 0 or n_cur <= 0 or statistic is None or math.isnan(statistic):
        return NAN
    from scipy import stats

    effective_n = round(n_ref * n_cur / (n_ref + n_cur))
    return float(np.clip(stats.kstwo.sf(float(statistic), max(effective_n, 1)), 0.0, 1.0))


@dataclass(frozen=True)
class ChiSquare:
    """Chi-square test of a 2 x k table (reference vs current), with effect size and unseen categories."""

    statistic: float
    pvalue: float
    dof: int
    cramers_v: float
    # category -> share of the current rows, for categories absent from the reference
    unseen_categories: dict[str, float] = field(default_factory=dict)

    @property
    def unseen_share(self) -> float:
        return float(sum(self.unseen_categories.values()))


def balanced_cramers_v(reference_counts: Sequence[int], current_counts: Sequence[int]) -> float:
    """Cramér's V of the 2 x k table of shares: sqrt(1/2 * sum((p - q)^2 / (p + q))), in [0, 1].

    Equal to V on raw counts when both samples have the same size; unlike that V it does
    not depend on the ratio of the sample sizes.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return NAN
    p, q = ref / ref.sum(), cur / cur.sum()
    pooled = p + q
    mask = pooled > 0
    return float(math.sqrt(0.5 * np.sum((p[mask] - q[mask]) ** 2 / pooled[mask])))


def chi_square(reference_counts: Mapping[str, int], current_counts: Mapping[str, int]) -> ChiSquare:
    """Chi-square test of homogeneity on the categories seen in either sample.

    No continuity correction (so the statistic matches the effect size); a single category
    gives statistic 0 and p-value 1.
    """
    seen = {c for c, n in reference_counts.items() if n > 0} | {c for c, n in current_counts.items() if n > 0}
    categories = sorted(seen)
    ref = np.array([reference_counts.get(c, 0) for c in categories], dtype=np.int64)
    cur = np.array([current_counts.get(c, 0) for c in categories], dtype=np.int64)
    cur_total = int(cur.sum())
    unseen: dict[str, float] = {}
    if cur_total:
        unseen = {c: float(n / cur_total) for c, r, n in zip(categories, ref, cur, strict=True) if r == 0 and n > 0}
    if ref.sum() == 0 or cur_total == 0:
        return ChiSquare(NAN, NAN, 0, NAN, unseen)
    if len(categories) < 2:
        return ChiSquare(0.0, 1.0, 0, 0.0, unseen)
    from scipy import stats

    result = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    return ChiSquare(
        statistic=float(result.statistic),
        pvalue=float(result.pvalue),
        dof=int(result.dof),
        cramers_v=balanced_cramers_v(ref, cur),
        unseen_categories=unseen,
    )


# --------------------------------------------------------------------------- per feature


@dataclass(frozen=True)
class SampleStats:
    """Size and moments of one feature in one window (mean/sd NaN for categorical features)."""

    rows: int
    non_null: int
    mean: float = NAN
    sd: float = NAN

    @property
    def null_share(self) -> float:
        return (self.rows - self.non_null) / self.rows if self.rows else NAN


@dataclass(frozen=True)
class Histogram:
    """Aligned reference and current counts per bin (numeric) or category, for PSI and plots."""

    labels: tuple[str, ...]
    reference: tuple[int, ...]
    current: tuple[int, ...]
    edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not len(self.labels) == len(self.reference) == len(self.current):
            raise ValueError("histogram labels and counts are not aligned")

    @staticmethod
    def _shares(counts: tuple[int, ...]) -> list[float]:
        total = sum(counts)
        return [c / total if total else 0.0 for c in counts]

    @property
    def reference_shares(self) -> list[float]:
        return self._shares(self.reference)

    @property
    def current_shares(self) -> list[float]:
        return self._shares(self.current)

    def to_json(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "edges": list(self.edges),
            "reference": list(self.reference),
            "current": list(self.current),
        }

    @classmethod
    def binned(cls, edges: Sequence[float], reference: Sequence[int], current: Sequence[int]) -> Histogram:
        """A histogram over the open-ended bins of ``edges``."""
        return cls(bin_labels(edges), tuple(map(int, reference)), tuple(map(int, current)), tuple(edges))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        return cls(
            labels=tuple(data["labels"]),
            reference=tuple(int(x) for x in data["reference"]),
            current=tuple(int(x) for x in data["current"]),
            edges=tuple(float(x) for x in data.get("edges", ())),
        )


@dataclass(frozen=True)
class FeatureDrift:
    """Drift statistics of one feature and the rule's verdict on them."""

    feature: str
    kind: Kind
    psi: float
    drifted: bool
    reason: str
    histogram: Histogram
    ks_statistic: float = NAN
    ks_pvalue: float = NAN
    chi2_statistic: float = NAN
    chi2_pvalue: float = NAN
    cramers_v: float = NAN
    unseen_share: float = 0.0
    unseen_categories: tuple[str, ...] = ()
    reference: SampleStats | None = None
    current: SampleStats | None = None


def numeric_decision(psi_value: float, ks_statistic: float, ks_p: float, rules: DriftRules) -> tuple[bool, str]:
    """The numeric rule: PSI >= threshold, or KS significant with D >= 0.1. Returns (drifted, reason)."""
    if not math.isnan(psi_value) and psi_value >= rules.psi_threshold:
        return True, f"PSI {_fmt(psi_value)} ≥ {_fmt(rules.psi_threshold)}"
    if not math.isnan(ks_p) and ks_p < rules.ks_pvalue and ks_statistic >= MIN_KS_STATISTIC:
        return True, (
            f"KS statistic {_fmt(ks_statistic)} ≥ {MIN_KS_STATISTIC} "
            f"with p-value {_fmt(ks_p)} < {_fmt(rules.ks_pvalue)}"
        )
    return False, f"stable: PSI {_fmt(psi_value)}, KS statistic {_fmt(ks_statistic)} (p-value {_fmt(ks_p)})"


def categorical_decision(
    psi_value: float, chi2_p: float, cramers_v: float, unseen_share: float, rules: DriftRules
) -> tuple[bool, str]:
    """The categorical rule: PSI, chi-square significant with V >= 0.1, or >= 5% unseen. Returns (drifted, reason)."""
    if unseen_share >= MAX_UNSEEN_SHARE:
        return True, f"categories unseen in the reference make up {unseen_share:.1%} of rows (≥ {MAX_UNSEEN_SHARE:.0%})"
    if not math.isnan(psi_value) and psi_value >= rules.psi_threshold:
        return True, f"PSI {_fmt(psi_value)} ≥ {_fmt(rules.psi_threshold)}"
    if not math.isnan(chi2_p) and chi2_p < rules.chi2_pvalue and cramers_v >= MIN_CRAMERS_V:
        return True, (
            f"Cramér's V {_fmt(cramers_v)} ≥ {MIN_CRAMERS_V} with chi-square p-value {_fmt(chi2_p)} "
            f"< {_fmt(rules.chi2_pvalue)}"
        )
    return False, f"stable: PSI {_fmt(psi_value)}, Cramér's V {_fmt(cramers_v)} (chi-square p-value {_fmt(chi2_p)})"


def numeric_feature_drift(
    feature: str,
    edges: Sequence[float],
    reference_counts: Sequence[int],
    current_counts: Sequence[int],
    ks_statistic: float,
    rules: DriftRules,
    *,
    reference: SampleStats | None = None,
    current: SampleStats | None = None,
) -> FeatureDrift:
    """Drift of a numeric feature from its reference-bin counts and the exact KS statistic."""
    edges = tuple(edges)
    if len(reference_counts) != len(edges) + 1 or len(current_counts) != len(edges) + 1:
        raise ValueError(f"{feature}: {len(edges)} edges need {len(edges) + 1} counts per sample")
    n_ref, n_cur = int(sum(reference_counts)), int(sum(current_counts))
    psi_value = psi(reference_counts, current_counts)
    p_value = ks_pvalue(ks_statistic, n_ref, n_cur)
    drifted, reason = numeric_decision(psi_value, ks_statistic, p_value, rules)
    return FeatureDrift(
        feature=feature,
        kind="numeric",
        psi=psi_value,
        drifted=drifted,
        reason=reason,
        histogram=Histogram.binned(edges, reference_counts, current_counts),
        ks_statistic=float(ks_statistic),
        ks_pvalue=p_value,
        reference=reference,
        current=current,
    )


def categorical_feature_drift(
    feature: str,
    reference_counts: Mapping[str, int],
    current_counts: Mapping[str, int],
    rules: DriftRules,
    *,
    reference: SampleStats | None = None,
    current: SampleStats | None = None,
) -> FeatureDrift:
    """Drift of a categorical (or boolean) feature from per-category counts (nulls excluded)."""
    # Reference order (most common first), then categories only the current sample has.
    categories = sorted((c for c, n in reference_counts.items() if n > 0), key=lambda c: (-reference_counts[c], c))
    categories += sorted(c for c, n in current_counts.items() if n > 0 and reference_counts.get(c, 0) == 0)
    ref = tuple(int(reference_counts.get(c, 0)) for c in categories)
    cur = tuple(int(current_counts.get(c, 0)) for c in categories)
    test = chi_square(reference_counts, current_counts)
    psi_value = psi(ref, cur)
    drifted, reason = categorical_decision(psi_value, test.pvalue, test.cramers_v, test.unseen_share, rules)
    return FeatureDrift(
        feature=feature,
        kind="categorical",
        psi=psi_value,
        drifted=drifted,
        reason=reason,
        histogram=Histogram(tuple(categories), ref, cur),
        chi2_statistic=test.statistic,
        chi2_pvalue=test.pvalue,
        cramers_v=test.cramers_v,
        unseen_share=test.unseen_share,
        unseen_categories=tuple(sorted(test.unseen_categories)),
        reference=reference,
        current=current,
    )


# --------------------------------------------------------------------------- predictions and performance


@dataclass(frozen=True)
class PredictionDrift:
    """PSI of the champion's predictions on one scored interval against earlier scored intervals."""

    psi: float
    threshold: float
    drifted: bool
    reason: str
    histogram: Histogram
    interval_start: datetime | None = None
    reference_intervals: tuple[datetime, ...] = ()


def prediction_drift(
    edges: Sequence[float],
    reference_counts: Sequence[int],
    current_counts: Sequence[int],
    rules: DriftRules,
    *,
    interval_start: datetime | None = None,
    reference_intervals: Sequence[datetime] = (),
) -> PredictionDrift:
    """Prediction drift: PSI on bins from the reference predictions >= ``prediction_psi_threshold``."""
    edges = tuple(edges)
    value = psi(reference_counts, current_counts)
    drifted = not math.isnan(value) and value >= rules.prediction_psi_threshold
    relation = "≥" if drifted else "<"
    reason = f"prediction PSI {_fmt(value)} {relation} {_fmt(rules.prediction_psi_threshold)}"
    return PredictionDrift(
        psi=value,
        threshold=rules.prediction_psi_threshold,
        drifted=drifted,
        reason=reason,
        histogram=Histogram.binned(edges, reference_counts, current_counts),
        interval_start=interval_start,
        reference_intervals=tuple(reference_intervals),
    )


def live_metrics(
    task: TaskType, labels: Sequence[float] | np.ndarray, predictions: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """Live performance from (label, prediction) pairs; NaN for a metric that cannot be computed.

    Classification: ``predictions`` are positive-class probabilities; f1 and accuracy use
    the 0.5 threshold; roc_auc and pr_auc need both classes. Regression: rmse, mae, r2
    (r2 needs two rows).
    """
    # sklearn is heavy and only this function needs it.
    from sklearn import metrics

    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"{y.shape[0]} labels but {p.shape[0]} predictions")
    if task == "classification":
        names = ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "accuracy")
        if y.size == 0:
            return dict.fromkeys(names, NAN)
        truth = (y >= 0.5).astype(np.int64)
        prob = np.clip(p, 0.0, 1.0)
        decided = (prob >= 0.5).astype(np.int64)
        both_classes = truth.min() != truth.max()
        return {
            "roc_auc": float(metrics.roc_auc_score(truth, prob)) if both_classes else NAN,
            "pr_auc": float(metrics.average_precision_score(truth, prob)) if both_classes else NAN,
            "log_loss": float(metrics.log_loss(truth, np.clip(prob, 1e-15, 1 - 1e-15), labels=[0, 1])),
            "brier": float(metrics.brier_score_loss(truth, prob, pos_label=1)),
            "f1": float(metrics.f1_score(truth, decided, zero_division=0)),
            "accuracy": float(metrics.accuracy_score(truth, decided)),
        }
    names = ("rmse", "mae", "r2")
    if y.size == 0:
        return dict.fromkeys(names, NAN)
    return {
        "rmse": float(math.sqrt(metrics.mean_squared_error(y, p))),
        "mae": float(metrics.mean_absolute_error(y, p)),
        "r2": float(metrics.r2_score(y, p)) if y.size >= 2 else NAN,
    }


@dataclass(frozen=True)
class PerformanceCheck:
    """Live value of the primary metric against the champion's holdout value."""

    metric: str
    live: float
    holdout: float | None
    labelled_rows: int
    decayed: bool
    reason: str


def performance_check(
    metric: str,
    live: Mapping[str, float],
    holdout: Mapping[str, float] | None,
    labelled_rows: int,
    rules: DriftRules,
) -> PerformanceCheck:
    """Decay: live ``metric`` worse than the holdout value by more than the tolerance, on enough labelled rows."""
    value = float(live.get(metric, NAN))
    reference = None if holdout is None or holdout.get(metric) is None else float(holdout[metric])

    def check(decayed: bool, reason: str) -> PerformanceCheck:
        return PerformanceCheck(metric, value, reference, labelled_rows, decayed, reason)

    if reference is None or math.isnan(reference):
        return check(False, f"no champion holdout value for {metric}")
    if labelled_rows < rules.min_labelled_rows:
        return check(False, f"only {labelled_rows} labelled rows (< {rules.min_labelled_rows}): {metric} not judged")
    if math.isnan(value):
        return check(False, f"live {metric} cannot be computed on {labelled_rows} labelled rows")
    worse_by = reference - value if METRIC_GREATER_IS_BETTER[metric] else value - reference
    if worse_by > rules.performance_tolerance:
        return check(
            True,
            (
                f"performance decay: live {metric} {_fmt(value)} on {labelled_rows} labelled rows is worse than the "
                f"champion's holdout {_fmt(reference)} by {_fmt(worse_by)} "
                f"(> tolerance {_fmt(rules.performance_tolerance)})"
            ),
        )
    return check(False, f"live {metric} {_fmt(value)} vs holdout {_fmt(reference)} on {labelled_rows} labelled rows")


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class SoftFailure:
    """A numeric feature whose mean left the reference mean +- tolerance_sd reference standard deviations."""

    feature: str
    reference_mean: float
    reference_sd: float
    current_mean: float
    tolerance_sd: float

    @property
    def shift_sd(self) -> float:
        """Signed shift of the mean in reference standard deviations (inf for a constant reference)."""
        delta = self.current_mean - self.reference_mean
        if self.reference_sd > 0:
            return delta / self.reference_sd
        return math.copysign(math.inf, delta)

    @property
    def message(self) -> str:
        return (
            f"mean of {self.feature} {_fmt(self.current_mean)} is outside the reference "
            f"{_fmt(self.reference_mean)} ± {_fmt(self.tolerance_sd)} sd of {_fmt(self.reference_sd)} "
            f"(shift {_fmt(self.shift_sd)} sd)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "reference_mean": self.reference_mean,
            "reference_sd": self.reference_sd,
            "current_mean": self.current_mean,
            "tolerance_sd": self.tolerance_sd,
            "message": self.message,
        }


def mean_shift_failures(features: Iterable[FeatureDrift], tolerance_sd: float) -> tuple[SoftFailure, ...]:
    """Soft expectation failures: numeric features whose current mean moved > tolerance_sd reference sds."""
    failures = []
    for f in features:
        if f.kind != "numeric" or f.reference is None or f.current is None:
            continue
        ref_mean, ref_sd, cur_mean = f.reference.mean, f.reference.sd, f.current.mean
        if any(math.isnan(x) for x in (ref_mean, cur_mean)):
            continue
        sd = 0.0 if math.isnan(ref_sd) else ref_sd
        # A constant reference still allows floating-point noise in the mean.
        allowed = tolerance_sd * sd if sd > 0 else 1e-9 * max(1.0, abs(ref_mean))
        if abs(cur_mean - ref_mean) > allowed:
            failures.append(SoftFailure(f.feature, ref_mean, sd, cur_mean, tolerance_sd))
    return tuple(failures)


@dataclass(frozen=True)
class DriftVerdict:
    """Everything the branch needs: what drifted, whether to retrain and why (one sentence per reason)."""

    features: tuple[FeatureDrift, ...]
    drifted_features: tuple[str, ...]
    prediction: PredictionDrift | None
    performance: PerformanceCheck | None
    soft_failures: tuple[SoftFailure, ...]
    should_retrain: bool
    reasons: tuple[str, ...]

    @property
    def prediction_drifted(self) -> bool:
        return self.prediction is not None and self.prediction.drifted

    @property
    def performance_decay(self) -> bool:
        return self.performance is not None and self.performance.decayed


def decide(
    spec: DatasetSpec,
    features: Sequence[FeatureDrift],
    *,
    prediction: PredictionDrift | None = None,
    performance: PerformanceCheck | None = None,
) -> DriftVerdict:
    """Combine per-feature drift, prediction drift, performance and soft expectations into one verdict."""
    rules = spec.drift
    drifted = tuple(f.feature for f in features if f.drifted)
    soft = mean_shift_failures(features, spec.validation.mean_shift_tolerance_sd)
    reasons: list[str] = []
    if drifted and len(drifted) >= rules.min_drifted_features:
        details = "; ".join(f"{f.feature} ({f.reason})" for f in features if f.drifted)
        reasons.append(f"{len(drifted)} feature(s) drifted (at least {rules.min_drifted_features} needed): {details}")
    if prediction is not None and prediction.drifted:
        reasons.append(f"prediction drift: {prediction.reason}")
    if performance is not None and performance.decayed:
        reasons.append(performance.reason)
    reasons += [f"soft expectation failed: {s.message}" for s in soft]
    return DriftVerdict(
        features=tuple(features),
        drifted_features=drifted,
        prediction=prediction,
        performance=performance,
        soft_failures=soft,
        should_retrain=bool(reasons),
        reasons=tuple(reasons),
    )


def no_champion_verdict() -> DriftVerdict:
    """The verdict when there is no champion (hence no reference): train one."""
    return DriftVerdict(
        features=(),
        drifted_features=(),
        prediction=None,
        performance=None,
        soft_failures=(),
        should_retrain=True,
        reasons=(NO_CHAMPION_REASON,),
    )
