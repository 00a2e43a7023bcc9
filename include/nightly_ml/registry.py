"""The model registry: log training runs to MLflow and move the ``champion`` alias safely.

MLflow 3 has no stages; a dataset's serving model is the version behind the alias
``champion`` of ``spec.registered_model_name`` (``models:/<name>@champion``), and the one
before it keeps the alias ``previous_champion``. Every move of ``champion`` happens under a
PostgreSQL advisory lock and is recorded in ``ops.promotion_history`` in the same database
transaction, after checking that the champion is still the one the decision was made
against. A failure at any step leaves the champion where it was.

MLflow HTTP calls get short retries and timeouts (overridable by the usual ``MLFLOW_HTTP_*``
variables) so a dead tracking server fails a task in seconds with :class:`RegistryUnavailable`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
import mlflow.sklearn
import pandas as pd
import psycopg2.extensions
import requests
import skops.io
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException, RestException
from mlflow.models import infer_signature
from sklearn.pipeline import Pipeline

from nightly_ml import db, training
from nightly_ml.config import settings
from nightly_ml.promotion import Evaluation, GateDecision
from nightly_ml.spec import CLASSIFICATION_METRICS, REGRESSION_METRICS, DatasetSpec

log = logging.getLogger(__name__)

ALIAS_CHAMPION = "champion"
ALIAS_PREVIOUS = "previous_champion"

# Run tags (the drift monitor reads the reference window from the champion's run).
TAG_DAG_ID = "airflow.dag_id"
TAG_RUN_ID = "airflow.run_id"
TAG_TASK_ID = "airflow.task_id"
TAG_TRY_NUMBER = "airflow.try_number"
TAG_SPEC_NAME = "spec.name"
TAG_SPEC_VERSION = "spec.version"
TAG_CODE_VERSION = "code_version"
TAG_TRIGGER_REASON = "trigger.reason"
TAG_DATA_WINDOW_START = "data_window_start"
TAG_DATA_WINDOW_END = "data_window_end"
TAG_REFERENCE_WINDOW_START = "reference_window_start"
TAG_REFERENCE_WINDOW_END = "reference_window_end"
TAG_HOLDOUT_START = "holdout_window_start"
# Model-version tags.
TAG_REJECTED = "promotion_rejected"
TAG_PROMOTED_BY = "promoted_by"
TAG_PROMOTION_REASON = "promotion_reason"
TAG_ROLLED_BACK_BY = "rolled_back_by"

HOLDOUT_PREFIX = "holdout_"
BASELINE_PREFIX = "baseline_"
_TAG_VALUE_LIMIT = 4000
# Short retries: a nightly task should fail (and be retried by Airflow) rather than hang.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
_TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.")


class RegistryError(RuntimeError):
    """A registry operation could not be done (and changed nothing)."""


class RegistryUnavailable(RegistryError):
    """The MLflow tracking server could not be reached."""


class RollbackError(RegistryError):
    """A rollback target does not exist or makes no sense."""


class VersionNotFound(RegistryError, LookupError):
    """The registered model has no such version."""


@dataclass(frozen=True)
class TrainingRecord:
    run_id: str
    model_version: str
    model_uri: str  # models:/<name>/<version>


@dataclass(frozen=True)
class ChampionInfo:
    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float]  # holdout metrics logged by the training run, without the prefix
    reference_window: tuple[datetime, datetime] | None
    tags: dict[str, str]

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


@dataclass(frozen=True)
class ChampionEvaluation:
    """The champion evaluated on a challenger's holdout; pass ``version`` to :func:`promote`."""

    version: str
    evaluation: Evaluation


@dataclass(frozen=True)
class PromotionOutcome:
    action: str  # 'promote' | 'rollback' | 'reject'
    model_name: str
    from_version: str | None
    to_version: str
    reason: str
    history_id: int


# --------------------------------------------------------------------------- MLflow access


