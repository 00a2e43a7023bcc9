"""Logging a training run to MLflow: params, metrics, datasets with digests, signature, model card; registered."""

from __future__ import annotations

import json
import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import mlflow
import mlflow.data
import mlflow.sklearn
import pandas as pd
import skops.io
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from sklearn.pipeline import Pipeline

from nightly_ml.config import settings
from nightly_ml.modeling import frames, model_card, training
from nightly_ml.registry.access import (
    _TAG_VALUE_LIMIT,
    _TRUSTED_MODULES,
    BASELINE_PREFIX,
    HOLDOUT_PREFIX,
    TAG_CODE_VERSION,
    TAG_DAG_ID,
    TAG_DATA_WINDOW_END,
    TAG_DATA_WINDOW_START,
    TAG_HOLDOUT_START,
    TAG_REFERENCE_WINDOW_END,
    TAG_REFERENCE_WINDOW_START,
    TAG_RUN_ID,
    TAG_SPEC_NAME,
    TAG_SPEC_VERSION,
    TAG_TASK_ID,
    TAG_TRIGGER_REASON,
    TAG_TRY_NUMBER,
    RegistryError,
    TrainingRecord,
    _client,
    _is_local_store,
    _mlflow,
    tracking_uri,
)
from nightly_ml.spec import DatasetSpec

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- logging a run


class WarehouseDatasetSource(DatasetSource):
    """Where a training frame came from: a warehouse table and an event-time window."""

    def __init__(self, dataset: str, table: str, window_start: str, window_end: str, rows: str) -> None:
        self.dataset = dataset
        self.table = table
        self.window_start = window_start
        self.window_end = window_end
        self.rows = rows

    @staticmethod
    def _get_source_type() -> str:
        return "nightly_ml_warehouse"

    def load(self) -> pd.DataFrame:
        """Re-read the labelled rows of the window (the training and holdout rows together)."""
        from nightly_ml.spec import load_spec

        spec = load_spec(self.dataset)
        return frames.load_training_frame(
            spec, datetime.fromisoformat(self.window_end), since=datetime.fromisoformat(self.window_start)
        )

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # only ever built explicitly, never guessed from a string

    @classmethod
    def _resolve(cls, raw_source: Any) -> WarehouseDatasetSource:
        raise NotImplementedError("WarehouseDatasetSource is built explicitly, not resolved from a string")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "table": self.table,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "rows": self.rows,
        }

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> WarehouseDatasetSource:
        return cls(**source_dict)


