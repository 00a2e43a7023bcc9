"""Training on small in-memory frames from the simulator, for both shipped specs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from nightly_ml.etl.simulator import generate_batch, generate_labels
from nightly_ml.modeling import evaluation, frames, model_card, training
from nightly_ml.spec import CLASSIFICATION_METRICS, REGRESSION_METRICS, Candidate, DatasetSpec, load_spec

START = datetime(2024, 3, 1, tzinfo=UTC)
DAYS = 14
ROWS_PER_DAY = 150
WINDOW_END = START + timedelta(days=DAYS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # OpenMP threads cost more than they give on frames this small (and on a shared 2-core box).
    with threadpool_limits(limits=1):
        yield


def small(spec: DatasetSpec, **rules: object) -> DatasetSpec:
    """The spec with training rules fitted to a two-week frame."""
    defaults: dict[str, object] = {"window_days": DAYS, "holdout_days": 3, "min_rows": 500}
    return spec.model_copy(update={"training": spec.training.model_copy(update={**defaults, **rules})})


def simulated(spec: DatasetSpec, start: datetime = START, days: int = DAYS, rows: int = ROWS_PER_DAY) -> pd.DataFrame:
    """``days`` daily batches with their labels (late labels joined back by key)."""
    parts = []
    delay = timedelta(days=spec.source.label_delay_days)
    for day in range(days):
        lo, hi = start + timedelta(days=day), start + timedelta(days=day + 1)
        batch = generate_batch(spec, lo, hi, rows=rows)
        if delay:
            labels = generate_labels(spec, lo + delay, hi + delay, rows=rows)
            batch = batch.drop(columns=[spec.label.name]).merge(labels, on=spec.key.name, how="left")
        parts.append(batch)
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module", params=["churn", "demand"])
def case(request: pytest.FixtureRequest) -> tuple[DatasetSpec, pd.DataFrame]:
    spec = small(load_spec(request.param))
    return spec, simulated(spec)


def task_metrics(spec: DatasetSpec) -> set[str]:
    return CLASSIFICATION_METRICS if spec.task == "classification" else REGRESSION_METRICS


# --------------------------------------------------------------------------- data


def test_feature_frame_gives_stable_types() -> None:
    spec = load_spec("churn")
    raw = pd.DataFrame(
        {
            "tenure_months": [1, None, 3],
            "monthly_charges": [10.5, 20.0, None],
            "support_calls": pd.array([0, 2, None], dtype="Int64"),
            "usage_hours": [1.0, 2.0, 3.0],
            "plan": ["basic", None, "premium"],
            "region": pd.Series(["north", "south", np.nan], dtype="str"),
            "autopay": [True, None, np.False_],
        }
    )
    features = frames.feature_frame(spec, raw)
    assert list(features.columns) == [f.name for f in spec.features]
    for column in spec.numeric_features:
        assert features[column.name].dtype == np.float64
    assert features["tenure_months"].isna().tolist() == [False, True, False]
    assert features["plan"].tolist()[0] == "basic" and math.isnan(features["plan"].tolist()[1])
    assert math.isnan(features["region"].tolist()[2])
    assert features["autopay"].tolist()[0] == "true"
    assert math.isnan(features["autopay"].tolist()[1])
    assert features["autopay"].tolist()[2] == "false"


def test_time_split_respects_time(case: tuple[DatasetSpec, pd.DataFrame]) -> None:
    spec, frame = case
    train, holdout = frames.time_split(spec, frame, WINDOW_END)
    holdout_start = pd.Timestamp(WINDOW_END - timedelta(days=spec.training.holdout_days))
    assert train[spec.event_time].max() < holdout_start <= holdout[spec.event_time].min()
    assert len(train) + len(holdout) == len(frame)
    assert len(holdout) == 3 * ROWS_PER_DAY  # the newest three days
    assert train[spec.event_time].is_monotonic_increasing
    assert set(train[spec.key.name]).isdisjoint(holdout[spec.key.name])


def test_time_split_without_window_end_uses_the_newest_row(case: tuple[DatasetSpec, pd.DataFrame]) -> None:
    spec, frame = case
    train, holdout = frames.time_split(spec, frame)
    # The holdout is the newest labelled days, aligned to the end of the newest labelled day.
    holdout_start = frame[spec.event_time].max().floor("D") + pd.Timedelta(days=1 - spec.training.holdout_days)
    assert holdout[spec.event_time].min() >= holdout_start
    assert train[spec.event_time].max() < holdout_start


def test_holdout_is_the_newest_labelled_data_when_labels_lag() -> None:
    """Late labels leave a window's last days unlabelled: the holdout moves back onto labelled days."""
    spec = small(load_spec("churn"))
    frame = simulated(spec)
    train, holdout = frames.time_split(spec, frame, WINDOW_END + timedelta(days=10))
    assert len(holdout) > 0
    assert holdout[spec.event_time].min() >= frame[spec.event_time].max().floor("D") - pd.Timedelta(
        days=spec.training.holdout_days - 1
    )
    assert len(train) + len(holdout) == len(frame)


