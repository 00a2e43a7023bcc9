"""Drift decisions: per-feature and prediction drift, live performance, soft failures and the verdict."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

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
from nightly_ml.spec import METRIC_GREATER_IS_BETTER, DatasetSpec, DriftRules, TaskType


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