def _experiment_id(client: MlflowClient, name: str) -> str:
    """The dataset's experiment, created on first use.

    With a local store (the embedded default) artifacts go under the data dir rather than the
    worker's current directory; a tracking server chooses its own artifact location.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if _is_local_store(tracking_uri()):
        location = (settings().data_dir / "mlflow" / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        # Another run created it first: use theirs.
        return client.get_experiment_by_name(name).experiment_id


def _metric_key(text: str) -> str:
    return re.sub(r"[^\w.\- /]", "_", text)


def _prefixed(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {_metric_key(prefix + k): float(v) for k, v in metrics.items()}


def _skops_trusted_types(model: Any) -> list[str]:
    """The types skops must be told to trust to load ``model``: only scikit-learn/numpy/scipy ones."""
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_MODULES)]
    if foreign:
        raise RegistryError(f"the model contains types skops will not load safely: {foreign}")
    return list(untrusted)


def _input_example(features: pd.DataFrame) -> pd.DataFrame:
    complete = features.dropna()
    return (complete if len(complete) else features).head(5)


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _run_tags(
    spec: DatasetSpec,
    *,
    window: tuple[datetime, datetime],
    holdout_start: datetime,
    trigger: Mapping[str, Any],
    airflow_context: Mapping[str, Any],
) -> dict[str, str]:
    tags = {
        TAG_SPEC_NAME: spec.name,
        TAG_SPEC_VERSION: str(spec.version),
        TAG_CODE_VERSION: settings().code_version,
        TAG_TRIGGER_REASON: str(trigger.get("reason", "unspecified")),
        TAG_REFERENCE_WINDOW_START: window[0].isoformat(),
        TAG_REFERENCE_WINDOW_END: window[1].isoformat(),
        TAG_HOLDOUT_START: holdout_start.isoformat(),
        # The Airflow data interval that triggered training; the training window when run by hand.
        TAG_DATA_WINDOW_START: _iso(airflow_context.get("data_interval_start") or window[0]),
        TAG_DATA_WINDOW_END: _iso(airflow_context.get("data_interval_end") or window[1]),
    }
    for key, tag in (
        ("dag_id", TAG_DAG_ID),
        ("run_id", TAG_RUN_ID),
        ("task_id", TAG_TASK_ID),
        ("try_number", TAG_TRY_NUMBER),
    ):
        if airflow_context.get(key) is not None:
            tags[tag] = str(airflow_context[key])
    for key, value in trigger.items():
        if key != "reason":
            tags[f"trigger.{key}"] = json.dumps(value, default=str) if not isinstance(value, str) else value
    return {k: v[:_TAG_VALUE_LIMIT] for k, v in tags.items()}


def log_training_run(
    spec: DatasetSpec,
    *,
    model: Pipeline,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    slice_metrics: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, float],
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    window: tuple[datetime, datetime],
    trigger: Mapping[str, Any],
    airflow_context: Mapping[str, Any],
    candidate: training.TrainedCandidate | None = None,
    candidates: Sequence[training.TrainedCandidate] = (),
    holdout_start: datetime | None = None,
) -> TrainingRecord:
    """Log one training run (params, holdout metrics, datasets, tags, model card) and register the model.

    ``airflow_context`` may carry ``dag_id``, ``run_id``, ``task_id``, ``try_number``,
    ``data_interval_start`` and ``data_interval_end``; ``trigger`` carries at least ``reason``.
    Returns the new registered version; it is not promoted here.
    """
    client = _client()
    name = spec.registered_model_name
    if holdout_start is None:
        # The split's own boundary: with late labels it is not window end minus holdout_days.
        holdout_start = pd.Timestamp(holdout[spec.event_time].min()).to_pydatetime()
    best = candidate or training.TrainedCandidate(
        name=type(model[-1]).__name__,
        estimator=type(model[-1]).__name__,
        model=model,
        params=dict(params),
        cv_metric=spec.promotion.primary_metric,
        cv_score=math.nan,
    )
    card = model_card.model_card(
        spec,
        best=best,
        metrics=metrics,
        slice_metrics=slice_metrics,
        baseline=baseline,
        train=train,
        holdout=holdout,
        window=window,
        candidates=candidates,
    )
    features = frames.feature_frame(spec, train)
    example = _input_example(features)
    if spec.task == "classification":
        signature = infer_signature(features, model.predict_proba(example))
        predict_fn = "predict_proba"  # pyfunc serving returns probabilities, like scoring
    else:
        signature = infer_signature(features, model.predict(example))
        predict_fn = "predict"
    trusted = _skops_trusted_types(model)
    source = WarehouseDatasetSource(
        dataset=spec.name,
        table=f"warehouse.{spec.warehouse_table}",
        window_start=window[0].isoformat(),
        window_end=window[1].isoformat(),
        rows=f"labelled rows, event_time before {holdout_start.isoformat()}",
    )
    holdout_source = WarehouseDatasetSource(
        dataset=spec.name,
        table=f"warehouse.{spec.warehouse_table}",
        window_start=window[0].isoformat(),
        window_end=window[1].isoformat(),
        rows=f"labelled rows, event_time from {holdout_start.isoformat()}",
    )
    # Holdout numbers describe the model on the holdout dataset: they are linked to both.
    holdout_metrics = {
        **_prefixed(HOLDOUT_PREFIX, metrics),
        **{
            _metric_key(f"slice.{slice_name}.{metric}"): float(value)
            for slice_name, values in slice_metrics.items()
            for metric, value in values.items()
        },
    }
    other_metrics = {
        **_prefixed(BASELINE_PREFIX, baseline),
        "train_rows": float(len(train)),
        "holdout_rows": float(len(holdout)),
        **{_metric_key(f"cv_{c.name}_{c.cv_metric}"): c.cv_score for c in candidates},
    }
    run_params = {
        "candidate": best.name,
        "estimator": best.estimator,
        **{f"model.{k}": v for k, v in params.items()},
        "window_days": spec.training.window_days,
        "holdout_days": spec.training.holdout_days,
        "cv_folds": spec.training.cv_folds,
        "seed": spec.training.seed,
        "primary_metric": spec.promotion.primary_metric,
    }
    with _mlflow(f"logging a training run of {spec.name}"), warnings.catch_warnings():
        # The dataset frames keep the warehouse's integer columns on purpose; MLflow's hint about them is noise.
        warnings.filterwarnings("ignore", message=".*Integer columns in Python cannot represent missing")
        experiment_id = _experiment_id(client, spec.name)
        run_name = f"{spec.name}-{window[1]:%Y%m%dT%H%M}"
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            mlflow.set_tags(
                _run_tags(
                    spec, window=window, holdout_start=holdout_start, trigger=trigger, airflow_context=airflow_context
                )
            )
            mlflow.log_params({k: str(v) for k, v in run_params.items()})
            training_data = mlflow.data.from_pandas(
                train, source=source, targets=spec.label.name, name=f"{spec.name}_training"
            )
            holdout_data = mlflow.data.from_pandas(
                holdout, source=holdout_source, targets=spec.label.name, name=f"{spec.name}_holdout"
            )
            mlflow.log_input(training_data, context="training")
            mlflow.log_input(holdout_data, context="holdout")
            mlflow.log_text(card, "model_card.md")
            mlflow.log_dict({k: dict(v) for k, v in slice_metrics.items()}, "slice_metrics.json")
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=name,
                signature=signature,
                input_example=example,
                pyfunc_predict_fn=predict_fn,
                skops_trusted_types=trusted,
                # explicit requirements: inferring them would re-load the model in a subprocess
                pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
            )
            # Metrics go in after the model: log_model would otherwise re-read each one to link it.
            mlflow.log_metrics(holdout_metrics, model_id=info.model_id, dataset=holdout_data)
            mlflow.log_metrics(other_metrics)
        version = str(info.registered_model_version)
    return TrainingRecord(run_id=run.info.run_id, model_version=version, model_uri=f"models:/{name}/{version}")


def log_training_result(
    spec: DatasetSpec,
    result: training.TrainingResult,
    *,
    trigger: Mapping[str, Any],
    airflow_context: Mapping[str, Any],
) -> TrainingRecord:
    """:func:`log_training_run` for the output of :func:`nightly_ml.modeling.training.run_training`."""
    return log_training_run(
        spec,
        model=result.best.model,
        params=result.best.params,
        metrics=result.metrics,
        slice_metrics=result.slice_metrics,
        baseline=result.baseline,
        train=result.train,
        holdout=result.holdout,
        window=result.window,
        trigger=trigger,
        airflow_context=airflow_context,
        candidate=result.best,
        candidates=result.candidates,
        holdout_start=result.holdout_start,
    )
