"""The simulator: determinism, schema, spec constraints, scenarios, faults, late labels and files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import mean_squared_error, roc_auc_score

from nightly_ml.etl.simulator import generate_batch, generate_labels
from nightly_ml.etl.simulator_files import write_batch
from nightly_ml.etl.simulator_generators import CHURN_NEW_REGION, DEMAND_NEW_ZONE, scenario_intensity
from nightly_ml.spec import DatasetSpec, parse_spec

SPEC_DIR = Path(__file__).resolve().parents[2] / "include" / "specs"
DATASETS = ("churn", "demand")
FIRST_NIGHT = datetime(2026, 3, 2, tzinfo=UTC)
DRIFT_START = "2026-03-12"
DRIFT_NIGHT = 10  # index of the night starting on DRIFT_START
NEW_CATEGORY = {"churn": ("region", CHURN_NEW_REGION), "demand": ("zone", DEMAND_NEW_ZONE)}


def make_spec(name: str, **source: Any) -> DatasetSpec:
    """A shipped spec with its ``source`` section overridden."""
    raw = yaml.safe_load((SPEC_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    raw["source"].update(source)
    return parse_spec(raw)


def night(index: int) -> tuple[datetime, datetime]:
    start = FIRST_NIGHT + timedelta(days=index)
    return start, start + timedelta(days=1)


def batch(spec: DatasetSpec, index: int, rows: int | None = None) -> pd.DataFrame:
    return generate_batch(spec, *night(index), rows=rows)


def nights(spec: DatasetSpec, indices: range, rows: int = 2000) -> pd.DataFrame:
    return pd.concat([batch(spec, i, rows) for i in indices], ignore_index=True)


def feature_matrix(spec: DatasetSpec, frame: pd.DataFrame) -> pd.DataFrame:
    x = frame[[f.name for f in spec.features]].copy()
    for column in spec.categorical_features:
        x[column.name] = x[column.name].astype("category")
    return x


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """Population stability index over reference-quantile bins."""
    ref, cur = reference.to_numpy(dtype=float), current.to_numpy(dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.clip(np.histogram(ref, edges)[0] / len(ref), 1e-4, None)
    actual = np.clip(np.histogram(cur, edges)[0] / len(cur), 1e-4, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def out_of_range_rows(spec: DatasetSpec, frame: pd.DataFrame) -> pd.Series:
    bad = pd.Series(False, index=frame.index)
    for column in spec.numeric_features:
        values = pd.to_numeric(frame[column.name], errors="coerce")
        if column.min is not None:
            bad |= values < column.min
        if column.max is not None:
            bad |= values > column.max
    return bad


def feature_nulls(spec: DatasetSpec, frame: pd.DataFrame) -> pd.Series:
    return frame[[f.name for f in spec.features]].isna().any(axis=1)


# --------------------------------------------------------------------------- basics


@pytest.mark.parametrize("name", DATASETS)
def test_same_inputs_give_identical_frames(name: str) -> None:
    spec = make_spec(name, faults={"nulls": 0.05, "wrong_type": 0.02, "duplicate_keys": 0.03})
    pd.testing.assert_frame_equal(batch(spec, 3), batch(spec, 3))


@pytest.mark.parametrize("name", DATASETS)
def test_nights_and_seeds_differ(name: str) -> None:
    spec = make_spec(name)
    first, second = batch(spec, 0), batch(spec, 1)
    other_seed = batch(make_spec(name, seed=99), 0)
    feature = spec.numeric_features[-1].name
    assert not np.array_equal(first[feature].to_numpy(), second[feature].to_numpy())
    assert not np.array_equal(first[feature].to_numpy(), other_seed[feature].to_numpy())


@pytest.mark.parametrize("name", DATASETS)
def test_schema_order_and_dtypes(name: str) -> None:
    spec = make_spec(name, label_delay_days=0)
    frame = batch(spec, 0)
    assert list(frame.columns) == spec.input_columns
    assert len(frame) == spec.source.rows_per_interval
    assert len(batch(spec, 0, rows=123)) == 123
    assert isinstance(frame[spec.event_time].dtype, pd.DatetimeTZDtype)
    assert str(frame[spec.event_time].dt.tz) == "UTC"
    assert pd.api.types.is_string_dtype(frame[spec.key.name])
    for column in spec.features:
        dtype = frame[column.name].dtype
        expected = {"integer": np.int64, "float": np.float64, "boolean": bool}.get(column.type)
        if expected is not None:
            assert dtype == expected, column.name
        else:
            assert pd.api.types.is_string_dtype(dtype), column.name
    label = frame[spec.label.name]
    if name == "churn":
        assert label.dtype == np.int64
    else:
        assert label.dtype == np.float64


@pytest.mark.parametrize("name", DATASETS)
def test_stationary_values_respect_the_spec(name: str) -> None:
    spec = make_spec(name, label_delay_days=0)
    frame = nights(spec, range(3))
    assert not frame.isna().any().any()
    assert not out_of_range_rows(spec, frame).any()
    new_column, new_value = NEW_CATEGORY[name]
    for column in spec.categorical_features:
        if column.type == "category":
            assert set(frame[column.name]) <= set(column.allowed or ())
    assert new_value not in set(frame[new_column])
    for column in spec.features:
        if column.type == "float":
            values = frame[column.name].to_numpy()
            assert np.allclose(values, np.round(values, 4)), column.name
    label = frame[spec.label.name]
    if name == "churn":
        assert set(label.unique()) == {0, 1}
        assert 0.15 <= label.mean() <= 0.25
    else:
        assert (label >= 0).all()
        assert (label == np.round(label)).all()


@pytest.mark.parametrize("name", DATASETS)
def test_keys_unique_within_and_across_nights(name: str) -> None:
    spec = make_spec(name)
    first, second = batch(spec, 0), batch(spec, 1)
    assert first[spec.key.name].is_unique
    assert not set(first[spec.key.name]) & set(second[spec.key.name])


@pytest.mark.parametrize("name", DATASETS)
def test_event_time_inside_the_interval(name: str) -> None:
    spec = make_spec(name)
    start, end = night(0)
    times = batch(spec, 0)[spec.event_time]
    assert (times >= start).all()
    assert (times < end).all()


def test_demand_calendar_features_match_event_time() -> None:
    spec = make_spec("demand")
    # An hourly interval that does not start at midnight.
    start = datetime(2026, 3, 7, 22, tzinfo=UTC)
    for frame in (batch(spec, 5), generate_batch(spec, start, start + timedelta(hours=3))):
        times = frame[spec.event_time]
        assert (frame["hour"] == times.dt.hour).all()
        assert (frame["day_of_week"] == times.dt.weekday).all()


def test_naive_and_aware_starts_agree() -> None:
    spec = make_spec("churn")
    start, end = night(2)
    naive = generate_batch(spec, start.replace(tzinfo=None), end.replace(tzinfo=None))
    pd.testing.assert_frame_equal(naive, generate_batch(spec, start, end))


# --------------------------------------------------------------------------- scenarios


def test_scenario_intensity() -> None:
    drift = night(DRIFT_NIGHT)[0]
    sudden = make_spec("churn", scenario="sudden_covariate", drift_start=DRIFT_START)
    gradual = make_spec("churn", scenario="gradual_covariate", drift_start=DRIFT_START, drift_ramp_days=4)
    bad = make_spec("churn", scenario="bad_data", drift_start=DRIFT_START)
    day = timedelta(days=1)
    assert scenario_intensity(make_spec("churn"), drift) == pytest.approx(0.0)
    assert [scenario_intensity(sudden, drift + k * day) for k in (-1, 0, 5)] == pytest.approx([0, 1, 1])
    ramp = [scenario_intensity(gradual, drift + k * day) for k in (-1, 0, 1, 2, 4, 9)]
    assert ramp == pytest.approx([0, 0, 0.25, 0.5, 1, 1])
    assert [scenario_intensity(bad, drift + k * day) for k in (-1, 0, 1)] == pytest.approx([0, 1, 0])


@pytest.mark.parametrize("name", DATASETS)
def test_sudden_covariate_shift_is_large_on_every_drifted_night(name: str) -> None:
    spec = make_spec(name, scenario="sudden_covariate", drift_start=DRIFT_START)
    stationary = make_spec(name)
    # Before the drift the scenario is invisible.
    pd.testing.assert_frame_equal(batch(spec, DRIFT_NIGHT - 1), batch(stationary, DRIFT_NIGHT - 1))
    reference = nights(stationary, range(3))
    for index in (DRIFT_NIGHT, DRIFT_NIGHT + 1, DRIFT_NIGHT + 6):
        current = batch(spec, index)
        scores = [psi(reference[f.name], current[f.name]) for f in spec.numeric_features if f.name != "day_of_week"]
        assert sum(score > 0.25 for score in scores) >= 2, scores


@pytest.mark.parametrize("name", DATASETS)
def test_gradual_covariate_shift_ramps_up(name: str) -> None:
    spec = make_spec(name, scenario="gradual_covariate", drift_start=DRIFT_START, drift_ramp_days=6)
    stationary = make_spec(name)
    feature = "usage_hours" if name == "churn" else "temperature_c"

    def shift(k: int) -> float:
        # Both specs share their random draws, so the difference is the shift alone.
        index = DRIFT_NIGHT + k
        return abs(batch(spec, index)[feature].mean() - batch(stationary, index)[feature].mean())

    shifts = [shift(k) for k in (0, 3, 6, 8)]
    assert shifts[0] == 0
    assert shifts[0] < shifts[1] < shifts[2]
    assert shifts[3] == pytest.approx(shifts[2], rel=0.1)
    reference = nights(stationary, range(3))
    assert psi(reference[feature], batch(spec, DRIFT_NIGHT + 6)[feature]) > 0.25


def test_concept_drift_breaks_a_churn_model() -> None:
    spec = make_spec("churn", scenario="concept", drift_start=DRIFT_START, label_delay_days=0)
    stationary = make_spec("churn", label_delay_days=0)
    # Inputs stay exactly the same; only the labels change.
    after = nights(spec, range(DRIFT_NIGHT, DRIFT_NIGHT + 2))
    same_inputs = nights(stationary, range(DRIFT_NIGHT, DRIFT_NIGHT + 2))
    pd.testing.assert_frame_equal(after.drop(columns=spec.label.name), same_inputs.drop(columns=spec.label.name))

    train = nights(spec, range(4))
    before = nights(spec, range(DRIFT_NIGHT - 2, DRIFT_NIGHT))
    model = HistGradientBoostingClassifier(max_iter=100, categorical_features="from_dtype", random_state=0)
    model.fit(feature_matrix(spec, train), train[spec.label.name])

    def auc(frame: pd.DataFrame) -> float:
        return roc_auc_score(frame[spec.label.name], model.predict_proba(feature_matrix(spec, frame))[:, 1])

    assert 0.72 <= auc(before) <= 0.88
    assert auc(after) < auc(before) - 0.1


def test_concept_drift_breaks_a_demand_model() -> None:
    spec = make_spec("demand", scenario="concept", drift_start=DRIFT_START)
    train = nights(spec, range(4))
    before = nights(spec, range(DRIFT_NIGHT - 2, DRIFT_NIGHT))
    after = nights(spec, range(DRIFT_NIGHT, DRIFT_NIGHT + 2))
    model = HistGradientBoostingRegressor(max_iter=150, categorical_features="from_dtype", random_state=0)
    model.fit(feature_matrix(spec, train), train[spec.label.name])

    def rmse(frame: pd.DataFrame) -> float:
        return mean_squared_error(frame[spec.label.name], model.predict(feature_matrix(spec, frame))) ** 0.5

    assert rmse(after) > 1.3 * rmse(before)


@pytest.mark.parametrize("name", DATASETS)
def test_new_category_appears_from_drift_start(name: str) -> None:
    spec = make_spec(name, scenario="new_category", drift_start=DRIFT_START)
    column, value = NEW_CATEGORY[name]
    assert (batch(spec, DRIFT_NIGHT - 1)[column] == value).sum() == 0
    for index in (DRIFT_NIGHT, DRIFT_NIGHT + 3):
        share = (batch(spec, index)[column] == value).mean()
        assert share == pytest.approx(0.20, abs=0.03)


def test_new_category_must_be_allowed_by_the_spec() -> None:
    raw = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text(encoding="utf-8"))
    raw["source"].update(scenario="new_category", drift_start=DRIFT_START)
    for feature in raw["features"]:
        if feature["name"] == "region":
            feature["allowed"] = ["north", "south", "east", "west"]
    with pytest.raises(ValueError, match="central"):
        batch(parse_spec(raw), DRIFT_NIGHT)


@pytest.mark.parametrize("name", DATASETS)
def test_bad_data_hits_only_the_drift_night(name: str) -> None:
    spec = make_spec(name, scenario="bad_data", drift_start=DRIFT_START)
    bad = batch(spec, DRIFT_NIGHT)
    nulls, ranges = feature_nulls(spec, bad), out_of_range_rows(spec, bad)
    assert nulls.mean() == pytest.approx(0.40, abs=0.01)
    assert ranges.mean() == pytest.approx(0.40, abs=0.01)
    assert (nulls == ranges).all()
    assert all(not spec.feature(c).nullable for c in bad.columns[bad.isna().any()] if c != spec.label.name)
    for index in (DRIFT_NIGHT - 1, DRIFT_NIGHT + 1):
        clean = batch(spec, index)
        assert not feature_nulls(spec, clean).any()
        assert not out_of_range_rows(spec, clean).any()


# --------------------------------------------------------------------------- faults

RATE = 0.1


def _fault_rows(fault: str, spec: DatasetSpec, frame: pd.DataFrame, start: datetime) -> int:
    if fault == "nulls":
        return int(feature_nulls(spec, frame).sum())
    if fault == "out_of_range":
        return int(out_of_range_rows(spec, frame).sum())
    if fault == "unknown_category":
        bad = pd.Series(False, index=frame.index)
        for column in spec.features:
            if column.type == "category":
                bad |= ~frame[column.name].isin(column.allowed or ())
        return int(bad.sum())
    if fault == "duplicate_keys":
        return len(frame) - frame[spec.key.name].nunique()
    if fault == "wrong_type":
        numeric = [f.name for f in spec.numeric_features]
        return int((frame[numeric] == "n/a").any(axis=1).sum())
    if fault == "outside_interval":
        return int((frame[spec.event_time] < start).sum())
    raise AssertionError(fault)


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize(
    "fault", ["nulls", "out_of_range", "unknown_category", "duplicate_keys", "wrong_type", "outside_interval"]
)
def test_each_fault_hits_its_share_of_rows(name: str, fault: str) -> None:
    spec = make_spec(name, faults={fault: RATE})
    start, end = night(0)
    frame = generate_batch(spec, start, end)
    clean = generate_batch(make_spec(name), start, end)
    n = len(frame)
    assert _fault_rows(fault, spec, frame, start) == pytest.approx(RATE * n, abs=0.01 * n)
    # Faults touch only their own cells: most rows are exactly the clean rows.
    same = (frame.astype(object).fillna("<NA>") == clean.astype(object).fillna("<NA>")).all(axis=1)
    assert same.mean() == pytest.approx(1 - RATE, abs=0.01)
    if fault == "wrong_type":
        assert any(frame[f.name].dtype == object for f in spec.numeric_features)
    if fault == "outside_interval" and name == "demand":
        assert (frame["hour"] == frame[spec.event_time].dt.hour).all()


@pytest.mark.parametrize("name", DATASETS)
def test_malformed_lines_are_left_to_the_writer(name: str) -> None:
    start, end = night(0)
    with_fault = generate_batch(make_spec(name, faults={"malformed_lines": 0.3}), start, end)
    pd.testing.assert_frame_equal(with_fault, generate_batch(make_spec(name), start, end))


# --------------------------------------------------------------------------- late labels


def test_delayed_labels_match_the_earlier_batch() -> None:
    delayed = make_spec("churn", label_delay_days=3)
    immediate = make_spec("churn", label_delay_days=0)
    snapshot = batch(delayed, 5)
    assert snapshot[delayed.label.name].isna().all()
    assert snapshot[delayed.label.name].dtype == "Int64"

    labels = generate_labels(delayed, *night(8))
    truth = batch(immediate, 5)[[delayed.key.name, delayed.label.name]]
    assert list(labels.columns) == [delayed.key.name, delayed.label.name]
    pd.testing.assert_frame_equal(labels, truth)
    assert set(labels[delayed.key.name]) == set(snapshot[delayed.key.name])


def test_delayed_labels_ignore_snapshot_faults() -> None:
    spec = make_spec("churn", label_delay_days=2, faults={"duplicate_keys": 0.1, "nulls": 0.1})
    labels = generate_labels(spec, *night(7))
    assert labels[spec.key.name].is_unique
    assert labels[spec.label.name].notna().all()


def test_no_delay_means_labels_in_the_batch_and_none_later() -> None:
    spec = make_spec("demand", label_delay_days=0)
    assert batch(spec, 0)[spec.label.name].notna().all()
    labels = generate_labels(spec, *night(3))
    assert labels.empty
    assert list(labels.columns) == [spec.key.name, spec.label.name]


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", DATASETS)
def test_csv_round_trip(name: str, tmp_path: Path) -> None:
    spec = make_spec(name, label_delay_days=0, faults={"nulls": 0.05})
    frame = batch(spec, 0)
    path = write_batch(frame, tmp_path / "nested" / "batch.csv")
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == ",".join(spec.input_columns)
    assert len(lines) == len(frame) + 1
    assert "+00:00," in lines[1]
    assert "e+" not in text and "e-" not in text
    if name == "churn":
        assert ",true," in text and ",false," in text
    assert ",," in text  # missing values are empty fields

    back = pd.read_csv(path)
    back[spec.event_time] = pd.to_datetime(back[spec.event_time], format="ISO8601", utc=True)
    assert (back[spec.event_time] == frame[spec.event_time]).all()
    pd.testing.assert_frame_equal(
        back.drop(columns=spec.event_time).astype(object).fillna("<NA>"),
        frame.drop(columns=spec.event_time).astype(object).fillna("<NA>"),
        check_dtype=False,
    )


def test_csv_is_byte_identical_across_runs(tmp_path: Path) -> None:
    spec = make_spec("demand", faults={"wrong_type": 0.05})
    first = write_batch(batch(spec, 0), tmp_path / "a.csv", malformed_line_rate=0.05, seed=1)
    second = write_batch(batch(spec, 0), tmp_path / "b.csv", malformed_line_rate=0.05, seed=1)
    assert first.read_bytes() == second.read_bytes()
    assert ",n/a," in first.read_text(encoding="utf-8")


@pytest.mark.parametrize("rate", [0.02, 0.25])
def test_malformed_lines_at_the_requested_rate(rate: float, tmp_path: Path) -> None:
    spec = make_spec("churn")
    frame = batch(spec, 0)
    path = write_batch(frame, tmp_path / "batch.csv", malformed_line_rate=rate, seed=5)
    lines = path.read_text(encoding="utf-8").splitlines()
    width = len(spec.input_columns)
    malformed = sum(line.count(",") + 1 != width for line in lines[1:])
    assert malformed == round(rate * len(frame))
    other = write_batch(frame, tmp_path / "other.csv", malformed_line_rate=rate, seed=6)
    assert other.read_bytes() != path.read_bytes()


@pytest.mark.parametrize("name", DATASETS)
def test_parquet_round_trip(name: str, tmp_path: Path) -> None:
    spec = make_spec(name, faults={"nulls": 0.05})
    frame = batch(spec, 0)
    path = write_batch(frame, tmp_path / "batch.parquet", fmt="parquet")
    schema = pq.read_schema(path)
    assert str(schema.field(spec.event_time).type) == "timestamp[us, tz=UTC]"
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(
        back.astype(object).fillna("<NA>"), frame.astype(object).fillna("<NA>"), check_dtype=False
    )
    assert not list(tmp_path.glob(".*partial"))


def test_csv_writes_wrong_type_cells_as_text(tmp_path: Path) -> None:
    spec = make_spec("churn", faults={"wrong_type": 0.2})
    frame = batch(spec, 0)
    back = pd.read_csv(write_batch(frame, tmp_path / "batch.csv"), dtype=str, keep_default_na=False)
    for column in spec.numeric_features:
        text = back[column.name]
        assert (text == "n/a").sum() == (frame[column.name] == "n/a").sum()
        numbers = text[text != "n/a"]
        expected = pd.to_numeric(frame[column.name], errors="coerce").dropna()
        assert np.allclose(numbers.astype(float).to_numpy(), expected.to_numpy())
        if column.type == "integer":
            assert not numbers.str.contains(".", regex=False).any()
    parquet = pd.read_parquet(write_batch(frame, tmp_path / "batch.parquet", fmt="parquet"))
    assert (parquet[spec.numeric_features[0].name].astype(str) == back[spec.numeric_features[0].name]).all()


def test_integer_keys_are_unique_across_nights() -> None:
    raw = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text(encoding="utf-8"))
    raw["key"]["type"] = "integer"
    spec = parse_spec(raw)
    first, second = batch(spec, 0), batch(spec, 1)
    assert first[spec.key.name].dtype == np.int64
    assert first[spec.key.name].is_unique
    assert not set(first[spec.key.name]) & set(second[spec.key.name])


def test_only_simulator_specs_are_accepted() -> None:
    raw = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text(encoding="utf-8"))
    raw["source"] = {"kind": "files", "path": "/tmp/nowhere"}
    with pytest.raises(ValueError, match="simulator"):
        batch(parse_spec(raw), 0)


def test_one_fault_rate_does_not_move_another_faults_rows() -> None:
    start, end = night(0)
    alone = generate_batch(make_spec("churn", faults={"nulls": 0.1}), start, end)
    together = generate_batch(make_spec("churn", faults={"nulls": 0.1, "outside_interval": 0.3}), start, end)
    features = [f.name for f in make_spec("churn").features]
    pd.testing.assert_frame_equal(alone[features].isna(), together[features].isna())
