"""Training: candidate scikit-learn pipelines from the spec, a small time-aware search, the best refitted."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from nightly_ml.modeling.evaluation import baseline_metrics, evaluate, evaluate_slices
from nightly_ml.modeling.frames import (
    TrainingDataError,
    _sorted_by_time,
    feature_frame,
    holdout_start_of,
    label_values,
    time_split,
    training_window,
)
from nightly_ml.modeling.promotion import Evaluation
from nightly_ml.spec import METRIC_GREATER_IS_BETTER, Candidate, DatasetSpec

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

_MODEL_STEP = "model"


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


# --------------------------------------------------------------------------- one call


def run_training(
    spec: DatasetSpec, frame: pd.DataFrame, window_end: datetime, *, since: datetime | None = None
) -> TrainingResult:
    """Split, search every candidate, pick the best and evaluate it (overall, per slice, vs. baseline).

    ``since``: the frame was read from a window that starts there (frames.training_window); the model's
    recorded window, which becomes its drift reference, says so."""
    window = training_window(spec, window_end, since)
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
