"""The sections of a dataset spec: columns, source, validation, drift, training and promotion rules.

Each is a strict pydantic model (unknown fields are errors); :mod:`nightly_ml.spec` assembles them
into :class:`~nightly_ml.spec.DatasetSpec` and loads the YAML files.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IDENTIFIER = r"^[a-z][a-z0-9_]{0,40}$"
ColumnType = Literal["integer", "float", "category", "boolean", "string"]
TaskType = Literal["classification", "regression"]

# Direction of every metric the gate may name: True when larger is better.
METRIC_GREATER_IS_BETTER: dict[str, bool] = {
    "roc_auc": True,
    "pr_auc": True,
    "f1": True,
    "accuracy": True,
    "log_loss": False,
    "brier": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}
CLASSIFICATION_METRICS = {"roc_auc", "pr_auc", "f1", "accuracy", "log_loss", "brier"}
REGRESSION_METRICS = {"rmse", "mae", "r2"}


# Airflow's cron presets (the scheduler accepts them wherever it takes a cron expression).
CRON_PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Strict):
    name: Annotated[str, Field(pattern=IDENTIFIER)]
    type: ColumnType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    # False for features whose per-interval distribution differs from any multi-day reference by
    # construction (e.g. the weekday of a daily batch): drift checks skip them.
    monitor_drift: bool = True

    @model_validator(mode="after")
    def _check_constraints(self) -> Column:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.type == "category" and not self.allowed:
            raise ValueError("a category column needs a non-empty 'allowed' list")
        if self.type != "category" and self.allowed is not None:
            raise ValueError(f"'allowed' only applies to category columns, not {self.type}")
        if self.type not in ("integer", "float") and (self.min is not None or self.max is not None):
            raise ValueError(f"'min'/'max' only apply to numeric columns, not {self.type}")
        return self

    @property
    def is_numeric(self) -> bool:
        return self.type in ("integer", "float")


class KeyColumn(_Strict):
    name: Annotated[str, Field(pattern=IDENTIFIER)]
    type: Literal["integer", "string"] = "string"


class LabelColumn(_Strict):
    name: Annotated[str, Field(pattern=IDENTIFIER)]
    type: Literal["integer", "float", "boolean"]
    min: float | None = None
    max: float | None = None


Scenario = Literal["stationary", "sudden_covariate", "gradual_covariate", "concept", "new_category", "bad_data"]


class SimulatorFaults(_Strict):
    """Share of rows (or, for file-level faults, lines) hit by each data fault, every night."""

    nulls: Annotated[float, Field(ge=0, le=1)] = 0.0
    out_of_range: Annotated[float, Field(ge=0, le=1)] = 0.0
    unknown_category: Annotated[float, Field(ge=0, le=1)] = 0.0
    duplicate_keys: Annotated[float, Field(ge=0, le=1)] = 0.0
    wrong_type: Annotated[float, Field(ge=0, le=1)] = 0.0
    outside_interval: Annotated[float, Field(ge=0, le=1)] = 0.0
    malformed_lines: Annotated[float, Field(ge=0, le=1)] = 0.0


class _Waits(_Strict):
    # How long after the interval's end its input may still arrive: the run waits (a sensor in
    # reschedule mode, no worker slot held) until then, then fails and mails ops once.
    wait_hours: Annotated[float, Field(ge=0, le=24 * 14)] = 0.0


class SimulatorSource(_Waits):
    kind: Literal["simulator"]
    generator: Literal["churn", "demand"]
    seed: int = 42
    rows_per_interval: Annotated[int, Field(gt=0, le=5_000_000)] = 2000
    scenario: Scenario = "stationary"
    # First day (UTC) the scenario's change shows; nights before it are stationary.
    drift_start: date | None = None
    # For gradual drift: days from drift_start until the change is complete.
    drift_ramp_days: Annotated[int, Field(ge=1, le=365)] = 7
    label_delay_days: Annotated[int, Field(ge=0, le=60)] = 0
    faults: SimulatorFaults = SimulatorFaults()

    @model_validator(mode="after")
    def _drift_needs_start(self) -> SimulatorSource:
        if self.scenario != "stationary" and self.drift_start is None:
            raise ValueError(f"scenario {self.scenario!r} needs a drift_start date")
        return self


class FilesSource(_Waits):
    """Files dropped per interval in ``<path>/ds=<YYYY-MM-DD>/`` (CSV or Parquet), in local days of the spec's zone."""

    kind: Literal["files"]
    path: str
    format: Literal["csv", "parquet"] = "csv"
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    # Wait for this file in the partition folder before reading it (written last by the producer).
    success_marker: str | None = None


