"""The calibration plan of one monitoring pass: which null quantile each test uses, and its seed.

``drift.false_alarm_rate`` is the share of unchanged nights on which the per-feature and
prediction drift tests together may flag: each of the F tests uses the ``1 - rate / F`` quantile
of its simulated null (Bonferroni: a fixed, storable threshold per test, unlike Holm's). The
soft mean-shift tests form their own family over the numeric features.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from nightly_ml.monitoring import calibration
from nightly_ml.monitoring.calibration import MeanTolerance, NullThreshold
from nightly_ml.spec import Column, DatasetSpec, DriftRules

PREDICTION_TEST = "_prediction"  # the seed name of the prediction test (also its drift_metrics feature)


def monitored_features(spec: DatasetSpec) -> list[Column]:
    """The features drift is measured on: the spec's ``monitored_features`` that are not free text.

    ``monitor_drift: false`` marks features whose per-interval distribution is fixed by the
    interval itself (``day_of_week`` in a daily batch never looks like a multi-day
    reference), which would otherwise flag every night. Free-text ``string`` features have
    no bins, and their per-value counts would grow with the data.
    """
    return [f for f in spec.monitored_features if f.type != "string"]


# --------------------------------------------------------------------------- calibration plan


@dataclass(frozen=True)
class CalibrationPlan:
    """How one night's tests are calibrated: null quantiles (Bonferroni) and the seed of the simulation."""

    level: float  # PSI tests: features and predictions
    mean_level: float  # soft mean-shift tests: numeric features
    seed: int = 0
    min_rows: int = 1

    def seed_for(self, name: str) -> int:
        return calibration.stable_seed(self.seed, name)


def calibration_plan(spec: DatasetSpec, interval_start: datetime | None = None) -> CalibrationPlan:
    """The plan of one interval: ``false_alarm_rate`` split over the per-feature tests (+1 for predictions).

    The seed comes from the dataset and the interval, so a re-run draws the same null.
    """
    features = monitored_features(spec)
    numeric = sum(f.is_numeric for f in features)
    rate = spec.drift.false_alarm_rate
    return CalibrationPlan(
        level=calibration.null_level(rate, len(features) + 1),
        mean_level=calibration.null_level(rate, max(numeric, 1)),
        seed=calibration.stable_seed(spec.name, interval_start.isoformat() if interval_start else ""),
        min_rows=spec.drift.min_rows_per_test,
    )


def default_plan(rules: DriftRules) -> CalibrationPlan:
    level = calibration.null_level(rules.false_alarm_rate, 1)
    return CalibrationPlan(level, level, 0, rules.min_rows_per_test)


@dataclass(frozen=True)
class IntervalMoments:
    """Rows, mean and population variance of a numeric feature in each reference interval."""

    sizes: tuple[int, ...]
    means: tuple[float, ...]
    variances: tuple[float, ...]

    def tolerance(self, n: int, level: float) -> MeanTolerance | None:
        return calibration.mean_tolerance(self.sizes, self.means, self.variances, n, level)


def null_for(
    interval_counts: np.ndarray, n: int, plan: CalibrationPlan, name: str, *, iid_rows: bool = False
) -> tuple[NullThreshold | None, str | None]:
    """The calibrated null of a test, or why the test is skipped."""
    if n < plan.min_rows:
        return None, f"not tested: {n} rows < {plan.min_rows} (drift.min_rows_per_test)"
    intervals = int(
        np.count_nonzero(np.asarray(interval_counts).reshape(-1, np.shape(interval_counts)[-1]).sum(axis=1))
    )
    # A few intervals cannot show how much whole intervals differ, and an i.i.d.-rows null would
    # call every ordinary day of correlated data (the hours of one day share its weather) a drift:
    # not tested until the reference holds enough intervals (e.g. a new champion's first nights).
    # ``iid_rows``: the caller gave pooled counts, stating rows are independent (the simulator's are).
    if not iid_rows and intervals < calibration.MIN_NULL_INTERVALS:
        return None, (
            f"not tested: only {intervals} reference intervals "
            f"(< {calibration.MIN_NULL_INTERVALS}) to calibrate its null"
        )
    return calibration.psi_threshold(interval_counts, n, plan.level, seed=plan.seed_for(name)), None
