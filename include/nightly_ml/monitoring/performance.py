"""Live performance: metrics on (label, prediction) pairs and the decay check against the champion's holdout."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nightly_ml.monitoring.statistics import NAN, _fmt
from nightly_ml.spec import METRIC_GREATER_IS_BETTER, DriftRules, TaskType


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
