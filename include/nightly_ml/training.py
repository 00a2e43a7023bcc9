"""Training: build the window from the warehouse, fit candidate pipelines, evaluate them.

Everything except :func:`load_training_frame` is pure (data in, models and numbers out), so
each step is tested on small in-memory frames. Seeds come from the spec: the same rows give
the same model. Frames carry the warehouse's column names (key, event time, features,
label); :func:`feature_frame` turns one into the model's input, and scoring uses the same
function so training and serving never disagree on types.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from psycopg2 import sql
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from nightly_ml import db
from nightly_ml.promotion import Evaluation
from nightly_ml.spec import METRIC_GREATER_IS_BETTER, Candidate, Column, DatasetSpec

ESTIMATORS: dict[str, Callable[..., BaseEstimator]] = {
    "logistic_regression": LogisticRegression,
    "random_forest_classifier": RandomForestClassifier,
    "hist_gradient_boosting_classifier": HistGradientBoostingClassifier,
    "ridge": Ridge,
    "random_forest_regressor": RandomForestRegressor,
    "hist_gradient_boosting_regressor": HistGradientBoostingRegressor,
}

# sklearn scorer per gate metric; "neg_" scorers are negated back to natural units.
SCORERS: dict[str, str] = {
    "roc_auc": "roc_auc",
    "pr_auc": "average_precision",
    "log_loss": "neg_log_loss",
    "brier": "neg_brier_score",
    "f1": "f1",
    "accuracy": "accuracy",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
}

DECISION_THRESHOLD = 0.5
FETCH_ROWS = 20_000
_MODEL_STEP = "model"


class TrainingDataError(ValueError):
    """The training window cannot give a trustworthy model (too few rows, an empty side, one class)."""


@dataclass(frozen=True)
class TrainedCandidate:
    """The best pipeline of one candidate's search, refitted on the whole training set."""

    name: str
    estimator: str
    model: Pipeline
    params: dict[str, Any]
    cv_metric: str
    cv_score: float  # in the metric's natural units (rmse positive, log_loss positive)


@dataclass(frozen=True)
class TrainingResult:
    """Everything one training run produced, ready for the registry and the promotion gate."""

    best: TrainedCandidate
    candidates: tuple[TrainedCandidate, ...]
    metrics: dict[str, float]
    slice_metrics: dict[str, dict[str, float]]
    baseline: dict[str, float]
    train: pd.DataFrame
    holdout: pd.DataFrame
    window: tuple[datetime, datetime]
    holdout_start: datetime

    @property
    def evaluation(self) -> Evaluation:
        return Evaluation(metrics=self.metrics, slices=self.slice_metrics)

    @property
    def baseline_evaluation(self) -> Evaluation:
        return Evaluation(metrics=self.baseline, slices={})


# --------------------------------------------------------------------------- data


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: pass a timezone-aware (UTC) moment")
    return moment.astimezone(UTC)


def training_window(spec: DatasetSpec, window_end: datetime) -> tuple[datetime, datetime]:
    """``[window_end - window_days, window_end)``."""
    end = _utc(window_end)
    return end - timedelta(days=spec.training.window_days), end


def frame_columns(spec: DatasetSpec) -> list[str]:
    """The columns training reads: key, event time, features, label."""
    return [spec.key.name, spec.event_time, *(f.name for f in spec.features), spec.label.name]


