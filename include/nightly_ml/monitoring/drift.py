"""Drift decisions: per-feature and prediction drift, soft mean shifts and the verdict.

A feature drifts when its PSI is beyond what sampling noise gives at the batch's size (the
calibrated null of :mod:`nightly_ml.monitoring.calibration`, at the spec's false-alarm rate
corrected for the number of tests) *and* beyond an effect-size floor (PSI >= ``psi_threshold``,
or KS statistic / Cramér's V >= 0.1), so that neither a 24-row batch nor a 2M-row one flags
noise or a practically null shift. KS and chi-square p-values are still computed and shown,
but they assume i.i.d. rows and no longer decide.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from nightly_ml.monitoring.calibration import NullThreshold
from nightly_ml.monitoring.performance import (
    PerformanceCheck as PerformanceCheck,
    live_metrics as live_metrics,
    performance_check as performance_check,
)
from nightly_ml.monitoring.plan import (
    PREDICTION_TEST,
    CalibrationPlan,
    IntervalMoments,
    calibration_plan as calibration_plan,
    default_plan,
    monitored_features as monitored_features,
    null_for,
)
from nightly_ml.monitoring.statistics import (
    MAX_UNSEEN_SHARE,
    MIN_CRAMERS_V,
    MIN_KS_STATISTIC,
    NAN,
    NO_CHAMPION_REASON,
    Histogram,
    Kind,
    SampleStats,
    _fmt,
    chi_square,
    ks_pvalue,
    psi,
)
from nightly_ml.spec import DatasetSpec, DriftRules

# --------------------------------------------------------------------------- per feature

# How a retrain trigger on a decay's later nights begins its reason (tasks.monitor): ops were mailed on the
# decay's first night, so such a trigger sends no mail of its own (the backtest counts mails by it).
DECAY_GOES_ON = "performance has decayed since"


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
    # the calibrated PSI threshold and the PSI's p-value under the simulated null (NaN: not tested)
    threshold: float = NAN
    null_pvalue: float = NAN
    null_method: str = ""
    null_level: float = NAN
    tested: bool = True
    # the calibrated soft mean-shift tolerance (allowed |current - reference mean|; NaN: none)
    mean_tolerance: float = NAN


def _beyondnull_for(psi_value: float, null: NullThreshold) -> str | None:
    # Strictly beyond: a degenerate feature (all rows in one bin, e.g. hours without rain) has PSI 0
    # and a null of 0, which says nothing.
    if math.isnan(psi_value) or psi_value <= null.threshold:
        return None
    return f"PSI {_fmt(psi_value)} ≥ {_fmt(null.threshold)} ({null.describe()}, p {_fmt(null.pvalue(psi_value))})"


def _decision(
    psi_value: float, effect: str, effect_value: float, effect_floor: float, null: NullThreshold, rules: DriftRules
) -> tuple[bool, str]:
    """PSI beyond the calibrated null, and an effect that matters: PSI >= psi_threshold or the effect size
    (KS D for numbers, Cramér's V for categories) >= its floor."""
    beyond = _beyondnull_for(psi_value, null)
    if beyond is None:
        return False, f"stable: PSI {_fmt(psi_value)} ≤ {_fmt(null.threshold)} ({null.describe()})"
    if psi_value >= rules.psi_threshold:
        return True, f"{beyond}, and ≥ {_fmt(rules.psi_threshold)}"
    if not math.isnan(effect_value) and effect_value >= effect_floor:
        return True, f"{beyond}, {effect} {_fmt(effect_value)} ≥ {effect_floor}"
    return False, (
        f"stable: {beyond}, but below the effect-size floors (PSI < {_fmt(rules.psi_threshold)}, "
        f"{effect} {_fmt(effect_value)} < {effect_floor})"
    )


def numeric_decision(psi_value: float, ks_statistic: float, null: NullThreshold, rules: DriftRules) -> tuple[bool, str]:
    """Numeric rule: PSI beyond the calibrated null, and PSI >= psi_threshold or KS D >= 0.1."""
    return _decision(psi_value, "KS statistic", ks_statistic, MIN_KS_STATISTIC, null, rules)


def categorical_decision(
    psi_value: float, cramers_v: float, unseen_share: float, null: NullThreshold | None, rules: DriftRules
) -> tuple[bool, str]:
    """Categorical rule: >= 5% unseen categories, or PSI beyond the null with PSI >= threshold or V >= 0.1."""
    if unseen_share >= MAX_UNSEEN_SHARE:
        return True, f"categories unseen in the reference make up {unseen_share:.1%} of rows (≥ {MAX_UNSEEN_SHARE:.0%})"
    if null is None:
        return False, "not tested"
    return _decision(psi_value, "Cramér's V", cramers_v, MIN_CRAMERS_V, null, rules)


def _null_fields(null: NullThreshold | None, psi_value: float) -> dict[str, Any]:
    """What a feature's result records of its calibrated null (NaN / empty when the test was skipped)."""
    return {
        "threshold": null.threshold if null else NAN,
        "null_pvalue": null.pvalue(psi_value) if null else NAN,
        "null_method": null.method if null else "",
        "null_level": null.level if null else NAN,
        "tested": null is not None,
    }


def _interval_matrix(reference_counts: Sequence[int] | np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Per-interval counts (K, B); a flat count vector is one interval (the i.i.d. rows null)."""
    matrix = np.asarray(reference_counts, dtype=np.int64)
    return matrix.reshape(1, -1) if matrix.ndim == 1 else matrix


def numeric_feature_drift(
    feature: str,
    edges: Sequence[float],
    reference_counts: Sequence[int] | np.ndarray | Sequence[Sequence[int]],
    current_counts: Sequence[int],
    ks_statistic: float,
    rules: DriftRules,
    *,
    reference: SampleStats | None = None,
    current: SampleStats | None = None,
    plan: CalibrationPlan | None = None,
    moments: IntervalMoments | None = None,
) -> FeatureDrift:
    """Drift of a numeric feature from reference-bin counts (per interval: K x bins) and the exact KS statistic."""
    edges = tuple(edges)
    intervals = _interval_matrix(reference_counts)
    if intervals.shape[1] != len(edges) + 1 or len(current_counts) != len(edges) + 1:
        raise ValueError(f"{feature}: {len(edges)} edges need {len(edges) + 1} counts per sample")
    plan = plan or default_plan(rules)
    totals = intervals.sum(axis=0)
    n_ref, n_cur = int(totals.sum()), int(sum(current_counts))
    psi_value = psi(totals, current_counts)
    iid = np.ndim(reference_counts) == 1
    null, skipped = null_for(intervals, n_cur, plan, feature, iid_rows=iid) if n_ref else (None, "no reference")
    if null is None:
        drifted, reason = False, skipped or "not tested"
    else:
        drifted, reason = numeric_decision(psi_value, ks_statistic, null, rules)
    tolerance = moments.tolerance(n_cur, plan.mean_level) if moments is not None and n_cur else None
    return FeatureDrift(
        feature=feature,
        kind="numeric",
        psi=psi_value,
        drifted=drifted,
        reason=reason,
        histogram=Histogram.binned(edges, totals, current_counts),
        ks_statistic=float(ks_statistic),
        ks_pvalue=ks_pvalue(ks_statistic, n_ref, n_cur),
        reference=reference,
        current=current,
        **_null_fields(null, psi_value),
        mean_tolerance=tolerance.tolerance if tolerance else NAN,
    )


def categorical_feature_drift(
    feature: str,
    reference_counts: Mapping[str, int],
    current_counts: Mapping[str, int],
    rules: DriftRules,
    *,
    reference: SampleStats | None = None,
    current: SampleStats | None = None,
    plan: CalibrationPlan | None = None,
    interval_counts: Sequence[Mapping[str, int]] | None = None,
) -> FeatureDrift:
    """Drift of a categorical (or boolean) feature from per-category counts (nulls excluded).

    ``interval_counts`` (per reference interval; they sum to ``reference_counts``) calibrate the
    null on whole intervals; without them the null draws i.i.d. rows.
    """
    # Reference order (most common first), then categories only the current sample has.
    categories = sorted((c for c, n in reference_counts.items() if n > 0), key=lambda c: (-reference_counts[c], c))
    categories += sorted(c for c, n in current_counts.items() if n > 0 and reference_counts.get(c, 0) == 0)
    ref = tuple(int(reference_counts.get(c, 0)) for c in categories)
    cur = tuple(int(current_counts.get(c, 0)) for c in categories)
    per_interval = [[int(counts.get(c, 0)) for c in categories] for counts in interval_counts or [reference_counts]]
    plan = plan or default_plan(rules)
    test = chi_square(reference_counts, current_counts)
    psi_value = psi(ref, cur)
    n_cur = sum(cur)
    iid = not interval_counts  # no per-interval counts: the caller states rows are independent
    null, skipped = (
        null_for(np.asarray(per_interval), n_cur, plan, feature, iid_rows=iid) if sum(ref) else (None, "no reference")
    )
    drifted, reason = categorical_decision(psi_value, test.cramers_v, test.unseen_share, null, rules)
    if null is None and not drifted:
        reason = skipped or reason
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
        **_null_fields(null, psi_value),
    )


# --------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class PredictionDrift:
    """PSI of the champion's predictions on one scored interval against earlier scored intervals.

    ``threshold`` is the calibrated PSI threshold (the spec's ``prediction_psi_threshold`` is the
    effect-size floor on top of it).
    """

    psi: float
    threshold: float
    drifted: bool
    reason: str
    histogram: Histogram
    interval_start: datetime | None = None
    reference_intervals: tuple[datetime, ...] = ()
    null_pvalue: float = NAN
    null_method: str = ""
    null_level: float = NAN


def prediction_drift(
    edges: Sequence[float],
    reference_counts: Sequence[int] | np.ndarray | Sequence[Sequence[int]],
    current_counts: Sequence[int],
    rules: DriftRules,
    *,
    interval_start: datetime | None = None,
    reference_intervals: Sequence[datetime] = (),
    plan: CalibrationPlan | None = None,
) -> PredictionDrift:
    """Prediction drift: PSI beyond the calibrated null (per scored interval) and >= ``prediction_psi_threshold``."""
    edges = tuple(edges)
    intervals = _interval_matrix(reference_counts)
    totals = intervals.sum(axis=0)
    value = psi(totals, current_counts)
    plan = plan or default_plan(rules)
    iid = np.ndim(reference_counts) == 1
    null, skipped = null_for(intervals, int(sum(current_counts)), plan, PREDICTION_TEST, iid_rows=iid)
    floor = rules.prediction_psi_threshold
    if null is None:
        drifted, reason = False, f"prediction drift {skipped}"
    else:
        threshold = max(null.threshold, floor)
        drifted = not math.isnan(value) and value > threshold
        relation = "≥" if drifted else "<"
        reason = (
            f"prediction PSI {_fmt(value)} {relation} {_fmt(threshold)} (the larger of the {null.describe()}, "
            f"{_fmt(null.threshold)}, and the floor {_fmt(floor)}; p {_fmt(null.pvalue(value))})"
        )
    return PredictionDrift(
        psi=value,
        threshold=null.threshold if null else NAN,
        drifted=drifted,
        reason=reason,
        histogram=Histogram.binned(edges, totals, current_counts),
        interval_start=interval_start,
        reference_intervals=tuple(reference_intervals),
        null_pvalue=null.pvalue(value) if null else NAN,
        null_method=null.method if null else "",
        null_level=null.level if null else NAN,
    )


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class SoftFailure:
    """A numeric feature whose mean left the reference mean by more than the allowed deviation.

    ``allowed`` is the larger of the calibrated tolerance (from the spread of the reference's
    per-interval means, at the spec's false-alarm rate) and the floor ``tolerance_sd`` reference
    standard deviations; without a calibrated tolerance the floor alone.
    """

    feature: str
    reference_mean: float
    reference_sd: float
    current_mean: float
    tolerance_sd: float
    allowed: float = NAN
    calibrated: float = NAN

    @property
    def shift_sd(self) -> float:
        """Signed shift of the mean in reference standard deviations (inf for a constant reference)."""
        delta = self.current_mean - self.reference_mean
        if self.reference_sd > 0:
            return delta / self.reference_sd
        return math.copysign(math.inf, delta)

    @property
    def message(self) -> str:
        source = (
            f"the calibrated tolerance {_fmt(self.calibrated)} from per-interval means"
            if not math.isnan(self.calibrated)
            else "no calibrated tolerance"
        )
        return (
            f"mean of {self.feature} {_fmt(self.current_mean)} is outside the reference "
            f"{_fmt(self.reference_mean)} ± {_fmt(self.allowed)} (the larger of {source} and "
            f"{_fmt(self.tolerance_sd)} sd of {_fmt(self.reference_sd)}; shift {_fmt(self.shift_sd)} sd)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "reference_mean": self.reference_mean,
            "reference_sd": self.reference_sd,
            "current_mean": self.current_mean,
            "tolerance_sd": self.tolerance_sd,
            "allowed": self.allowed,
            "calibrated_tolerance": self.calibrated,
            "message": self.message,
        }


def mean_shift_failures(features: Iterable[FeatureDrift], tolerance_sd: float) -> tuple[SoftFailure, ...]:
    """Soft expectation failures: numeric features whose mean moved beyond the calibrated tolerance and the floor."""
    failures = []
    for f in features:
        if f.kind != "numeric" or f.reference is None or f.current is None:
            continue
        ref_mean, ref_sd, cur_mean = f.reference.mean, f.reference.sd, f.current.mean
        if any(math.isnan(x) for x in (ref_mean, cur_mean)):
            continue
        sd = 0.0 if math.isnan(ref_sd) else ref_sd
        # A constant reference still allows floating-point noise in the mean.
        floor = tolerance_sd * sd if sd > 0 else 1e-9 * max(1.0, abs(ref_mean))
        allowed = max(floor, f.mean_tolerance) if not math.isnan(f.mean_tolerance) else floor
        if abs(cur_mean - ref_mean) > allowed:
            failures.append(SoftFailure(f.feature, ref_mean, sd, cur_mean, tolerance_sd, allowed, f.mean_tolerance))
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
