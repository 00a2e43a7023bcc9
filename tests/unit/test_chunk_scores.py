"""Scores of an Arrow chunk through the model's branches (each distinct combination of categories transformed
once) are the scores of the whole model on the chunk's feature frame, to the last bit."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from nightly_ml.etl.simulator import generate_batch
from nightly_ml.modeling import chunk_scores, evaluation, frames, training
from nightly_ml.spec import DatasetSpec, load_spec

START = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def labelled(spec: DatasetSpec, rows: int, day: int = 0) -> pd.DataFrame:
    source = spec.source.model_copy(update={"label_delay_days": 0})
    spec = spec.model_copy(update={"source": source})
    return generate_batch(spec, START + timedelta(days=day), START + timedelta(days=day + 1), rows=rows)


def chunk_of(spec: DatasetSpec, frame: pd.DataFrame) -> pa.Table:
    """The rows as scoring reads them: typed Arrow columns (booleans too), several record batches, with missing
    values and categories the model never saw."""
    columns: dict[str, pa.Array] = {}
    for n, feature in enumerate(spec.features):
        values = frame[feature.name].astype(object).where(frame[feature.name].notna(), None).tolist()
        values = [None if (i + n) % 7 == 0 else v for i, v in enumerate(values)]
        if feature.is_numeric:
            columns[feature.name] = pa.array(values, pa.float64() if feature.type == "float" else pa.int64())
        elif feature.type == "boolean":
            columns[feature.name] = pa.array(values, pa.bool_())
        else:
            values = [f"never-seen-{i % 3}" if i % 11 == 0 else v for i, v in enumerate(values)]
            columns[feature.name] = pa.array(values, pa.string())
    table = pa.table(columns)
    return pa.Table.from_batches(table.to_batches(max_chunksize=97))


def whole_model_scores(spec: DatasetSpec, model: Any, table: pa.Table) -> np.ndarray:
    return np.asarray(evaluation.predict_scores(spec, model, chunk_scores.feature_frame(spec, table)), dtype="float64")


@pytest.mark.parametrize(
    ("dataset", "candidate"), [("churn", "logreg"), ("churn", "hgb"), ("demand", "ridge"), ("demand", "hgb")]
)
def test_the_branch_scores_of_every_shipped_estimator_equal_the_whole_models(dataset: str, candidate: str) -> None:
    spec = load_spec(dataset)
    chosen = next(c for c in spec.training.candidates if c.name == candidate)
    train = labelled(spec, 3000)
    model = training.build_pipeline(spec, chosen).fit(
        frames.feature_frame(spec, train), frames.label_values(spec, train)
    )
    scorer = chunk_scores.scorer(spec, model)
    assert scorer.by_branches
    table = chunk_of(spec, labelled(spec, 2000, day=1))
    got = chunk_scores.scores(scorer, table)
    assert got.dtype == np.float64 and len(got) == table.num_rows
    np.testing.assert_array_equal(got, whole_model_scores(spec, model, table))


def test_a_branch_of_too_many_possible_combinations_transforms_the_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec("churn")
    train = labelled(spec, 2000)
    model = training.build_pipeline(spec, spec.training.candidates[0]).fit(
        frames.feature_frame(spec, train), frames.label_values(spec, train)
    )
    table = chunk_of(spec, labelled(spec, 500, day=1))
    scorer = chunk_scores.scorer(spec, model)
    combined = chunk_scores.scores(scorer, table)
    monkeypatch.setattr(chunk_scores, "_MAX_COMBINATIONS", 2)
    rows = chunk_scores.scores(scorer, table)
    np.testing.assert_array_equal(rows, combined)
    np.testing.assert_array_equal(rows, whole_model_scores(spec, model, table))


def test_a_column_transformer_passing_columns_through_is_scored_by_its_branches() -> None:
    spec = load_spec("churn")
    train = labelled(spec, 2000)
    categorical = [f.name for f in spec.categorical_features]
    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    model = Pipeline(
        [
            ("preprocess", ColumnTransformer([("categorical", onehot, categorical)], remainder="passthrough")),
            ("model", HistGradientBoostingClassifier(max_iter=5)),
        ]
    ).fit(frames.feature_frame(spec, train), frames.label_values(spec, train))
    scorer = chunk_scores.scorer(spec, model)
    assert scorer.by_branches
    table = chunk_of(spec, labelled(spec, 400, day=1))
    np.testing.assert_array_equal(chunk_scores.scores(scorer, table), whole_model_scores(spec, model, table))


def test_a_branch_of_numeric_and_categorical_columns_transforms_the_rows() -> None:
    spec = load_spec("churn")
    train = labelled(spec, 2000)
    mixed = ["support_calls", spec.categorical_features[0].name]
    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    model = Pipeline(
        [("preprocess", ColumnTransformer([("mixed", onehot, mixed)])), ("model", LogisticRegression(max_iter=200))]
    ).fit(frames.feature_frame(spec, train), frames.label_values(spec, train))
    scorer = chunk_scores.scorer(spec, model)
    assert scorer.by_branches and scorer.branches is not None and not scorer.branches[0].categorical
    table = chunk_of(spec, labelled(spec, 400, day=1))
    np.testing.assert_array_equal(chunk_scores.scores(scorer, table), whole_model_scores(spec, model, table))


def test_models_of_another_shape_are_scored_whole() -> None:
    spec = load_spec("churn")
    train = labelled(spec, 2000)
    features, labels = frames.feature_frame(spec, train), frames.label_values(spec, train)
    categorical = [f.name for f in spec.categorical_features]
    sparse = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [("categorical", OneHotEncoder(handle_unknown="ignore"), categorical)], sparse_threshold=1.0
                ),
            ),
            ("model", LogisticRegression(max_iter=200)),
        ]
    )
    named_output = training.build_pipeline(spec, spec.training.candidates[0]).set_output(transform="pandas")
    table = chunk_of(spec, labelled(spec, 400, day=1))
    for model in (DummyClassifier(strategy="prior"), sparse, named_output):
        model.fit(features, labels)
        scorer = chunk_scores.scorer(spec, model)
        assert not scorer.by_branches, model
        np.testing.assert_array_equal(chunk_scores.scores(scorer, table), whole_model_scores(spec, model, table))


@pytest.mark.parametrize("bound", [6, 10**9])
def test_distinct_numbers_and_their_positions_by_table_or_by_sorting(bound: int) -> None:
    numbers = np.array([5, 0, 5, 3, 3, 0, 5, 1], dtype=np.int64) * (bound // 6)
    present, positions = chunk_scores._distinct(numbers, bound)
    expected_present, expected_positions = np.unique(numbers, return_inverse=True)
    np.testing.assert_array_equal(present, expected_present)
    np.testing.assert_array_equal(positions, expected_positions)
    np.testing.assert_array_equal(present[positions], numbers)
