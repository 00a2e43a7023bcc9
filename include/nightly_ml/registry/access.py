"""MLflow access: the client with short retries, registry errors, the champion and its model.

MLflow 3 has no stages; a dataset's serving model is the version behind the alias ``champion``
of ``spec.registered_model_name``. MLflow HTTP calls get short retries and timeouts (overridable by
the usual ``MLFLOW_HTTP_*`` variables) so a dead tracking server fails a task in seconds with
:class:`RegistryUnavailable`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
import requests
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException, RestException
from sklearn.pipeline import Pipeline

from nightly_ml import db
from nightly_ml.config import apply_library_defaults, settings
from nightly_ml.modeling import evaluation, frames
from nightly_ml.modeling.promotion import Evaluation
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

    def trained_on(self, start: datetime, end: datetime) -> bool:
        """Whether its training window (the reference window) overlaps ``[start, end)``."""
        if self.reference_window is None:
            return False
        window_start, window_end = self.reference_window
        return window_start < end and start < window_end


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
    apply_library_defaults(HTTP_DEFAULTS)
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
    return _info(client, spec, version)


def version_info(spec: DatasetSpec, version: str) -> ChampionInfo | None:
    """What :func:`get_champion` says of the champion, for any registered version (``None``: no such version)."""
    client = _client()
    name = spec.registered_model_name
    with _mlflow(f"looking up {name} version {version}"):
        found = _version(client, name, str(version))
    return None if found is None else _info(client, spec, found)


def champion_at(spec: DatasetSpec, moment: datetime, url: str | None = None) -> str | None:
    """The version that was champion at ``moment``, from the recorded moves (``ops.promotion_history``).

    A move decided on an interval's monitoring takes effect at that interval's end (the data moment, so a
    night replayed later keeps its order); a move by hand when it was made. ``None`` when no recorded move
    had taken effect yet. With no move recorded at all (an alias set outside :mod:`aliases`), the current
    champion: the caller checks that it was not trained on the interval it is asked about.
    """
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            db.load_sql("registry_champion_at.sql"), {"model_name": spec.registered_model_name, "moment": moment}
        )
        version, recorded = cur.fetchone()
    if recorded:
        return None if version is None else str(version)
    current = get_champion(spec)
    return None if current is None else current.version


def _info(client: MlflowClient, spec: DatasetSpec, version: ModelVersion) -> ChampionInfo:
    name = spec.registered_model_name
    with _mlflow(f"reading the training run of {name} version {version.version}"):
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

    The evaluation carries the champion's per-row scores, so the gate can pair them with the
    challenger's row by row. A champion that cannot score these rows (e.g. a feature it needs is gone) gets NaN
    metrics, which the gate reads as "broken champion".
    """
    if holdout.empty:
        raise ValueError(f"{spec.name}: cannot evaluate the champion on an empty holdout")
    features = frames.feature_frame(spec, holdout)
    loaded = load_champion_model(spec)
    if loaded is None:
        return None
    version, model = loaded
    try:
        scores = evaluation.predict_scores(spec, model, features)
    except ValueError as error:  # sklearn's answer to missing or incompatible columns
        log.warning(
            "champion %s v%s cannot score the holdout (%s); treating its metrics as NaN",
            spec.registered_model_name,
            version,
            error,
        )
        nan = {m: math.nan for m in _task_metrics(spec)}
        return ChampionEvaluation(version=version, evaluation=Evaluation(metrics=nan, slices={}))
    return ChampionEvaluation(version=version, evaluation=evaluation.scored_evaluation(spec, holdout, scores))


def trigger_interval(spec: DatasetSpec, version: str) -> tuple[datetime, datetime] | None:
    """The data interval whose run triggered the training of ``version`` (its run's ``trigger.interval_*``
    tags), or ``None`` when it was trained by hand or the tags are missing."""
    client = _client()
    name = spec.registered_model_name
    with _mlflow(f"reading the trigger of {name} version {version}"):
        found = _version(client, name, str(version))
        tags = dict(client.get_run(found.run_id).data.tags) if found is not None else {}
    try:
        start, end = (datetime.fromisoformat(tags[f"trigger.interval_{side}"]) for side in ("start", "end"))
    except (KeyError, ValueError):  # absent, or "null" when the run had no interval
        return None
    return start, end


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
