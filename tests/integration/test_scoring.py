"""Scoring against real PostgreSQL and MLflow: train from the warehouse, promote, score, re-score."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg2 import sql

from nightly_ml import db, partitions
from nightly_ml.etl import warehouse
from nightly_ml.modeling import chunk_scores, evaluation, frames, moved_keys, scoring, training
from nightly_ml.modeling.promotion import decide
from nightly_ml.registry import access, aliases, run_logging
from nightly_ml.spec import DatasetSpec

pytestmark = pytest.mark.integration

START = datetime(2024, 6, 1, tzinfo=UTC)
TRAIN_DAYS = 10
WINDOW_END = START + timedelta(days=TRAIN_DAYS)
SCORE_START, SCORE_END = WINDOW_END, WINDOW_END + timedelta(days=1)
ROWS_PER_DAY = 80
SCORE_ROWS = 300
CHUNK_ROWS = 128


def unlabelled(spec: DatasetSpec, frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(**{spec.label.name: None})


def load_days(kit: Any, spec: DatasetSpec, url: str) -> None:
    """Ten labelled days (one interval each), with a few unlabelled rows, then one unlabelled day to score."""
    db.ensure_dataset_tables(spec, url)
    for day in range(TRAIN_DAYS):
        lo, hi = START + timedelta(days=day), START + timedelta(days=day + 1)
        batch = kit.labelled_batch(spec, lo, hi, ROWS_PER_DAY)
        if day == 4:  # labels that have not arrived yet must stay out of training
            batch.loc[batch.index[:20], spec.label.name] = None
        kit.load_warehouse(spec, batch, lo, hi, url)
    batch = kit.labelled_batch(spec, SCORE_START, SCORE_END, SCORE_ROWS)
    kit.load_warehouse(spec, unlabelled(spec, batch), SCORE_START, SCORE_END, url)


def predictions(spec: DatasetSpec, url: str) -> pd.DataFrame:
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT {}, prediction, predicted_label, model_name, model_version, _interval_start FROM {} ORDER BY 1"
            ).format(sql.Identifier(spec.key.name), db.predictions_table(spec))
        )
        columns = [c.name for c in cur.description]
        return pd.DataFrame.from_records(cur.fetchall(), columns=columns)


def warehouse_rows(spec: DatasetSpec, url: str, start: datetime) -> pd.DataFrame:
    columns = [spec.key.name, *(f.name for f in spec.features)]
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {} WHERE _interval_start = %s ORDER BY 1").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in columns), db.warehouse_table(spec)
            ),
            (start,),
        )
        return pd.DataFrame.from_records(cur.fetchall(), columns=columns)


@pytest.mark.parametrize("dataset", ["churn", "demand"])
def test_train_promote_score_and_rescore(
    dataset: str, kit: Any, mlflow_server: str, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = kit.make_spec(dataset, f"{dataset}_scoring")
    load_days(kit, spec, warehouse_url)

    frame = frames.load_training_frame(spec, WINDOW_END, url=warehouse_url)
    assert len(frame) == TRAIN_DAYS * ROWS_PER_DAY - 20  # labelled rows of the window only
    assert list(frame.columns) == frames.frame_columns(spec)
    assert frame[spec.label.name].notna().all()
    assert frame[spec.event_time].min() >= pd.Timestamp(START)
    assert frame[spec.event_time].max() < pd.Timestamp(WINDOW_END)
    assert frame[spec.event_time].is_monotonic_increasing

    result = training.run_training(spec, frame, WINDOW_END)
    record = run_logging.log_training_result(spec, result, trigger={"reason": "first model"}, airflow_context={})
    decision = decide(spec.promotion, result.evaluation, None, result.baseline_evaluation)
    assert decision.promote, decision.reasons
    aliases.promote(
        spec,
        record.model_version,
        decision,
        expected_champion=None,
        actor="test",
        reason="first model",
        url=warehouse_url,
    )

    batch_sizes: list[int] = []
    real_predict = evaluation.predict_scores

    def counting_predict(spec_: DatasetSpec, model: Any, features: pd.DataFrame) -> np.ndarray:
        batch_sizes.append(len(features))
        return real_predict(spec_, model, features)

    monkeypatch.setattr(evaluation, "predict_scores", counting_predict)
    scored = scoring.score_interval(spec, SCORE_START, SCORE_END, url=warehouse_url, chunk_rows=CHUNK_ROWS)
    assert scored == scoring.ScoreResult(rows=SCORE_ROWS, model_version=record.model_version)
    # Streamed: never more than one chunk of rows through the model at a time.
    assert batch_sizes == [CHUNK_ROWS, CHUNK_ROWS, SCORE_ROWS - 2 * CHUNK_ROWS]

    first = predictions(spec, warehouse_url)
    source = warehouse_rows(spec, warehouse_url, SCORE_START)
    assert first[spec.key.name].tolist() == source[spec.key.name].tolist()
    assert set(first["model_version"]) == {record.model_version}
    assert set(first["model_name"]) == {spec.registered_model_name}
    assert (first["_interval_start"] == pd.Timestamp(SCORE_START)).all()
    model = access.load_model(spec, record.model_version)
    assert chunk_scores.scorer(spec, model).by_branches  # the registered pipeline, scored by its branches
    expected = real_predict(spec, model, frames.feature_frame(spec, source))
    np.testing.assert_allclose(first["prediction"].to_numpy(), expected, rtol=1e-12)
    if spec.task == "classification":
        assert first["prediction"].between(0, 1).all()
        assert (first["predicted_label"] == (first["prediction"] >= 0.5).astype(int)).all()
    else:
        assert first["predicted_label"].isna().all()

    # A re-run (one big chunk this time) replaces the interval's predictions: same values, no duplicates.
    again = scoring.score_interval(spec, SCORE_START, SCORE_END, url=warehouse_url)
    assert again.rows == SCORE_ROWS
    second = predictions(spec, warehouse_url)
    pd.testing.assert_frame_equal(first, second)

    # Another interval is scored next to it without touching it.
    empty = scoring.score_interval(spec, SCORE_END, SCORE_END + timedelta(days=1), url=warehouse_url)
    assert (empty.rows, empty.skipped) == (0, False)
    assert len(predictions(spec, warehouse_url)) == SCORE_ROWS

    # A range of several intervals (a catch-up) gets one partition per interval, each swapped in.
    scoring.write_predictions(spec, model, record.model_version, START, SCORE_END, url=warehouse_url)
    by_interval = predictions(spec, warehouse_url).groupby("_interval_start").size()
    assert by_interval.tolist() == [ROWS_PER_DAY] * TRAIN_DAYS + [SCORE_ROWS]
    with db.transaction(warehouse_url) as conn:
        attached = partitions.partitions_in(conn, db.predictions_table_name(spec), START, SCORE_END)
    assert [bound for _, bound in attached] == [START + timedelta(days=d) for d in range(TRAIN_DAYS + 1)]
    pd.testing.assert_frame_equal(
        predictions(spec, warehouse_url).query("_interval_start == @SCORE_START").reset_index(drop=True), second
    )


@pytest.mark.parametrize("dataset", ["churn", "demand"])
def test_no_champion_means_skipped_with_a_reason(
    dataset: str, kit: Any, mlflow_server: str, warehouse_url: str
) -> None:
    spec = kit.make_spec(dataset, f"{dataset}_unscored")
    db.ensure_dataset_tables(spec, warehouse_url)
    batch = kit.labelled_batch(spec, SCORE_START, SCORE_END, 50)
    kit.load_warehouse(spec, unlabelled(spec, batch), SCORE_START, SCORE_END, warehouse_url)
    result = scoring.score_interval(spec, SCORE_START, SCORE_END, url=warehouse_url)
    assert result.skipped and result.rows == 0 and result.model_version is None
    assert f"'{spec.registered_model_name}'" in result.skipped_reason
    assert "no champion" in result.skipped_reason
    assert predictions(spec, warehouse_url).empty


def test_scoring_rejects_bad_arguments(kit: Any, warehouse_url: str) -> None:
    spec = kit.make_spec("churn", "churn_args")
    with pytest.raises(ValueError, match="naive datetime"):
        scoring.score_interval(spec, datetime(2024, 1, 1), SCORE_END, url=warehouse_url)
    with pytest.raises(ValueError, match="chunk_rows must be positive"):
        scoring.write_predictions(spec, None, "1", SCORE_START, SCORE_END, url=warehouse_url, chunk_rows=0)
    with pytest.raises(ValueError, match="empty interval"):
        scoring.write_predictions(spec, None, "1", SCORE_END, SCORE_START, url=warehouse_url)


class _ConstantModel:
    """Predicts 0.25 for every row; with ``fail_after`` chunks it raises instead, mid-stream."""

    classes_ = (0, 1)

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after, self.calls = fail_after, 0

    def _scores(self, features: pd.DataFrame) -> np.ndarray:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("the model broke mid-stream")
        return np.full(len(features), 0.25)

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return self._scores(features)

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        positive = self._scores(features)
        return np.column_stack([1 - positive, positive])


def incoming_tables(spec: DatasetSpec, url: str) -> list[str]:
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
            (partitions.SCHEMA, f"{db.predictions_table_name(spec)}\\_\\_incoming%"),
        )
        return [name for (name,) in cur.fetchall()]


@pytest.mark.parametrize("dataset", ["churn", "demand"])
def test_a_run_that_fails_mid_stream_keeps_the_old_predictions_and_leaves_no_table(
    dataset: str, kit: Any, warehouse_url: str
) -> None:
    """The predictions stream into a table committed on its own connection: a failure drops it, and the
    interval keeps the predictions of the run before, types and values exactly as written."""
    spec = kit.make_spec(dataset, f"{dataset}_midstream")
    db.ensure_dataset_tables(spec, warehouse_url)
    batch = kit.labelled_batch(spec, SCORE_START, SCORE_END, SCORE_ROWS)
    kit.load_warehouse(spec, unlabelled(spec, batch), SCORE_START, SCORE_END, warehouse_url)
    rows = scoring.write_predictions(
        spec, _ConstantModel(), "7", SCORE_START, SCORE_END, url=warehouse_url, chunk_rows=CHUNK_ROWS
    )
    assert rows == SCORE_ROWS
    before = predictions(spec, warehouse_url)
    np.testing.assert_array_equal(before["prediction"].to_numpy(), np.full(SCORE_ROWS, 0.25))  # exact: binary
    assert set(before["model_version"]) == {"7"}
    source = warehouse_rows(spec, warehouse_url, SCORE_START)
    assert before[spec.key.name].tolist() == source[spec.key.name].tolist()
    if spec.task == "classification":
        assert (before["predicted_label"] == 0).all()
    else:
        assert before["predicted_label"].isna().all()

    with pytest.raises(RuntimeError, match="mid-stream"):
        scoring.write_predictions(
            spec, _ConstantModel(fail_after=1), "8", SCORE_START, SCORE_END, url=warehouse_url, chunk_rows=CHUNK_ROWS
        )
    pd.testing.assert_frame_equal(predictions(spec, warehouse_url), before)
    assert incoming_tables(spec, warehouse_url) == []


def record_load(spec: DatasetSpec, start: datetime, url: str) -> None:
    """The audit row of a load of the interval, written as the merge writes it (a new time for each load)."""
    with db.transaction(url) as conn:
        warehouse.record_audit(
            conn,
            spec=spec,
            start=start,
            end=start + timedelta(days=1),
            run_id="test",
            status="merged",
            rows_in=0,
            rows_merged=0,
            rows_quarantined=0,
        )


def test_a_key_that_moved_loses_its_earlier_prediction_and_only_stale_partitions_are_read(
    kit: Any, warehouse_url: str, recorded: Callable[[Any, str], list[Any]]
) -> None:
    """A key re-delivered by a later interval keeps one prediction, the later one. Looking for such keys
    reads only the partitions not scored from their interval's current load: none on an ordinary night."""
    spec = kit.make_spec("churn", "churn_moved")
    db.ensure_dataset_tables(spec, warehouse_url)
    day1, day2, day3 = (SCORE_START + timedelta(days=d) for d in range(3))
    first, second = (kit.labelled_batch(spec, day, day + timedelta(days=1), 50) for day in (day1, day2))
    key = spec.key.name
    clear = moved_keys.clear_moved_predictions
    looked: list[moved_keys.MovedKeys] = recorded(moved_keys, "clear_moved_predictions")

    def load_and_score(day: datetime, batch: pd.DataFrame, *, score: bool = True) -> None:
        with db.transaction(warehouse_url) as conn:
            partitions.remove_warehouse_interval(conn, spec, day)
        kit.load_warehouse(spec, unlabelled(spec, batch), day, day + timedelta(days=1), warehouse_url)
        record_load(spec, day, warehouse_url)
        if score:
            scoring.write_predictions(spec, _ConstantModel(), "1", day, day + timedelta(days=1), url=warehouse_url)

    load_and_score(day1, first)
    load_and_score(day2, second)
    scoring.write_predictions(spec, _ConstantModel(), "1", day2, day2 + timedelta(days=1), url=warehouse_url)
    assert [(m.partitions_read, m.removed) for m in looked] == [([], 0)] * 3  # day1's partition is current

    # The first key leaves day1 (re-loaded without it, not scored again) and comes again with day2.
    moved = first.iloc[:1].assign(**{spec.event_time: second[spec.event_time].iloc[0]})
    load_and_score(day1, first.iloc[1:], score=False)
    load_and_score(day2, pd.concat([second, moved], ignore_index=True))
    stale = partitions.partition_names(db.predictions_table_name(spec), day1).final
    assert [name.rsplit(".", 1)[-1].strip('"') for name in looked[-1].partitions_read] == [stale]
    assert looked[-1].removed == 1
    stored = predictions(spec, warehouse_url)
    assert stored.loc[stored[key] == first[key].iloc[0], "_interval_start"].tolist() == [pd.Timestamp(day2)]
    assert len(stored) == 49 + 51  # day1's other stale predictions wait for day1's own re-score
    scoring.write_predictions(spec, _ConstantModel(), "1", day1, day1 + timedelta(days=1), url=warehouse_url)
    assert looked[-1].partitions_read == []  # day2's partition is of its current load
    assert len(predictions(spec, warehouse_url)) == 49 + 51

    # With a key lookback, intervals before it are read too: validation does not look their keys up.
    lookback = spec.model_copy(update={"validation": spec.validation.model_copy(update={"key_lookback_days": 1})})
    with psycopg.connect(db.libpq_url(warehouse_url)) as conn:
        read = clear(conn, lookback, day3, day3 + timedelta(days=1)).partitions_read
        conn.rollback()
    assert [name.rsplit(".", 1)[-1].strip('"') for name in read] == [stale]