def tracking_uri() -> str:
    return settings().mlflow_tracking_uri


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def _client() -> MlflowClient:
    """A client on the configured server; the fluent API (used to log runs) points there too."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        # The embedded default lives under the data dir, which may not exist yet on a fresh machine.
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _is_unreachable(error: MlflowException) -> bool:
    # Transport failures (refused, timeout, 5xx after retries) come back as a plain MlflowException
    # whose message starts like this; a RestException is an answer from a live server.
    return not isinstance(error, RestException) and str(error.message).startswith("API request to")


@contextmanager
def _mlflow(action: str) -> Generator[None]:
    """Turn "cannot talk to MLflow" into :class:`RegistryUnavailable` naming the server."""
    try:
        yield
    except MlflowException as error:
        if _is_unreachable(error):
            raise RegistryUnavailable(_unavailable_message(action, error)) from error
        raise
    except requests.exceptions.RequestException as error:
        raise RegistryUnavailable(_unavailable_message(action, error)) from error


def _unavailable_message(action: str, error: Exception) -> str:
    return (
        f"MLflow tracking server {tracking_uri()} is unreachable while {action}; nothing was changed "
        f"(the champion alias did not move). Check that the server is up and MLFLOW_TRACKING_URI is right. "
        f"Cause: {str(error)[:300]}"
    )


def _none_if_missing(lookup: Callable[[], ModelVersion]) -> ModelVersion | None:
    """``lookup()``, or None when the registry says the model, version or alias does not exist.

    A server answers with a RestException, a local (SQLite) store with a plain MlflowException.
    """
    try:
        return lookup()
    except MlflowException as error:
        if _is_unreachable(error):
            raise
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        if error.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(error.message):
            return None  # the model exists but nothing carries the alias
        raise


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    return _none_if_missing(lambda: client.get_model_version_by_alias(name, alias))


def _version(client: MlflowClient, name: str, version: str) -> ModelVersion | None:
    return _none_if_missing(lambda: client.get_model_version(name, version))


def _existing_versions(client: MlflowClient, name: str) -> list[str]:
    found = client.search_model_versions(f"name = {_quoted(name)}")
    return sorted((v.version for v in found), key=int)


def _task_metrics(spec: DatasetSpec) -> set[str]:
    return CLASSIFICATION_METRICS if spec.task == "classification" else REGRESSION_METRICS


def _holdout_metrics(spec: DatasetSpec, logged: Mapping[str, float]) -> dict[str, float]:
    return {m: float(logged[HOLDOUT_PREFIX + m]) for m in sorted(_task_metrics(spec)) if HOLDOUT_PREFIX + m in logged}


def _parse_window(tags: Mapping[str, str]) -> tuple[datetime, datetime] | None:
    start, end = tags.get(TAG_REFERENCE_WINDOW_START), tags.get(TAG_REFERENCE_WINDOW_END)
    if not start or not end:
        return None
    return datetime.fromisoformat(start), datetime.fromisoformat(end)


def get_champion(spec: DatasetSpec) -> ChampionInfo | None:
    """The current champion (version, run, holdout metrics, reference window), or ``None``."""
    client = _client()
    name = spec.registered_model_name
    with _mlflow(f"looking up the champion of {name}"):
        version = _alias_version(client, name, ALIAS_CHAMPION)
        if version is None:
            return None
        run = client.get_run(version.run_id)
    tags = dict(run.data.tags)
    return ChampionInfo(
        model_name=name,
        version=str(version.version),
        run_id=version.run_id,
        metrics=_holdout_metrics(spec, run.data.metrics),
        reference_window=_parse_window(tags),
        tags=tags,
    )


def load_model(spec: DatasetSpec, version: str) -> Pipeline:
    """One registered version as the scikit-learn object it was logged as (keeps ``predict_proba``)."""
    _client()
    uri = f"models:/{spec.registered_model_name}/{version}"
    with _mlflow(f"loading {uri}"):
        return mlflow.sklearn.load_model(uri)


def load_champion_model(spec: DatasetSpec) -> tuple[str, Pipeline] | None:
    """``(version, model)`` of the champion, or ``None``.

    Resolves the alias to a version first, so the version reported is the one that was loaded
    even if the alias moves meanwhile.
    """
    client = _client()
    name = spec.registered_model_name
    with _mlflow(f"looking up the champion of {name}"):
        version = _alias_version(client, name, ALIAS_CHAMPION)
    if version is None:
        return None
    return str(version.version), load_model(spec, str(version.version))


def evaluate_champion_on(spec: DatasetSpec, holdout: pd.DataFrame) -> ChampionEvaluation | None:
    """The champion's metrics on ``holdout`` (the challenger's), or ``None`` without a champion.

    A champion that cannot score these rows (e.g. a feature it needs is gone) gets NaN
    metrics, which the gate reads as "broken champion".
    """
    if holdout.empty:
        raise ValueError(f"{spec.name}: cannot evaluate the champion on an empty holdout")
    features = training.feature_frame(spec, holdout)
    loaded = load_champion_model(spec)
    if loaded is None:
        return None
    version, model = loaded
    try:
        scores = training.predict_scores(spec, model, features)
    except ValueError as error:  # sklearn's answer to missing or incompatible columns
        log.warning(
            "champion %s v%s cannot score the holdout (%s); treating its metrics as NaN",
            spec.registered_model_name,
            version,
            error,
        )
        nan = {m: math.nan for m in _task_metrics(spec)}
        return ChampionEvaluation(version=version, evaluation=Evaluation(metrics=nan, slices={}))
    metrics = training.metrics_from_scores(spec, training.label_values(spec, holdout), scores)
    slices = training.slices_from_scores(spec, holdout, scores)
    return ChampionEvaluation(version=version, evaluation=Evaluation(metrics=metrics, slices=slices))


def _quoted(value: str) -> str:
    """A value for an MLflow search filter (no escaping exists there, so pick the quote it lacks)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search MLflow for a value holding both quote characters: {value!r}")