def test_training_window_starts_at_a_change_inside_it_and_never_earlier_than_window_days() -> None:
    spec = load_spec("demand")
    full = frames.training_window(spec, WINDOW_END)
    assert full == (WINDOW_END - timedelta(days=spec.training.window_days), WINDOW_END)
    change = WINDOW_END - timedelta(days=5)
    assert frames.training_window(spec, WINDOW_END, change) == (change, WINDOW_END)
    # A change from before the window changes nothing: the window never grows past window_days.
    assert frames.training_window(spec, WINDOW_END, full[0] - timedelta(days=3)) == full
    with pytest.raises(ValueError, match="not before its end"):
        frames.training_window(spec, WINDOW_END, WINDOW_END)


def test_training_from_a_change_records_the_shorter_window() -> None:
    spec = small(load_spec("demand"))
    since = WINDOW_END - timedelta(days=DAYS - 1)
    frame = simulated(spec)
    result = training.run_training(spec, frame[frame[spec.event_time] >= since], WINDOW_END, since=since)
    assert result.window == (since, WINDOW_END)  # the registered model's drift reference
    assert result.train[spec.event_time].min() >= since


def test_time_split_says_what_is_missing() -> None:
    spec = small(load_spec("churn"))
    frame = simulated(spec)
    with pytest.raises(frames.TrainingDataError, match="no labelled rows before the holdout"):
        frames.time_split(spec, frame, START + timedelta(days=2))
    with pytest.raises(
        frames.TrainingDataError,
        match=r"only 1650 labelled training row\(s\).*min_rows requires "
        r"at least 5000",
    ):
        frames.time_split(small(spec, min_rows=5000), frame, WINDOW_END)
    with pytest.raises(frames.TrainingDataError, match="holds no labelled rows"):
        frames.time_split(spec, frame.iloc[0:0], WINDOW_END)
    one_class = frame.assign(churned=0)
    with pytest.raises(frames.TrainingDataError, match="only label class"):
        frames.time_split(spec, one_class, WINDOW_END)


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("estimator", sorted(training.ESTIMATORS))
def test_build_pipeline_maps_every_estimator_and_seeds_it(estimator: str) -> None:
    spec = load_spec("churn" if estimator.endswith("_classifier") or estimator == "logistic_regression" else "demand")
    pipeline = training.build_pipeline(spec, Candidate(name="c", estimator=estimator), {})
    model = pipeline.named_steps["model"]
    assert type(model) is training.ESTIMATORS[estimator]
    if "random_state" in model.get_params():
        assert model.get_params()["random_state"] == spec.training.seed
    preprocess = pipeline.named_steps["preprocess"]
    assert {name for name, _, _ in preprocess.transformers} == {"numeric", "categorical"}


