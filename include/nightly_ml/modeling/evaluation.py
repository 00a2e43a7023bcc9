"""Evaluation: scores, metrics (overall and per slice) and the naive baseline every model must beat."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier, DummyRegressor
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

from nightly_ml.modeling.frames import feature_frame, label_values
from nightly_ml.modeling.promotion import Evaluation, HoldoutScores
from nightly_ml.spec import DatasetSpec

DECISION_THRESHOLD = 0.5
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


# --------------------------------------------------------------------------- paired scores for the gate

_HOURS_PER_DAY = 24
_SLICES_PER_DAY = (1, 2, 3, 4, 6, 8, 12, 24)  # divisors of 24: slices of whole hours


def holdout_blocks(spec: DatasetSpec, holdout: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Block id per holdout row for the gate's bootstrap, and how the blocks were cut.

    A block is a local day of the spec's zone (rows of one day share its conditions, so they are
    resampled together). With fewer days than ``promotion.bootstrap_min_blocks`` each day is cut into
    equal slices of whole hours — contiguous in time, never across a day — so the bootstrap has
    enough blocks to vary (3 blocks allow only 10 distinct resamples).
    """
    if holdout.empty:
        return np.zeros(0, dtype="int64"), "no rows"
    local = pd.to_datetime(holdout[spec.event_time], utc=True).dt.tz_convert(spec.zone).dt.tz_localize(None)
    days = local.dt.floor("D")
    n_days = int(days.nunique())
    wanted = spec.promotion.bootstrap_min_blocks
    slices = next((k for k in _SLICES_PER_DAY if n_days * k >= wanted), _SLICES_PER_DAY[-1])
    if slices == 1:
        return pd.factorize(days, sort=True)[0].astype("int64"), f"{n_days} day(s)"
    width = pd.Timedelta(hours=_HOURS_PER_DAY // slices)
    starts = days + ((local - days) // width) * width
    note = f"{n_days} day(s), each cut into {slices} slices of {_HOURS_PER_DAY // slices} h"
    return pd.factorize(starts, sort=True)[0].astype("int64"), note


def scored_evaluation(
    spec: DatasetSpec, holdout: pd.DataFrame, scores: np.ndarray, *, with_slices: bool = True
) -> Evaluation:
    """Metrics, slices and the per-row scores (for the gate's paired bootstrap) of scores predicted for ``holdout``."""
    labels = label_values(spec, holdout)
    blocks, note = holdout_blocks(spec, holdout)
    return Evaluation(
        metrics=metrics_from_scores(spec, labels, scores),
        slices=slices_from_scores(spec, holdout, scores) if with_slices else {},
        holdout=HoldoutScores(
            labels=labels, predictions=np.asarray(scores, dtype="float64"), blocks=blocks, block_note=note
        ),
    )


def paired_evaluation(spec: DatasetSpec, model: Any, holdout: pd.DataFrame) -> Evaluation:
    """:func:`scored_evaluation` of ``model`` on ``holdout``: what the gate compares, row by row."""
    if holdout.empty:
        raise ValueError(f"{spec.name}: cannot evaluate on an empty holdout")
    return scored_evaluation(spec, holdout, predict_scores(spec, model, feature_frame(spec, holdout)))


def baseline_evaluation(spec: DatasetSpec, train: pd.DataFrame, holdout: pd.DataFrame) -> Evaluation:
    """The naive model on ``holdout`` with its per-row scores, so every promotion can be tested against it."""
    model = baseline_model(spec).fit(feature_frame(spec, train), label_values(spec, train))
    scores = predict_scores(spec, model, feature_frame(spec, holdout))
    return scored_evaluation(spec, holdout, scores, with_slices=False)