def version_for_airflow_run(spec: DatasetSpec, dag_id: str, run_id: str) -> str | None:
    """The version an Airflow run already registered (newest, from a finished MLflow run), or ``None``.

    Lets a retried training task reuse its earlier result instead of registering a duplicate.
    """
    client = _client()
    name = spec.registered_model_name
    with _mlflow(f"looking up the version registered by {dag_id}/{run_id}"):
        experiment = client.get_experiment_by_name(spec.name)
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"tags.`{TAG_DAG_ID}` = {_quoted(dag_id)} and tags.`{TAG_RUN_ID}` = {_quoted(run_id)} "
                "and attributes.status = 'FINISHED'"
            ),
        )
        versions = [
            int(v.version)
            for run in runs
            for v in client.search_model_versions(f"name = {_quoted(name)} and run_id = '{run.info.run_id}'")
        ]
    return str(max(versions)) if versions else None


def run_url(run_id: str) -> str | None:
    """The MLflow UI page of a run, when the tracking URI is a server (a local store has no UI address)."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    client = _client()
    with _mlflow(f"looking up run {run_id}"):
        experiment_id = client.get_run(run_id).info.experiment_id
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


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
        frame = training.load_training_frame(spec, datetime.fromisoformat(self.window_end))
        return frame[frame[spec.event_time] >= pd.Timestamp(self.window_start)]

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
) -> TrainingRecord:
    """Log one training run (params, holdout metrics, datasets, tags, model card) and register the model.

    ``airflow_context`` may carry ``dag_id``, ``run_id``, ``task_id``, ``try_number``,
    ``data_interval_start`` and ``data_interval_end``; ``trigger`` carries at least ``reason``.
    Returns the new registered version; it is not promoted here.
    """
    client = _client()
    name = spec.registered_model_name
    holdout_start = window[1] - pd.Timedelta(days=spec.training.holdout_days)
    best = candidate or training.TrainedCandidate(
        name=type(model[-1]).__name__,
        estimator=type(model[-1]).__name__,
        model=model,
        params=dict(params),
        cv_metric=spec.promotion.primary_metric,
        cv_score=math.nan,
    )
    card = training.model_card(
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
    features = training.feature_frame(spec, train)
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
    """:func:`log_training_run` for the output of :func:`nightly_ml.training.run_training`."""
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
    )


# --------------------------------------------------------------------------- moving the alias


def _lock_key(spec: DatasetSpec) -> str:
    return f"nightly_ml.champion:{spec.registered_model_name}"


def _json_safe(metrics: Mapping[str, Any]) -> dict[str, Any]:
    # jsonb has no NaN: a missing number is null.
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def _version_metrics(client: MlflowClient, spec: DatasetSpec, version: ModelVersion) -> dict[str, float]:
    return _holdout_metrics(spec, client.get_run(version.run_id).data.metrics)


def _record(
    cur: psycopg2.extensions.cursor,
    spec: DatasetSpec,
    *,
    action: str,
    from_version: str | None,
    to_version: str,
    actor: str,
    reason: str,
    metrics: Mapping[str, Any],
    gate_reasons: Sequence[str] = (),
) -> int:
    cur.execute(
        db.load_sql("registry_record.sql"),
        {
            "dataset": spec.name,
            "model_name": spec.registered_model_name,
            "from_version": from_version,
            "to_version": to_version,
            "action": action,
            "actor": actor,
            "reason": reason,
            "metrics": json.dumps(_json_safe(metrics)),
            "gate_reasons": json.dumps(list(gate_reasons)),
        },
    )
    return int(cur.fetchone()[0])


@dataclass
class _AliasMove:
    """Moves ``champion`` (and ``previous_champion``) and can put back exactly what it moved."""

    client: MlflowClient
    name: str
    old_champion: str | None
    old_previous: str | None
    changed: list[str] = field(default_factory=list)

    def apply(self, target: str) -> None:
        if self.old_champion is not None:
            self.changed.append(ALIAS_PREVIOUS)  # noted first: a failure mid-call must still restore it
            self.client.set_registered_model_alias(self.name, ALIAS_PREVIOUS, self.old_champion)
        self.changed.append(ALIAS_CHAMPION)
        self.client.set_registered_model_alias(self.name, ALIAS_CHAMPION, target)

    def restore(self) -> None:
        before = {ALIAS_CHAMPION: self.old_champion, ALIAS_PREVIOUS: self.old_previous}
        for alias in reversed(self.changed):
            if before[alias] is None:
                self.client.delete_registered_model_alias(self.name, alias)
            else:
                self.client.set_registered_model_alias(self.name, alias, before[alias])


@contextmanager
def _champion_lock(spec: DatasetSpec, url: str | None) -> Generator[tuple[psycopg2.extensions.cursor, _AliasMove]]:
    """Hold the dataset's advisory lock for one transaction; read the aliases inside it.

    If the transaction fails after the aliases moved (e.g. the commit), they are moved back,
    so history and registry never disagree.
    """
    client = _client()
    name = spec.registered_model_name
    conn = db.connect(url)
    move: _AliasMove | None = None
    try:
        with conn, conn.cursor() as cur:
            cur.execute(db.load_sql("registry_lock.sql"), {"lock_key": _lock_key(spec)})
            with _mlflow(f"reading the aliases of {name}"):
                champion = _alias_version(client, name, ALIAS_CHAMPION)
                previous = _alias_version(client, name, ALIAS_PREVIOUS)
            move = _AliasMove(
                client=client,
                name=name,
                old_champion=None if champion is None else str(champion.version),
                old_previous=None if previous is None else str(previous.version),
            )
            yield cur, move
    except BaseException as error:
        if move is not None and move.changed:
            try:
                with _mlflow(f"restoring the aliases of {name}"):
                    move.restore()
            except (MlflowException, RegistryError) as restore_error:
                raise RegistryError(
                    f"{name}: moving the champion failed ({error}) and putting the aliases back failed too "
                    f"({restore_error}); set '{ALIAS_CHAMPION}' to {move.old_champion} by hand"
                ) from error
        raise
    finally:
        conn.close()


def _require_version(
    client: MlflowClient, spec: DatasetSpec, version: str, doing: str, error: type[RegistryError] = VersionNotFound
) -> ModelVersion:
    name = spec.registered_model_name
    found = _version(client, name, version)
    if found is None:
        existing = ", ".join(_existing_versions(client, name)) or "none"
        raise error(f"cannot {doing} {name} version {version}: no such version (existing: {existing})")
    return found


def _tag(client: MlflowClient, name: str, version: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value[:_TAG_VALUE_LIMIT])


def promote(
    spec: DatasetSpec,
    version: str,
    decision: GateDecision,
    *,
    expected_champion: str | None,
    actor: str,
    reason: str,
    url: str | None = None,
) -> PromotionOutcome:
    """Make ``version`` the champion, if the champion is still ``expected_champion``.

    ``expected_champion`` is the version the gate compared against (``None``: there was no
    champion). If another promotion moved the champion meanwhile, nothing moves and a
    ``reject`` with reason ``stale: champion moved`` is recorded: re-evaluate against the new
    champion. Returns what happened.
    """
    if not decision.promote:
        raise ValueError(f"the gate rejected version {version}; call reject() instead of promote()")
    version = str(version)
    name = spec.registered_model_name
    with _champion_lock(spec, url) as (cur, move):
        client = move.client
        with _mlflow(f"promoting {name} version {version}"):
            target = _require_version(client, spec, version, "promote")
            metrics = {**_version_metrics(client, spec, target), "primary_delta": decision.primary_delta}
            if move.old_champion != (None if expected_champion is None else str(expected_champion)):
                stale = (
                    f"stale: champion moved from {expected_champion or 'none'} to {move.old_champion or 'none'} "
                    f"after the gate compared version {version} against it; re-evaluate against the new champion"
                )
                _tag(client, name, version, {TAG_REJECTED: stale})
                history_id = _record(
                    cur,
                    spec,
                    action="reject",
                    from_version=move.old_champion,
                    to_version=version,
                    actor=actor,
                    reason="stale: champion moved",
                    metrics=metrics,
                    gate_reasons=(stale, *decision.reasons),
                )
                return PromotionOutcome("reject", name, move.old_champion, version, stale, history_id)
            history_id = _record(
                cur,
                spec,
                action="promote",
                from_version=move.old_champion,
                to_version=version,
                actor=actor,
                reason=reason,
                metrics=metrics,
                gate_reasons=decision.reasons,
            )
            move.apply(version)
            _tag(client, name, version, {TAG_PROMOTED_BY: actor, TAG_PROMOTION_REASON: reason})
    log.info("%s: promoted version %s (was %s)", name, version, move.old_champion)
    return PromotionOutcome("promote", name, move.old_champion, version, reason, history_id)


def reject(
    spec: DatasetSpec,
    version: str,
    decision: GateDecision,
    *,
    actor: str = "promotion_gate",
    reason: str | None = None,
    url: str | None = None,
) -> PromotionOutcome:
    """Record that the gate rejected ``version``: tag it ``promotion_rejected`` and add a history row."""
    if decision.promote:
        raise ValueError(f"the gate passed version {version}; call promote() instead of reject()")
    version = str(version)
    name = spec.registered_model_name
    why = reason or " ".join(decision.reasons) or "rejected by the promotion gate"
    with _champion_lock(spec, url) as (cur, move):
        client = move.client
        with _mlflow(f"rejecting {name} version {version}"):
            target = _require_version(client, spec, version, "reject")
            metrics = {**_version_metrics(client, spec, target), "primary_delta": decision.primary_delta}
            _tag(client, name, version, {TAG_REJECTED: " ".join(decision.reasons) or why})
        history_id = _record(
            cur,
            spec,
            action="reject",
            from_version=move.old_champion,
            to_version=version,
            actor=actor,
            reason=why,
            metrics=metrics,
            gate_reasons=decision.reasons,
        )
    return PromotionOutcome("reject", name, move.old_champion, version, why, history_id)


def rollback(
    spec: DatasetSpec, target: str = "previous", *, actor: str, reason: str, url: str | None = None
) -> PromotionOutcome:
    """Move ``champion`` back: to the version before the latest move (``"previous"``) or to a version number.

    ``"previous"`` is the ``from_version`` of the latest promote/rollback in the history
    (the ``previous_champion`` alias when there is no history).
    """
    name = spec.registered_model_name
    with _champion_lock(spec, url) as (cur, move):
        client = move.client
        if target == "previous":
            cur.execute(db.load_sql("registry_last_move.sql"), {"model_name": name})
            last = cur.fetchone()
            if last is not None:
                if last[0] is None:
                    raise RollbackError(
                        f"cannot roll back {name}: its latest move ({last[2]} of version {last[1]}) "
                        "had no previous champion; name a version instead"
                    )
                wanted = str(last[0])
            elif move.old_previous is not None:
                wanted = move.old_previous
            else:
                raise RollbackError(f"cannot roll back {name}: no promotion history and no '{ALIAS_PREVIOUS}' alias")
        elif str(target).isdigit():
            wanted = str(int(target))
        else:
            raise RollbackError(f"rollback target must be 'previous' or a version number, got {target!r}")
        with _mlflow(f"rolling {name} back to version {wanted}"):
            version = _require_version(client, spec, wanted, "roll back to", RollbackError)
            if move.old_champion == wanted:
                raise RollbackError(f"cannot roll back {name} to version {wanted}: it is already the champion")
            metrics = _version_metrics(client, spec, version)
            history_id = _record(
                cur,
                spec,
                action="rollback",
                from_version=move.old_champion,
                to_version=wanted,
                actor=actor,
                reason=reason,
                metrics=metrics,
            )
            move.apply(wanted)
            _tag(client, name, wanted, {TAG_ROLLED_BACK_BY: actor, TAG_PROMOTION_REASON: f"rollback: {reason}"})
    log.info("%s: rolled back to version %s (was %s)", name, wanted, move.old_champion)
    return PromotionOutcome("rollback", name, move.old_champion, wanted, reason, history_id)


def promotion_history(spec: DatasetSpec, *, limit: int = 100, url: str | None = None) -> list[dict[str, Any]]:
    """The model's history rows, newest first."""
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(db.load_sql("registry_history.sql"), {"model_name": spec.registered_model_name, "limit": limit})
        columns = [c.name for c in cur.description]
        return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