def coerce_frame(spec: DatasetSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Give rows straight from the database (Python objects, ``None`` for NULL) stable dtypes."""
    out = frame.copy()
    out[spec.event_time] = pd.to_datetime(out[spec.event_time], utc=True)
    if spec.label.name in out:
        out[spec.label.name] = pd.to_numeric(out[spec.label.name].astype(object), errors="raise")
    for column in spec.numeric_features:
        out[column.name] = pd.to_numeric(out[column.name].astype(object), errors="raise").astype("float64")
    return out


def load_training_frame(spec: DatasetSpec, window_end: datetime, url: str | None = None) -> pd.DataFrame:
    """Labelled rows with event time in the training window, streamed from the warehouse.

    Reads through a server-side cursor in blocks of ``FETCH_ROWS``, so the only full copy
    in memory is the resulting frame (which training needs anyway).
    """
    start, end = training_window(spec, window_end)
    columns = frame_columns(spec)
    statement = db.compose(
        "training_frame.sql",
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        warehouse=db.warehouse_table(spec),
        event_time=spec.event_time,
        label=spec.label.name,
        key=spec.key.name,
    )
    blocks: list[pd.DataFrame] = []
    with db.transaction(url) as conn, conn.cursor(name=f"training_{spec.name}") as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(statement, {"window_start": start, "window_end": end})
        while rows := cur.fetchmany(FETCH_ROWS):
            blocks.append(pd.DataFrame.from_records(rows, columns=columns))
    if not blocks:
        return coerce_frame(spec, pd.DataFrame({c: pd.Series(dtype=object) for c in columns}))
    return coerce_frame(spec, pd.concat(blocks, ignore_index=True))


def feature_frame(spec: DatasetSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The model's input: numeric features as float64, categories and booleans as strings (NaN = missing).

    Booleans become ``"true"``/``"false"`` so they one-hot encode like any category, whatever
    the source handed us (numpy bools, Python bools, pandas' nullable booleans).
    """
    out: dict[str, pd.Series] = {}
    for column in spec.features:
        values = frame[column.name].astype(object)
        if column.is_numeric:
            out[column.name] = pd.to_numeric(values, errors="raise").astype("float64")
        elif column.type == "boolean":
            out[column.name] = values.map(_bool_text).astype(object)
        else:
            out[column.name] = values.map(lambda v: np.nan if _is_missing(v) else str(v)).astype(object)
    return pd.DataFrame(out, index=frame.index)


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _bool_text(value: Any) -> Any:
    if _is_missing(value):
        return np.nan
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "t", "1", "yes"):
            return "true"
        if lowered in ("false", "f", "0", "no"):
            return "false"
        raise ValueError(f"not a boolean: {value!r}")
    return "true" if bool(value) else "false"


def label_values(spec: DatasetSpec, frame: pd.DataFrame) -> np.ndarray:
    """The label as int 0/1 (classification) or float (regression)."""
    values = pd.to_numeric(frame[spec.label.name].astype(object), errors="raise")
    if values.isna().any():
        raise TrainingDataError(f"{int(values.isna().sum())} row(s) have no label {spec.label.name!r}")
    if spec.task == "classification":
        return values.astype("int64").to_numpy()
    return values.astype("float64").to_numpy()


def _sorted_by_time(spec: DatasetSpec, frame: pd.DataFrame) -> pd.DataFrame:
    # mergesort is stable: ties keep their (key-ordered) position, so the order is reproducible.
    return frame.sort_values([spec.event_time, spec.key.name], kind="mergesort").reset_index(drop=True)


def holdout_start_of(spec: DatasetSpec, frame: pd.DataFrame, window_end: datetime | None = None) -> datetime:
    """Start of the holdout: ``holdout_days`` before the end of the newest *labelled* day in the frame.

    Labels arrive late, so the newest days of a window are often unlabelled: the holdout is
    the newest labelled data (capped at ``window_end``), not the window's last days.
    """
    times = pd.to_datetime(frame[spec.event_time], utc=True)
    end = times.max().floor("D") + pd.Timedelta(days=1) if len(times) else pd.Timestamp(_utc(window_end))
    if window_end is not None:
        end = min(end, pd.Timestamp(_utc(window_end)))
    return (end - pd.Timedelta(days=spec.training.holdout_days)).to_pydatetime()