def test_candidate_params_and_search_params_reach_the_estimator() -> None:
    spec = load_spec("churn")
    candidate = Candidate(name="lr", estimator="logistic_regression", params={"max_iter": 123})
    model = training.build_pipeline(spec, candidate, {"C": 0.5}).named_steps["model"]
    assert (model.max_iter, model.C) == (123, 0.5)


def test_pipelines_fit_for_the_shipped_specs(case: tuple[DatasetSpec, pd.DataFrame]) -> None:
    """The real candidate lists and grids of both specs, end to end on two weeks of data."""
    spec, frame = case
    result = training.run_training(spec, frame, WINDOW_END)
    assert [c.name for c in result.candidates] == [c.name for c in spec.training.candidates]
    assert result.best in result.candidates
    assert all(math.isfinite(c.cv_score) for c in result.candidates)
    assert set(result.metrics) == task_metrics(spec)
    assert all(math.isfinite(v) for v in result.metrics.values()), result.metrics
    assert set(result.baseline) == task_metrics(spec)
    # A real model must beat the naive one on the primary metric.
    primary = spec.promotion.primary_metric
    better = (
        result.metrics[primary] > result.baseline[primary]
        if spec.greater_is_better
        else (result.metrics[primary] < result.baseline[primary])
    )
    assert better, (result.metrics, result.baseline)
    searched = {k for c in spec.training.candidates if c.name == result.best.name for k in c.search}
    assert searched <= set(result.best.params)
    assert result.window == (WINDOW_END - timedelta(days=DAYS), WINDOW_END)
    assert result.evaluation.metrics == result.metrics


def test_training_is_deterministic() -> None:
    spec = small(
        load_spec("churn"),
        candidates=(
            Candidate(
                name="forest",
                estimator="random_forest_classifier",
                params={"n_estimators": 15},
                search={"max_depth": (4, 8)},
            ),
        ),
    )
    frame = simulated(spec)
    train, holdout = frames.time_split(spec, frame, WINDOW_END)
    # Shuffled input must not matter either: training sorts by time itself.
    first = training.train_candidates(spec, train)[0]
    second = training.train_candidates(spec, train.sample(frac=1.0, random_state=3))[0]
    assert first.params == second.params
    assert first.cv_score == second.cv_score
    features = frames.feature_frame(spec, holdout)
    np.testing.assert_array_equal(first.model.predict_proba(features), second.model.predict_proba(features))


def test_best_candidate_follows_the_metric_direction() -> None:
    def candidate(name: str, score: float, metric: str) -> training.TrainedCandidate:
        return training.TrainedCandidate(name, "ridge", None, {}, metric, score)  # type: ignore[arg-type]

    demand, churn = load_spec("demand"), load_spec("churn")
    assert training.best_candidate(demand, [candidate("a", 9.0, "rmse"), candidate("b", 7.5, "rmse")]).name == "b"
    assert training.best_candidate(churn, [candidate("a", 0.7, "roc_auc"), candidate("b", 0.8, "roc_auc")]).name == "b"
    tie = [candidate("first", 0.8, "roc_auc"), candidate("second", 0.8, "roc_auc")]
    assert training.best_candidate(churn, tie).name == "first"
    with pytest.raises(frames.TrainingDataError, match="no candidate"):
        training.best_candidate(churn, [candidate("a", math.nan, "roc_auc")])


# --------------------------------------------------------------------------- evaluation


ChurnModel = tuple[DatasetSpec, training.TrainedCandidate, pd.DataFrame, pd.DataFrame]


@pytest.fixture(scope="module")
def churn_model() -> ChurnModel:
    spec = small(load_spec("churn"), candidates=(load_spec("churn").training.candidates[0],))
    train, holdout = frames.time_split(spec, simulated(spec), WINDOW_END)
    return spec, training.train_candidates(spec, train)[0], train, holdout