def test_small_read_batches_are_recut_into_the_same_chunks_and_predictions(
    kit: Any, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows arrive in record batches of about READ_BATCH_BYTES (what bounds scoring's memory); however
    small, they are re-cut into chunks of exactly chunk_rows and give the same predictions."""
    spec = kit.make_spec("churn", "churn_small_batches")
    db.ensure_dataset_tables(spec, warehouse_url)
    batch = kit.labelled_batch(spec, SCORE_START, SCORE_END, SCORE_ROWS)
    kit.load_warehouse(spec, unlabelled(spec, batch), SCORE_START, SCORE_END, warehouse_url)
    scoring.write_predictions(spec, _ConstantModel(), "1", SCORE_START, SCORE_END, url=warehouse_url)
    before = predictions(spec, warehouse_url)

    read_batches: list[int] = []
    chunk_sizes: list[int] = []
    real_read_ahead, real_scores = scoring._read_ahead, chunk_scores.scores

    def counting_read_ahead(batches: Any, depth: int = 2) -> Any:
        for record_batch in real_read_ahead(batches, depth):
            read_batches.append(record_batch.num_rows)
            yield record_batch

    def counting_scores(scorer: chunk_scores.Scorer, table: Any) -> Any:
        chunk_sizes.append(table.num_rows)
        return real_scores(scorer, table)

    monkeypatch.setattr(scoring, "READ_BATCH_BYTES", 4096)
    monkeypatch.setattr(scoring, "_read_ahead", counting_read_ahead)
    monkeypatch.setattr(chunk_scores, "scores", counting_scores)
    scoring.write_predictions(
        spec, _ConstantModel(), "1", SCORE_START, SCORE_END, url=warehouse_url, chunk_rows=CHUNK_ROWS
    )
    assert len(read_batches) > 3 and sum(read_batches) == SCORE_ROWS  # ~4 KiB each
    assert chunk_sizes == [CHUNK_ROWS, CHUNK_ROWS, SCORE_ROWS - 2 * CHUNK_ROWS]
    pd.testing.assert_frame_equal(predictions(spec, warehouse_url), before)


def test_one_intervals_predictions_check_their_bound_and_are_attached_without_a_scan(
    kit: Any, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When every row scored is of one interval (its partition is the only one in the range, DEFAULT holds none
    of it), the predictions stream into a table that checks the interval's bound, and attaching it reads none
    of its rows (PostgreSQL says so at DEBUG1); rows of several intervals, or in DEFAULT, go as before."""
    spec = kit.make_spec("churn", "churn_bound")
    db.ensure_dataset_tables(spec, warehouse_url)
    one_day = timedelta(days=1)
    day1, day2 = SCORE_START, SCORE_START + one_day
    for day in (day1, day2):
        kit.load_warehouse(
            spec, unlabelled(spec, kit.labelled_batch(spec, day, day + one_day, 50)), day, day + one_day, warehouse_url
        )
    with psycopg.connect(db.libpq_url(warehouse_url)) as conn:
        assert not partitions.only_interval(conn, spec.warehouse_table, day1, day2)  # its rows are in DEFAULT
    own = sql.Identifier("warehouse", partitions.warehouse_partition(spec, day1).final)
    default = sql.Identifier("warehouse", db.default_partition_name(spec.warehouse_table))
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(own, db.warehouse_table(spec)))
        cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE _interval_start = %s").format(own, default), (day1,))
        cur.execute(sql.SQL("DELETE FROM {} WHERE _interval_start = %s").format(default), (day1,))
        cur.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                db.warehouse_table(spec), own, sql.Literal(day1)
            )
        )
    with psycopg.connect(db.libpq_url(warehouse_url)) as conn:
        assert partitions.only_interval(conn, spec.warehouse_table, day1, day2)
        assert not partitions.only_interval(conn, spec.warehouse_table, day1, day2 + one_day)  # day2: DEFAULT

    notices: list[str] = []
    real_connect = scoring._connect

    def connect_listening(url: str | None) -> psycopg.Connection:
        conn = real_connect(url)
        conn.execute("SET client_min_messages = debug1")
        conn.commit()
        conn.add_notice_handler(lambda notice: notices.append(notice.message_primary or ""))
        return conn

    monkeypatch.setattr(scoring, "_connect", connect_listening)
    predictions_name = db.predictions_table_name(spec)
    implied = 'partition constraint for table "{}" is implied by existing constraints'.format

    scoring.write_predictions(spec, _ConstantModel(), "1", day1, day2, url=warehouse_url)
    first = partitions.partition_names(predictions_name, day1).final
    assert implied(first) in notices, notices
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_constraint WHERE conname = %s", (partitions.BOUND_CHECK,))
        assert cur.fetchone()[0] == 0  # dropped once attached
        # The model's name and version came as the incoming table's defaults; the partition keeps none.
        cur.execute(
            "SELECT count(*) FROM pg_attrdef AS d JOIN pg_inherits AS i ON i.inhrelid = d.adrelid "
            "WHERE i.inhparent = %s::regclass",
            (db.predictions_table(spec).as_string(conn),),
        )
        assert cur.fetchone()[0] == 0
    assert set(predictions(spec, warehouse_url)["model_name"]) == {spec.registered_model_name}

    notices.clear()
    scoring.write_predictions(spec, _ConstantModel(), "1", day1, day2 + one_day, url=warehouse_url)
    second = partitions.partition_names(predictions_name, day2).final
    assert implied(first) not in notices and implied(second) not in notices, notices
    stored = predictions(spec, warehouse_url)
    assert len(stored) == 100 and sorted(set(stored["_interval_start"])) == [pd.Timestamp(day1), pd.Timestamp(day2)]
    assert set(stored["model_version"]) == {"1"}