class DatabaseSource(_Waits):
    """A table in a source database, read by interval bounds on the event-time column."""

    kind: Literal["database"]
    url_env: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")]
    table: Annotated[str, Field(pattern=r"^([a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*$")]


Source = Annotated[SimulatorSource | FilesSource | DatabaseSource, Field(discriminator="kind")]


class ColumnMapping(_Strict):
    """How a source's columns map onto the spec: extra columns dropped, differently named ones renamed."""

    ignore: tuple[Annotated[str, Field(min_length=1, max_length=63)], ...] = ()
    # source name -> spec name
    rename: dict[Annotated[str, Field(min_length=1, max_length=63)], Annotated[str, Field(pattern=IDENTIFIER)]] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _check_mapping(self) -> ColumnMapping:
        both = sorted(set(self.ignore) & set(self.rename))
        if both:
            raise ValueError(f"column(s) {both} are both ignored and renamed")
        targets = list(self.rename.values())
        repeated = sorted({n for n in targets if targets.count(n) > 1})
        if repeated:
            raise ValueError(f"several source columns are renamed to {repeated}")
        return self


class ValidationRules(_Strict):
    max_bad_row_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05
    # Ops are mailed when at least this share of a merged batch was quarantined.
    alert_bad_row_fraction: Annotated[float, Field(ge=0, le=1)] = 0.01
    min_rows: Annotated[int, Field(ge=1)] = 1
    # Soft mean-shift expectation learned from the champion's training window: a numeric feature's
    # batch mean fails when it leaves what the spread of the reference's per-interval means allows
    # at drift.false_alarm_rate (corrected for the number of numeric features), and moves at least
    # this many reference row standard deviations (an effect-size floor, so that large, tightly
    # estimated batches do not fail on practically null shifts).
    mean_shift_tolerance_sd: Annotated[float, Field(gt=0)] = 0.5
    # A batch's keys must not already be stored under another interval that starts at most this many days
    # before the batch's (or any time after it). Unset: under any interval at all. The lookup reads every
    # interval it covers, so its cost grows with the history it spans (docs/PERFORMANCE.md).
    key_lookback_days: Annotated[int | None, Field(ge=1)] = None