def time_split(
    spec: DatasetSpec, frame: pd.DataFrame, window_end: datetime | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off the newest ``holdout_days`` of the window as the holdout; the rest trains.

    Without ``window_end`` the window ends at the newest event time in the frame.
    Raises :class:`TrainingDataError` when either side is empty, the training side has
    fewer than ``spec.training.min_rows`` rows, or (classification) it holds one class only.
    """
    if frame.empty:
        raise TrainingDataError(f"{spec.name}: the training window holds no labelled rows")
    times = pd.to_datetime(frame[spec.event_time], utc=True)
    holdout_start = pd.Timestamp(holdout_start_of(spec, frame, window_end))
    end = holdout_start + pd.Timedelta(days=spec.training.holdout_days)
    is_holdout = times >= holdout_start
    train = _sorted_by_time(spec, frame[~is_holdout])
    holdout = _sorted_by_time(spec, frame[is_holdout])
    where = f"holdout starts {holdout_start.isoformat()} ({spec.training.holdout_days} day(s) before {end.isoformat()})"
    if train.empty:
        raise TrainingDataError(f"{spec.name}: no labelled rows before the holdout; {where}")
    if holdout.empty:
        raise TrainingDataError(f"{spec.name}: no labelled rows in the holdout; {where}")
    if len(train) < spec.training.min_rows:
        raise TrainingDataError(
            f"{spec.name}: only {len(train)} labelled training row(s) before the holdout; "
            f"spec.training.min_rows requires at least {spec.training.min_rows} ({where})"
        )
    if spec.task == "classification":
        classes = sorted(set(label_values(spec, train).tolist()))
        if len(classes) < 2:
            raise TrainingDataError(
                f"{spec.name}: the training rows hold only label class {classes}; a classifier needs both 0 and 1"
            )
    return train, holdout


# --------------------------------------------------------------------------- models


def build_pipeline(spec: DatasetSpec, candidate: Candidate, params: Mapping[str, Any] | None = None) -> Pipeline:
    """Preprocessing (impute, scale, one-hot) plus the candidate's estimator, seeded from the spec."""
    numeric = [f.name for f in spec.numeric_features]
    categorical = [f.name for f in spec.categorical_features]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric)
        )
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            )
        )
    factory = ESTIMATORS[candidate.estimator]
    arguments = {**candidate.params, **(params or {})}
    if "random_state" in inspect.signature(factory).parameters:
        arguments.setdefault("random_state", spec.training.seed)
    return Pipeline([("preprocess", ColumnTransformer(transformers)), (_MODEL_STEP, factory(**arguments))])


def _natural(metric: str, score: float) -> float:
    return -score if SCORERS[metric].startswith("neg_") else score


def train_candidates(spec: DatasetSpec, train: pd.DataFrame) -> list[TrainedCandidate]:
    """A small grid search per candidate with time-ordered CV, scored by the gate's primary metric."""
    metric = spec.promotion.primary_metric
    ordered = _sorted_by_time(spec, train)
    features, labels = feature_frame(spec, ordered), label_values(spec, ordered)
    results: list[TrainedCandidate] = []
    for candidate in spec.training.candidates:
        grid = {f"{_MODEL_STEP}__{name}": list(values) for name, values in candidate.search.items()}
        search = GridSearchCV(
            build_pipeline(spec, candidate),
            param_grid=grid,
            scoring=SCORERS[metric],
            cv=TimeSeriesSplit(n_splits=spec.training.cv_folds),
            n_jobs=1,
            refit=True,
            error_score="raise",
        )
        search.fit(features, labels)
        params = {name.removeprefix(f"{_MODEL_STEP}__"): value for name, value in search.best_params_.items()}
        results.append(
            TrainedCandidate(
                name=candidate.name,
                estimator=candidate.estimator,
                model=search.best_estimator_,
                params={**candidate.params, **params},
                cv_metric=metric,
                cv_score=float(_natural(metric, search.best_score_)),
            )
        )
    return results


def best_candidate(spec: DatasetSpec, candidates: Sequence[TrainedCandidate]) -> TrainedCandidate:
    """The candidate with the best CV score; ties go to the one listed first in the spec."""
    usable = [c for c in candidates if not math.isnan(c.cv_score)]
    if not usable:
        raise TrainingDataError(f"{spec.name}: no candidate produced a cross-validation score")
    sign = 1.0 if METRIC_GREATER_IS_BETTER[spec.promotion.primary_metric] else -1.0
    return max(usable, key=lambda c: sign * c.cv_score)  # max keeps the first of equal keys


# --------------------------------------------------------------------------- evaluation


def predict_scores(spec: DatasetSpec, model: Any, features: pd.DataFrame) -> np.ndarray:
    """Regression values, or the probability of class 1 for classification."""
    if spec.task == "regression":
        return np.asarray(model.predict(features), dtype="float64")
    probabilities = np.asarray(model.predict_proba(features), dtype="float64")
    classes = list(model.classes_)
    if 1 not in classes:
        return np.zeros(len(features))
    return probabilities[:, classes.index(1)]


