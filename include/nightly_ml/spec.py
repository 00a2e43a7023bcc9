"""The dataset spec: everything that varies between datasets, validated on load.

One YAML file per dataset (``include/specs/<name>.yaml``). Adding a dataset is adding
a spec, never code. Errors name the file, the field and what is wrong with it.
"""

from __future__ import annotations

import re
from datetime import date
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class SpecError(ValueError):
    """A dataset spec is missing, unreadable or invalid."""


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


class SimulatorSource(_Strict):
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


class FilesSource(_Strict):
    """Files dropped per interval in ``<path>/ds=<YYYY-MM-DD>/`` (CSV or Parquet)."""

    kind: Literal["files"]
    path: str
    format: Literal["csv", "parquet"] = "csv"
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","


class DatabaseSource(_Strict):
    """A table in a source database, read by interval bounds on the event-time column."""

    kind: Literal["database"]
    url_env: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")]
    table: Annotated[str, Field(pattern=r"^([a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*$")]


Source = Annotated[SimulatorSource | FilesSource | DatabaseSource, Field(discriminator="kind")]


class ValidationRules(_Strict):
    max_bad_row_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05
    # Ops are mailed when at least this share of a merged batch was quarantined.
    alert_bad_row_fraction: Annotated[float, Field(ge=0, le=1)] = 0.01
    min_rows: Annotated[int, Field(ge=1)] = 1
    # Soft distribution checks learned from the champion's training data: the mean of a
    # numeric feature may move this many reference standard deviations before it flags.
    mean_shift_tolerance_sd: Annotated[float, Field(gt=0)] = 0.5


class DriftRules(_Strict):
    bins: Annotated[int, Field(ge=3, le=50)] = 10
    psi_threshold: Annotated[float, Field(gt=0)] = 0.2
    ks_pvalue: Annotated[float, Field(gt=0, lt=1)] = 0.001
    chi2_pvalue: Annotated[float, Field(gt=0, lt=1)] = 0.001
    min_drifted_features: Annotated[int, Field(ge=1)] = 1
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


class DatasetSpec(_Strict):
    name: Annotated[str, Field(pattern=IDENTIFIER)]
    description: str = ""
    version: Annotated[int, Field(ge=1)] = 1
    task: TaskType
    key: KeyColumn
    event_time: Annotated[str, Field(pattern=IDENTIFIER)]
    label: LabelColumn
    features: Annotated[tuple[Column, ...], Field(min_length=1)]
    source: Source
    schedule: str = "@daily"
    catchup: bool = False
    alert_emails: tuple[str, ...] = ()
    validation: ValidationRules = ValidationRules()
    drift: DriftRules = DriftRules()
    training: TrainingRules
    promotion: PromotionGate

    @model_validator(mode="after")
    def _check_consistency(self) -> DatasetSpec:
        names = [self.key.name, self.event_time, self.label.name, *(f.name for f in self.features)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"column names must be unique; repeated: {duplicates}")
        allowed_metrics = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        for metric in (self.promotion.primary_metric, *self.promotion.guard_metrics):
            if metric not in allowed_metrics:
                raise ValueError(
                    f"promotion metric {metric!r} does not fit a {self.task} task; use one of {sorted(allowed_metrics)}"
                )
        feature_names = {f.name for f in self.features}
        unknown_slices = sorted(set(self.promotion.slices) - feature_names)
        if unknown_slices:
            raise ValueError(f"promotion.slices names unknown feature(s) {unknown_slices}")
        for s in self.promotion.slices:
            if self.feature(s).type not in ("category", "boolean"):
                raise ValueError(f"promotion slice {s!r} must be a category or boolean feature")
        suffix = "_classifier" if self.task == "classification" else "_regressor"
        for cand in self.training.candidates:
            fits = cand.estimator.endswith(suffix) or (
                cand.estimator == "logistic_regression" if self.task == "classification" else cand.estimator == "ridge"
            )
            if not fits:
                raise ValueError(
                    f"candidate {cand.name!r}: estimator {cand.estimator!r} does not fit a {self.task} task"
                )
        if self.task == "classification" and self.label.type == "float":
            raise ValueError("a classification label must be integer (0/1) or boolean")
        if self.task == "regression" and self.label.type == "boolean":
            raise ValueError("a regression label must be numeric")
        return self

    def feature(self, name: str) -> Column:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def numeric_features(self) -> list[Column]:
        return [f for f in self.features if f.is_numeric]

    @property
    def categorical_features(self) -> list[Column]:
        return [f for f in self.features if not f.is_numeric]

    @property
    def monitored_features(self) -> list[Column]:
        return [f for f in self.features if f.monitor_drift]

    @property
    def input_columns(self) -> list[str]:
        """Every column a batch must carry, in canonical order."""
        return [self.key.name, self.event_time, *(f.name for f in self.features), self.label.name]

    @property
    def warehouse_table(self) -> str:
        return self.name

    @property
    def registered_model_name(self) -> str:
        return f"{self.name}_model"

    @property
    def greater_is_better(self) -> bool:
        return METRIC_GREATER_IS_BETTER[self.promotion.primary_metric]


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"invalid dataset spec {path}:"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "<root>"
        lines.append(f"  - {location}: {item['msg']}")
    return "\n".join(lines)


def parse_spec(raw: Any, *, origin: Path | str = "<memory>") -> DatasetSpec:
    """Validate an already-parsed YAML document as a dataset spec."""
    path = Path(origin)
    if not isinstance(raw, dict):
        raise SpecError(f"invalid dataset spec {path}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        spec = DatasetSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(_format_validation_error(path, error)) from None
    if path.suffix in (".yaml", ".yml") and spec.name != path.stem:
        raise SpecError(f"invalid dataset spec {path}: name {spec.name!r} must match the file name {path.stem!r}")
    return spec


def load_spec_file(path: Path) -> DatasetSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"cannot read dataset spec {path}: {error.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"dataset spec {path} is not valid YAML: {error}") from None
    return parse_spec(raw, origin=path)


def spec_names(spec_dir: Path) -> list[str]:
    return sorted(p.stem for p in spec_dir.glob("*.yaml") if re.match(IDENTIFIER, p.stem))


@cache
def _load_cached(path: Path, mtime_ns: int) -> DatasetSpec:
    return load_spec_file(path)


def load_spec(name: str, spec_dir: Path | None = None) -> DatasetSpec:
    """Load the spec called ``name`` from the spec directory (cached until the file changes)."""
    from nightly_ml.config import settings

    directory = spec_dir or settings().spec_dir
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(spec_names(directory)) or "none"
        raise SpecError(f"no dataset spec named {name!r} in {directory} (known: {known})")
    return _load_cached(path, path.stat().st_mtime_ns)


def load_all_specs(spec_dir: Path | None = None) -> list[DatasetSpec]:
    from nightly_ml.config import settings

    directory = spec_dir or settings().spec_dir
    return [load_spec(name, directory) for name in spec_names(directory)]