class DriftRules(_Strict):
    """Drift tests: PSI beyond its null at the batch's size (calibrated), and beyond an effect-size floor.

    See :mod:`nightly_ml.monitoring.calibration` for how the null is simulated.
    """

    bins: Annotated[int, Field(ge=3, le=50)] = 10
    # Share of nights with no change on which the per-feature and prediction drift tests together may
    # flag (Bonferroni over the tests); also the soft mean-shift expectation's rate.
    false_alarm_rate: Annotated[float, Field(gt=0, lt=0.5)] = 0.01
    # The current batch pools the newest this-many intervals (after the reference window): set it
    # above 1 when one interval holds too few rows to show a change (e.g. hourly intervals).
    window_intervals: Annotated[int, Field(ge=1, le=90)] = 1
    # Fewer rows (non-null) than this: the test is skipped and the verdict says so. 20 rows give
    # every one of 10 bins two rows on average; below that a histogram test has next to no power.
    min_rows_per_test: Annotated[int, Field(ge=1)] = 20
    # Effect-size floors: a feature drifts only if, beyond the calibrated threshold, its PSI reaches
    # psi_threshold or its KS statistic (numeric) / Cramér's V (categorical) reaches 0.1.
    psi_threshold: Annotated[float, Field(gt=0)] = 0.2
    # Deprecated, ignored: i.i.d. p-values were replaced by the calibrated null (false_alarm_rate).
    ks_pvalue: Annotated[float | None, Field(gt=0, lt=1)] = None
    chi2_pvalue: Annotated[float | None, Field(gt=0, lt=1)] = None
    min_drifted_features: Annotated[int, Field(ge=1)] = 1
    # The effect-size floor of prediction drift (its PSI must also beat the calibrated threshold).
    prediction_psi_threshold: Annotated[float, Field(gt=0)] = 0.2
    # Live performance may fall this far (absolute, in the primary metric) below the
    # champion's holdout value before it triggers retraining.
    performance_tolerance: Annotated[float, Field(ge=0)] = 0.05
    min_labelled_rows: Annotated[int, Field(ge=1)] = 200
    # Live performance uses rows of the last this-many days whose labels have arrived: long
    # enough to hold labelled rows despite the label delay, short enough not to dilute a change.
    performance_lookback_days: Annotated[int, Field(ge=1, le=90)] = 7
    # After drift triggered retraining, further drift (not performance decay) does not trigger
    # again for this many days: the new challenger needs post-shift data to be any better.
    retrain_cooldown_days: Annotated[int, Field(ge=0, le=60)] = 0


class Candidate(_Strict):
    name: Annotated[str, Field(pattern=IDENTIFIER)]
    estimator: Literal[
        "logistic_regression",
        "random_forest_classifier",
        "hist_gradient_boosting_classifier",
        "ridge",
        "random_forest_regressor",
        "hist_gradient_boosting_regressor",
    ]
    params: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, tuple[Any, ...]] = Field(default_factory=dict)


class TrainingRules(_Strict):
    window_days: Annotated[int, Field(ge=1, le=3650)] = 28
    holdout_days: Annotated[int, Field(ge=1)] = 3
    min_rows: Annotated[int, Field(ge=10)] = 500
    seed: int = 7
    cv_folds: Annotated[int, Field(ge=2, le=10)] = 3
    candidates: Annotated[tuple[Candidate, ...], Field(min_length=1)]
    schedule: str | None = "@weekly"


class PromotionGate(_Strict):
    primary_metric: str
    min_improvement: Annotated[float, Field(ge=0)] = 0.0
    relative: bool = False
    guard_metrics: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    slices: tuple[str, ...] = ()
    # A challenger may lose this much (absolute) on the primary metric within a slice.
    slice_tolerance: Annotated[float, Field(ge=0)] = 0.02
    min_slice_rows: Annotated[int, Field(ge=1)] = 50
    # The paired bootstrap of the holdout: promote only if the challenger beats the reference by the
    # margin in at least this share of resamples (one-sided p-value <= 1 - confidence).
    confidence: float = 0.9
    bootstrap_resamples: Annotated[int, Field(ge=100, le=100_000)] = 1000
    # Whole local days are resampled (rows of one day share its conditions); a holdout with fewer days
    # than this is cut into hour slices within each day, as 3 blocks allow only 10 distinct resamples.
    bootstrap_min_blocks: Annotated[int, Field(ge=1, le=1000)] = 24

    @field_validator("confidence")
    @classmethod
    def _usable_confidence(cls, value: float) -> float:
        if not 0.5 <= value < 1:
            raise ValueError(
                f"promotion.confidence {value} must be at least 0.5 (a coin flip) and below 1 (no finite "
                "holdout gives certainty); 0.9 means a one-sided p-value of 0.1"
            )
        return value

    @field_validator("primary_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRIC_GREATER_IS_BETTER:
            raise ValueError(f"unknown metric {value!r}; known: {sorted(METRIC_GREATER_IS_BETTER)}")
        return value

    @field_validator("guard_metrics")
    @classmethod
    def _known_guards(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(METRIC_GREATER_IS_BETTER))
        if unknown:
            raise ValueError(f"unknown guard metric(s) {unknown}; known: {sorted(METRIC_GREATER_IS_BETTER)}")
        return value