def metrics_from_scores(spec: DatasetSpec, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Every metric of the task, from labels and predicted scores (see :func:`predict_scores`)."""
    if len(labels) == 0:
        raise ValueError(f"{spec.name}: cannot evaluate on zero rows")
    if spec.task == "regression":
        return {
            "rmse": float(root_mean_squared_error(labels, scores)),
            "mae": float(mean_absolute_error(labels, scores)),
            "r2": float(r2_score(labels, scores)) if len(labels) > 1 else math.nan,
        }
    labels = labels.astype("int64")
    both_classes = len(np.unique(labels)) == 2
    predicted = (scores >= DECISION_THRESHOLD).astype("int64")
    clipped = np.clip(scores, 1e-15, 1 - 1e-15)
    return {
        # Ranking metrics are undefined with one class: NaN says so instead of a made-up number.
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(labels, scores)) if both_classes else math.nan,
        "log_loss": float(log_loss(labels, clipped, labels=[0, 1])),
        "brier": float(np.mean((scores - labels) ** 2)),
        "f1": float(f1_score(labels, predicted, zero_division=0.0)),
        "accuracy": float(accuracy_score(labels, predicted)),
    }


def evaluate(spec: DatasetSpec, model: Any, frame: pd.DataFrame) -> dict[str, float]:
    """Classification: roc_auc, pr_auc, log_loss, brier, f1, accuracy; regression: rmse, mae, r2."""
    if frame.empty:
        raise ValueError(f"{spec.name}: cannot evaluate on an empty frame")
    return metrics_from_scores(spec, label_values(spec, frame), predict_scores(spec, model, feature_frame(spec, frame)))


def evaluate_slices(spec: DatasetSpec, model: Any, frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Metrics per value of each ``promotion.slices`` column with at least ``min_slice_rows`` rows.

    Keys look like ``"plan=basic"``; rows with a missing slice value belong to no slice.
    """
    if frame.empty or not spec.promotion.slices:
        return {}
    return slices_from_scores(spec, frame, predict_scores(spec, model, feature_frame(spec, frame)))


def slices_from_scores(spec: DatasetSpec, frame: pd.DataFrame, scores: np.ndarray) -> dict[str, dict[str, float]]:
    """:func:`evaluate_slices` for scores already predicted for ``frame`` (same row order)."""
    if frame.empty or not spec.promotion.slices:
        return {}
    features = feature_frame(spec, frame)
    labels = label_values(spec, frame)
    result: dict[str, dict[str, float]] = {}
    for column in spec.promotion.slices:
        values = features[column]
        for value, count in sorted(values.value_counts(dropna=True).items()):
            if count < spec.promotion.min_slice_rows:
                continue
            mask = (values == value).to_numpy()
            result[f"{column}={value}"] = metrics_from_scores(spec, labels[mask], scores[mask])
    return result


def baseline_model(spec: DatasetSpec) -> BaseEstimator:
    return DummyClassifier(strategy="prior") if spec.task == "classification" else DummyRegressor(strategy="mean")


def baseline_metrics(spec: DatasetSpec, train: pd.DataFrame, holdout: pd.DataFrame) -> dict[str, float]:
    """The naive model's holdout metrics: class prior (classification) or training mean (regression)."""
    model = baseline_model(spec).fit(feature_frame(spec, train), label_values(spec, train))
    return evaluate(spec, model, holdout)


# --------------------------------------------------------------------------- reporting


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _domain(column: Column) -> str:
    if column.allowed:
        return ", ".join(column.allowed)
    if column.is_numeric:
        low = "-inf" if column.min is None else f"{column.min:g}"
        high = "inf" if column.max is None else f"{column.max:g}"
        return f"{low} to {high}"
    return ""


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def model_card(
    spec: DatasetSpec,
    *,
    best: TrainedCandidate,
    metrics: Mapping[str, float],
    slice_metrics: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, float],
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    window: tuple[datetime, datetime],
    candidates: Sequence[TrainedCandidate] = (),
    model_version: str | None = None,
) -> str:
    """A Markdown model card: data, window, features, chosen model, metrics overall and per slice, limits."""
    start, end = window
    holdout_start = (
        pd.to_datetime(holdout[spec.event_time], utc=True).min().to_pydatetime()
        if len(holdout)
        else end - timedelta(days=spec.training.holdout_days)
    )
    metric_names = list(metrics)
    labels = label_values(spec, pd.concat([train, holdout])) if len(train) + len(holdout) else np.array([])
    if spec.task == "classification":
        label_summary = f"positive rate {labels.mean():.3f}" if len(labels) else "no rows"
    else:
        label_summary = f"mean {labels.mean():.3f}, std {labels.std():.3f}" if len(labels) else "no rows"
    title = f"# Model card: {spec.registered_model_name}" + (f" v{model_version}" if model_version else "")
    lines = [
        title,
        "",
        f"**Dataset**: `{spec.name}` (spec version {spec.version}) — {spec.description or 'no description'}",
        f"**Task**: {spec.task} of `{spec.label.name}` ({label_summary})",
        f"**Training window**: {start.isoformat()} → {end.isoformat()} ({spec.training.window_days} days)",
        f"**Holdout**: the newest {spec.training.holdout_days} day(s), from {holdout_start.isoformat()}",
        f"**Rows**: {len(train)} training, {len(holdout)} holdout (labelled rows only)",
        "",
        "## Features",
        "",
        *_table(["name", "type", "range / values"], ([f"`{f.name}`", f.type, _domain(f)] for f in spec.features)),
        "",
        "## Model",
        "",
        f"Chosen candidate **{best.name}** (`{best.estimator}`), parameters `{best.params}`; "
        f"cross-validated {best.cv_metric} {_fmt(best.cv_score)} "
        f"({spec.training.cv_folds} time-ordered folds, seed {spec.training.seed}).",
    ]
    if candidates:
        lines += [
            "",
            *_table(
                ["candidate", "estimator", f"CV {spec.promotion.primary_metric}", "parameters"],
                ([c.name, c.estimator, _fmt(c.cv_score), f"`{c.params}`"] for c in candidates),
            ),
        ]
    lines += [
        "",
        "## Holdout metrics",
        "",
        *_table(
            ["metric", "model", "naive baseline"],
            ([m, _fmt(metrics[m]), _fmt(baseline.get(m, math.nan))] for m in metric_names),
        ),
        "",
        "Baseline: "
        + ("class prior (DummyClassifier)." if spec.task == "classification" else "training mean (DummyRegressor)."),
        "",
        "## Slices",
        "",
    ]
    if slice_metrics:
        lines += _table(
            ["slice", *metric_names],
            ([name, *(_fmt(values.get(m, math.nan)) for m in metric_names)] for name, values in slice_metrics.items()),
        )
    else:
        lines.append(
            f"No slice reached {spec.promotion.min_slice_rows} holdout rows "
            f"(slice columns: {list(spec.promotion.slices)})."
        )
    lines += [
        "",
        "## Limitations",
        "",
        "- Metrics come from the newest days of one window: they describe recent data, not future drift.",
        "- Only rows whose label had arrived are used; "
        f"slices under {spec.promotion.min_slice_rows} rows are not judged.",
        "- Rows outside the spec's ranges and categories are quarantined before training, so such inputs are unseen; "
        "unknown categories are encoded as all-zero.",
        "- Not assessed for fairness across groups beyond the listed slices.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- one call


def run_training(spec: DatasetSpec, frame: pd.DataFrame, window_end: datetime) -> TrainingResult:
    """Split, search every candidate, pick the best and evaluate it (overall, per slice, vs. baseline)."""
    window = training_window(spec, window_end)
    train, holdout = time_split(spec, frame, window_end)
    # One OpenMP thread: on nightly-sized frames HistGradientBoosting's threads cost more than
    # they give (2.3x faster training measured on 2 cores, same model).
    with threadpool_limits(limits=1, user_api="openmp"):
        candidates = train_candidates(spec, train)
    best = best_candidate(spec, candidates)
    return TrainingResult(
        best=best,
        candidates=tuple(candidates),
        metrics=evaluate(spec, best.model, holdout),
        slice_metrics=evaluate_slices(spec, best.model, holdout),
        baseline=baseline_metrics(spec, train, holdout),
        train=train,
        holdout=holdout,
        window=window,
        holdout_start=holdout_start_of(spec, frame, window_end),
    )