def test_single_class_holdout_gives_nan_ranking_metrics(churn_model: ChurnModel) -> None:
    spec, best, _, holdout = churn_model
    negatives = holdout[holdout["churned"] == 0]
    metrics = evaluation.evaluate(spec, best.model, negatives)
    assert math.isnan(metrics["roc_auc"]) and math.isnan(metrics["pr_auc"])
    for name in ("log_loss", "brier", "f1", "accuracy"):
        assert math.isfinite(metrics[name]), name
    slices = evaluation.evaluate_slices(spec, best.model, negatives)
    assert slices and all(math.isnan(values["roc_auc"]) for values in slices.values())


def test_classification_metrics_are_consistent(churn_model: ChurnModel) -> None:
    spec, best, _, holdout = churn_model
    metrics = evaluation.evaluate(spec, best.model, holdout)
    probabilities = best.model.predict_proba(frames.feature_frame(spec, holdout))[:, 1]
    labels = holdout["churned"].to_numpy(dtype=int)
    assert metrics["accuracy"] == pytest.approx(np.mean((probabilities >= 0.5) == labels))
    assert metrics["brier"] == pytest.approx(np.mean((probabilities - labels) ** 2))
    assert 0.5 < metrics["roc_auc"] <= 1.0


def test_slices_need_enough_rows(churn_model: ChurnModel) -> None:
    spec, best, _, holdout = churn_model
    counts = holdout["plan"].value_counts()
    slices = evaluation.evaluate_slices(spec, best.model, holdout)
    expected = {f"plan={value}" for value, n in counts.items() if n >= spec.promotion.min_slice_rows}
    assert set(slices) == expected and expected
    # Thin out one plan below min_slice_rows: it drops out of the result.
    rare = counts.index[0]
    keep = holdout[holdout["plan"] != rare]
    thinned = pd.concat([keep, holdout[holdout["plan"] == rare].head(spec.promotion.min_slice_rows - 1)])
    assert f"plan={rare}" not in evaluation.evaluate_slices(spec, best.model, thinned)
    for values in slices.values():
        assert set(values) == CLASSIFICATION_METRICS


def test_baselines_are_naive() -> None:
    churn = small(load_spec("churn"))
    train, holdout = frames.time_split(churn, simulated(churn), WINDOW_END)
    baseline = evaluation.baseline_metrics(churn, train, holdout)
    assert baseline["roc_auc"] == pytest.approx(0.5)
    demand = small(load_spec("demand"))
    train, holdout = frames.time_split(demand, simulated(demand), WINDOW_END)
    baseline = evaluation.baseline_metrics(demand, train, holdout)
    assert set(baseline) == REGRESSION_METRICS
    assert baseline["r2"] <= 0.01
    assert baseline["mae"] == pytest.approx(np.mean(np.abs(holdout["demand"] - train["demand"].mean())))


def test_evaluate_refuses_an_empty_frame(churn_model: ChurnModel) -> None:
    spec, best, _, holdout = churn_model
    with pytest.raises(ValueError, match="empty"):
        evaluation.evaluate(spec, best.model, holdout.iloc[0:0])


def test_model_card_tells_the_story(churn_model: ChurnModel) -> None:
    spec, best, train, holdout = churn_model
    metrics = evaluation.evaluate(spec, best.model, holdout)
    slices = evaluation.evaluate_slices(spec, best.model, holdout)
    card = model_card.model_card(
        spec,
        best=best,
        metrics=metrics,
        slice_metrics=slices,
        baseline=evaluation.baseline_metrics(spec, train, holdout),
        train=train,
        holdout=holdout,
        window=frames.training_window(spec, WINDOW_END),
        candidates=[best],
        model_version="7",
    )
    assert card.startswith("# Model card: churn_model v7")
    for text in (
        "`churn` (spec version 1)",
        f"{len(train)} training, {len(holdout)} holdout",
        "2024-03-01T00:00:00+00:00 → 2024-03-15T00:00:00+00:00",
        "## Limitations",
        "naive baseline",
        f"{metrics['roc_auc']:.4f}",
        *(f"`{f.name}`" for f in spec.features),
        *slices,
    ):
        assert text in card, text
