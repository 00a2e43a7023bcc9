"""The dataset spec: everything that varies between datasets, validated on load.

One YAML file per dataset (``include/specs/<name>.yaml``). Adding a dataset is adding
a spec, never code. Errors name the file, the field and what is wrong with it.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from nightly_ml.spec_sections import (
    CLASSIFICATION_METRICS as CLASSIFICATION_METRICS,
    CRON_PRESETS as CRON_PRESETS,
    IDENTIFIER as IDENTIFIER,
    METRIC_GREATER_IS_BETTER as METRIC_GREATER_IS_BETTER,
    REGRESSION_METRICS as REGRESSION_METRICS,
    Candidate as Candidate,
    Column as Column,
    ColumnMapping as ColumnMapping,
    ColumnType as ColumnType,
    DatabaseSource as DatabaseSource,
    DriftRules as DriftRules,
    FilesSource as FilesSource,
    KeyColumn as KeyColumn,
    LabelColumn as LabelColumn,
    PromotionGate as PromotionGate,
    Scenario as Scenario,
    SimulatorFaults as SimulatorFaults,
    SimulatorSource as SimulatorSource,
    Source as Source,
    TaskType as TaskType,
    TrainingRules as TrainingRules,
    ValidationRules as ValidationRules,
    _Strict,
)


class SpecError(ValueError):
    """A dataset spec is missing, unreadable or invalid."""


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
    # The first interval of the dataset's history; intervals are of the spec's time zone.
    start_date: date
    timezone: str = "UTC"
    schedule: str = "@daily"
    catchup: bool = False
    columns: ColumnMapping = ColumnMapping()
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
        unknown_targets = sorted(set(self.columns.rename.values()) - set(names))
        if unknown_targets:
            raise ValueError(f"columns.rename maps onto unknown column(s) {unknown_targets}; known: {names}")
        ignored_needed = sorted(set(self.columns.ignore) & (set(names) - set(self.columns.rename.values())))
        if ignored_needed:
            raise ValueError(f"columns.ignore drops column(s) the spec needs: {ignored_needed}")
        if self.task == "classification" and self.label.type == "float":
            raise ValueError("a classification label must be integer (0/1) or boolean")
        if self.task == "regression" and self.label.type == "boolean":
            raise ValueError("a regression label must be numeric")
        return self

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'"
            ) from None
        return value

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        from croniter import croniter

        if value not in CRON_PRESETS and not croniter.is_valid(value):
            raise ValueError(f"schedule {value!r} is neither a cron expression nor one of {sorted(CRON_PRESETS)}")
        return value

    @model_validator(mode="after")
    def _start_date_not_in_future(self) -> DatasetSpec:
        from zoneinfo import ZoneInfo

        today = datetime.now(ZoneInfo(self.timezone)).date()
        if self.start_date > today:
            raise ValueError(
                f"start_date {self.start_date} is in the future (today is {today} in {self.timezone}): "
                "set it to the first day of the data the pipeline should load"
            )
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
    def zone(self) -> Any:
        """The spec's time zone as a ``zoneinfo.ZoneInfo``."""
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.timezone)

    @property
    def start(self) -> datetime:
        """The start of the first interval: local midnight of ``start_date`` in the spec's zone."""
        return datetime(self.start_date.year, self.start_date.month, self.start_date.day, tzinfo=self.zone)

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
    spec = _load_cached(path, path.stat().st_mtime_ns)
    _check_start_date_against_data(spec, path)
    return spec


def _check_start_date_against_data(spec: DatasetSpec, path: Path) -> None:
    """A files source whose landing or archive folder holds days before ``start_date`` would never load them."""
    if not isinstance(spec.source, FilesSource):
        return
    from nightly_ml import storage

    folders = [storage.files_source_root(spec.source.path), storage.archive_root() / spec.name]
    if not all(storage.is_local(folder) for folder in folders):
        return  # DAG files load specs at parse time, which must not list an object store over the network
    days = sorted(
        part.name[3:13] for folder in folders if folder.is_dir() for part in folder.glob("ds=*") if part.is_dir()
    )
    if days and days[0] < spec.start_date.isoformat():
        raise SpecError(
            f"invalid dataset spec {path}: start_date {spec.start_date} is after its data, which starts on "
            f"{days[0]} ({folders[0]}); set start_date: {days[0]} to load that history, or move the older "
            "folders away"
        )


def load_all_specs(spec_dir: Path | None = None) -> list[DatasetSpec]:
    from nightly_ml.config import settings

    directory = spec_dir or settings().spec_dir
    return [load_spec(name, directory) for name in spec_names(directory)]
