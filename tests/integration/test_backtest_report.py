"""The backtest summary against a real PostgreSQL: point-in-time baseline, fixed cadence, ops counts, files.

No MLflow: the warehouse rows go in with COPY (what the merge step would leave), predictions and the ops
rows (triggers, gate decisions, loads, monitoring verdicts) are inserted as a replay would have left them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.modeling import evaluation, frames, training
from nightly_ml.monitoring import backtest, backtest_policies
from nightly_ml.spec import DatasetSpec

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
TINY_START = datetime(2024, 6, 3, tzinfo=UTC)  # a Monday; TINY_START + 7 days is a Monday again
EVALUATED = TINY_START + 7 * DAY


# --------------------------------------------------------------------------- helpers


def demand_row(spec: DatasetSpec, key: str, moment: datetime, label: float | None) -> dict[str, Any]:
    """One row of the demand spec's columns; the features vary a little so that a model can be fitted."""
    return {
        spec.key.name: key,
        spec.event_time: moment,
        "hour": moment.hour,
        "day_of_week": moment.weekday(),
        "temperature_c": 10.0 + moment.hour + moment.day % 5,
        "precipitation_mm": float(moment.day % 3),
        "zone": ("downtown", "airport")[moment.hour % 2],
        "is_holiday": False,
        "price_multiplier": 1.0 + 0.1 * (moment.day % 4),
        spec.label.name: label,
    }


def deliver_label(spec: DatasetSpec, url: str, key: str, value: float, interval_start: datetime) -> None:
    """A late label, as labels_apply.sql leaves it: the value and the interval whose input delivered it."""
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {} SET {} = %s, _label_interval_start = %s WHERE {} = %s").format(
                db.warehouse_table(spec), sql.Identifier(spec.label.name), sql.Identifier(spec.key.name)
            ),
            (value, interval_start, key),
        )


def predict(spec: DatasetSpec, url: str, interval_start: datetime, version: str, scores: dict[str, float]) -> None:
    """Predictions of one interval as scoring leaves them (event time and interval copied from the warehouse)."""
    statement = sql.SQL(
        "INSERT INTO {predictions} ({key}, {event_time}, _interval_start, prediction, model_name, model_version) "
        "SELECT {key}, {event_time}, _interval_start, %s, %s, %s FROM {warehouse} WHERE {key} = %s"
    ).format(
        predictions=db.predictions_table(spec),
        warehouse=db.warehouse_table(spec),
        key=sql.Identifier(spec.key.name),
        event_time=sql.Identifier(spec.event_time),
    )
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.executemany(
            statement, [(float(score), spec.registered_model_name, version, key) for key, score in scores.items()]
        )


def ops_rows(url: str, table: str, rows: Sequence[dict[str, Any]]) -> None:
    with db.transaction(url) as conn, conn.cursor() as cur:
        for row in rows:
            cur.execute(
                sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    sql.Identifier("ops", table),
                    sql.SQL(", ").join(sql.Identifier(c) for c in row),
                    sql.SQL(", ").join(sql.Placeholder() for _ in row),
                ),
                list(row.values()),
            )


def interval_rows(spec: DatasetSpec, start: datetime, url: str) -> pd.DataFrame:
    with db.transaction(url) as conn:
        return backtest_policies.interval_rows(spec, start, conn)


def rmse(labels: Sequence[float], scores: Sequence[float]) -> float:
    return math.sqrt(sum((y - s) ** 2 for y, s in zip(labels, scores, strict=True)) / len(labels))


# --------------------------------------------------------------------------- a tiny case, computed by hand


@pytest.fixture(scope="module")
def tiny(kit: Any, warehouse_url: str) -> DatasetSpec:
    """Days 0-6: hours 1-4, label 10*day + hour. Day 7 (evaluated): hours 1, 4 and 9, scored by version 1.

    Day 0's hour-4 label arrives only with day 7's input (and is absurd, 999): it must not count for day 7.
    Day 1's hour-1 label arrives with day 3's input: known by day 7.
    """
    spec = kit.make_spec("demand", "demand_backtest_tiny", window_days=7, holdout_days=1, min_rows=10)
    db.ensure_dataset_tables(spec, warehouse_url)
    for day in range(7):
        lo = TINY_START + day * DAY
        late = {(0, 4), (1, 1)}
        rows = [
            demand_row(spec, f"d{day}h{h}", lo + h * timedelta(hours=1), None if (day, h) in late else 10.0 * day + h)
            for h in (1, 2, 3, 4)
        ]
        kit.load_warehouse(spec, pd.DataFrame(rows), lo, lo + DAY, warehouse_url)
    evaluated = [
        demand_row(spec, f"d7h{h}", EVALUATED + h * timedelta(hours=1), y) for h, y in ((1, 5.0), (4, 40.0), (9, 30.0))
    ]
    kit.load_warehouse(spec, pd.DataFrame(evaluated), EVALUATED, EVALUATED + DAY, warehouse_url)
    deliver_label(spec, warehouse_url, "d1h1", 11.0, TINY_START + 3 * DAY)
    deliver_label(spec, warehouse_url, "d0h4", 999.0, EVALUATED)
    predict(spec, warehouse_url, EVALUATED, "1", {"d7h1": 3.0, "d7h4": 38.0, "d7h9": 33.0})
    return spec


# What was known at day 7's start: every label of days 0-6 except day 0's hour 4 (27 labels, sum 906).
EXPECTED_BASELINE = {
    "d7h1": 1.0,  # its cell (Monday, 1 h): day 0's label
    "d7h4": 39.0,  # its cell's only label arrived late: the 4 h mean of days 1-6
    "d7h9": 906 / 27,  # no 9 h anywhere: the window's mean
}


def test_baseline_uses_only_labels_known_at_the_interval_start(tiny: DatasetSpec, warehouse_url: str) -> None:
    rows = interval_rows(tiny, EVALUATED, warehouse_url)
    got = dict(zip(rows[tiny.key.name], rows["_baseline"], strict=True))
    assert got == pytest.approx(EXPECTED_BASELINE)
    # the late label is there now (the metric uses it), but never reached the baseline of its night
    deliver_label(tiny, warehouse_url, "d0h4", -500.0, EVALUATED)
    again = interval_rows(tiny, EVALUATED, warehouse_url)
    assert list(again["_baseline"]) == list(rows["_baseline"])
    deliver_label(tiny, warehouse_url, "d0h4", 999.0, EVALUATED)


def test_tiny_metrics_match_a_hand_computation(tiny: DatasetSpec, warehouse_url: str) -> None:
    summary = backtest.summarize(tiny, TINY_START, EVALUATED + DAY, fixed_cadence_days=7, url=warehouse_url)

    assert [r.start for r in summary.intervals] == [TINY_START + d * DAY for d in range(8)]
    assert [r.excluded for r in summary.intervals[:7]] == ["no champion yet (bootstrap)"] * 7
    assert summary.bootstrap_intervals == 7 and summary.compared_intervals == 1
    last = summary.intervals[-1]
    assert (last.excluded, last.champion_version, last.rows_scored, last.compared_rows) == (None, "1", 3, 3)

    labels = [5.0, 40.0, 30.0]
    assert last.metrics["pipeline"] == pytest.approx(rmse(labels, [3.0, 38.0, 33.0]))
    assert last.metrics["baseline"] == pytest.approx(rmse(labels, list(EXPECTED_BASELINE.values())))

    # Fixed cadence: day 3 knows 10 labels but only 6 before its 1-day holdout; day 4 trains on days 0-2.
    [retrain] = summary.fixed_retrains
    assert (retrain.at, retrain.deployed, retrain.version) == (TINY_START + 4 * DAY, True, "fixed-1")
    frame = frames.load_training_frame(tiny, retrain.at, url=warehouse_url)
    known = frame[frame[tiny.key.name] != "d0h4"]  # delivered after the retrain: not known then
    model = training.run_training(tiny, known.reset_index(drop=True), retrain.at).best.model
    rows = interval_rows(tiny, EVALUATED, warehouse_url)
    scores = evaluation.predict_scores(tiny, model, frames.feature_frame(tiny, rows))
    assert last.metrics["fixed_cadence"] == pytest.approx(rmse(labels, list(scores)))
    assert last.fixed_cadence_version == "fixed-1"
    assert summary.overall == pytest.approx(last.metrics)
    [month] = summary.months
    assert (month.month, month.intervals, month.compared_intervals, month.compared_rows) == ("2024-06", 8, 1, 3)


# --------------------------------------------------------------------------- a replay-sized case

DAYS = 24
ROWS_PER_DAY = 40
START = datetime(2024, 3, 1, tzinfo=UTC)
END = START + 25 * DAY  # day 24 was rejected: audited, nothing merged


def day(n: int) -> datetime:
    return START + n * DAY


@pytest.fixture(scope="module")
def replay(kit: Any, warehouse_url: str) -> DatasetSpec:
    """24 simulated days; the champion scores from day 6 (version 1, version 2 from day 15) with the label + noise.

    Ops: a quarantine alert on day 3, day 24 rejected; drift triggers on days 9 and 16; version 1 promoted
    (bootstrap) at day 5, version 2 at day 14, version 3 rejected at day 16; monitoring of days 6-23 flags
    feature drift on day 9 and prediction drift on day 16.
    """
    spec = kit.make_spec("demand", "demand_backtest_replay", window_days=7, holdout_days=2, min_rows=100)
    db.ensure_dataset_tables(spec, warehouse_url)
    rng = np.random.default_rng(5)
    for n in range(DAYS):
        batch = kit.labelled_batch(spec, day(n), day(n + 1), ROWS_PER_DAY)
        kit.load_warehouse(spec, batch, day(n), day(n + 1), warehouse_url)
        if n >= 6:
            noisy = dict(zip(batch[spec.key.name], batch[spec.label.name] + rng.normal(0, 5, len(batch)), strict=True))
            predict(spec, warehouse_url, day(n), "1" if n < 15 else "2", noisy)
    audits = [
        {
            "status": "merged",
            "rows_in": ROWS_PER_DAY,
            "rows_merged": ROWS_PER_DAY,
            "rows_quarantined": 2 if n == 3 else 0,
        }
        for n in range(DAYS)
    ] + [{"status": "rejected", "rows_in": ROWS_PER_DAY, "rows_merged": 0, "rows_quarantined": 0}]
    ops_rows(
        warehouse_url,
        "load_audit",
        [
            {"dataset": spec.name, "interval_start": day(n), "interval_end": day(n + 1), "run_id": f"r{n}", **a}
            for n, a in enumerate(audits)
        ],
    )
    ops_rows(
        warehouse_url,
        "retrain_triggers",
        [{"dataset": spec.name, "interval_start": day(n), "interval_end": day(n + 1)} for n in (9, 16)],
    )
    decisions = [("promote", None, "1", 5), ("promote", "1", "2", 14), ("reject", "2", "3", 16)]
    ops_rows(
        warehouse_url,
        "promotion_history",
        [
            {
                "dataset": spec.name,
                "model_name": spec.registered_model_name,
                "from_version": from_version,
                "to_version": to_version,
                "action": action,
                "actor": "test",
                "reason": "replay",
                "interval_start": day(n),
                "interval_end": day(n + 1),
            }
            for action, from_version, to_version, n in decisions
        ]
        # another dataset's decision must not count
        + [
            {
                "dataset": "other",
                "model_name": "other_model",
                "to_version": "9",
                "action": "promote",
                "actor": "t",
                "reason": "x",
                "interval_start": day(10),
            }
        ],
    )
    ops_rows(
        warehouse_url,
        "monitoring_runs",
        [
            {
                "dataset": spec.name,
                "interval_start": day(n),
                "interval_end": day(n + 1),
                "run_id": f"m{n}",
                "reference_start": day(0),
                "reference_end": day(5),
                "rows": ROWS_PER_DAY,
                "reference_rows": 200,
                "drifted_features": ["temperature_c"] if n == 9 else [],
                "prediction_drift": n == 16,
                "should_retrain": n in (9, 16),
            }
            for n in range(6, DAYS)
        ],
    )
    return spec


@pytest.fixture(scope="module")
def summary(replay: DatasetSpec, warehouse_url: str) -> backtest.BacktestSummary:
    return backtest.summarize(replay, START, END, fixed_cadence_days=7, url=warehouse_url)


def test_fixed_cadence_retrains_every_n_days_from_its_first_model(
    replay: DatasetSpec, summary: backtest.BacktestSummary, warehouse_url: str
) -> None:
    # Day 4 knows 160 labelled rows but only 80 before the 2-day holdout (< min_rows 100): the first model is day 5's.
    assert [(r.at, r.version, r.deployed) for r in summary.fixed_retrains] == [
        (day(5), "fixed-1", True),
        (day(12), "fixed-2", True),
        (day(19), "fixed-3", True),
    ]
    assert [r.rows for r in summary.fixed_retrains] == [200, 280, 280]
    versions = [r.fixed_cadence_version for r in summary.intervals]
    assert versions == [None] * 5 + ["fixed-1"] * 7 + ["fixed-2"] * 7 + ["fixed-3"] * 6
    every_third = backtest.summarize(replay, START, END, fixed_cadence_days=3, url=warehouse_url)
    assert [r.at for r in every_third.fixed_retrains] == [day(n) for n in (5, 8, 11, 14, 17, 20, 23)]
    fixed = {c.policy: c for c in every_third.counts}["fixed_cadence"]
    assert (fixed.retrains, fixed.promotions, fixed.alerts) == (7, 7, 7)


def test_counts_events_and_drift_rate_come_from_the_ops_tables(summary: backtest.BacktestSummary) -> None:
    counts = {c.policy: c for c in summary.counts}
    pipeline = counts["pipeline"]
    assert (pipeline.retrains, pipeline.promotions, pipeline.rejections, pipeline.triggers) == (3, 2, 1, 2)
    assert pipeline.alerts == 2 + 2 + 1
    assert counts["baseline"] == backtest.PolicyCounts("baseline", 0, 0, 0, 0, 0)
    assert (counts["fixed_cadence"].retrains, counts["fixed_cadence"].promotions) == (3, 3)
    assert summary.data_alerts == {"rejected_loads": 1, "quarantine_alerts": 1}

    drift = summary.drift
    assert (drift.monitored, drift.drifted, drift.feature_drift, drift.prediction_drift) == (18, 2, 1, 1)
    assert drift.retrain_recommended == 2
    assert drift.rate == pytest.approx(2 / 18)
    assert [r.drift for r in summary.intervals[5:8]] == [None, False, False]
    assert summary.intervals[9].drift is True

    pipeline_events = [(e.at, e.kind, e.version) for e in summary.events if e.policy == "pipeline"]
    assert (day(5), "promote", "1") in pipeline_events
    assert (day(16), "reject", "3") in pipeline_events
    assert [(at, v) for at, kind, v in pipeline_events if kind == "champion"] == [(day(6), "1"), (day(15), "2")]
    assert [at for at, kind, _ in pipeline_events if kind == "trigger"] == [day(9), day(16)]


def test_only_intervals_every_policy_scored_are_compared(summary: backtest.BacktestSummary) -> None:
    assert len(summary.intervals) == 25
    assert summary.bootstrap_intervals == 6
    assert summary.intervals[-1].excluded == "load rejected: nothing merged"
    compared = [r for r in summary.intervals if r.excluded is None]
    assert [r.start for r in compared] == [day(n) for n in range(6, DAYS)]
    assert all(r.compared_rows == ROWS_PER_DAY and set(r.metrics) == set(backtest.POLICIES) for r in compared)
    assert summary.compared_rows == 18 * ROWS_PER_DAY
    assert [r.champion_version for r in compared] == ["1"] * 9 + ["2"] * 9
    # the pipeline's scores are the label plus noise of sd 5: its rmse is near 5, far below the baseline's
    assert 3.5 < summary.overall["pipeline"] < 6.5
    assert summary.overall["baseline"] > summary.overall["pipeline"]
    [march] = [m for m in summary.months if m.month == "2024-03"]
    assert (march.intervals, march.compared_intervals) == (25, 18)


def test_report_files_hold_the_plot_tables_and_a_json_round_trip(
    replay: DatasetSpec, summary: backtest.BacktestSummary, tmp_path: Path
) -> None:
    html_path, json_path = backtest.write_report(replay, summary, tmp_path)
    assert html_path == tmp_path / "reports" / replay.name / "backtest_2024-03-01_2024-03-25.html"
    assert json_path == html_path.with_suffix(".json")
    page = html_path.read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 2  # nightly metric plot and monthly bars
    for table in ('id="monthly"', 'id="counts"', 'id="events"', 'id="intervals"'):
        assert table in page
    assert "How to read this" in page and "all three have a prediction" in page
    assert "NaN" not in json_path.read_text(encoding="utf-8")
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert backtest.summary_from_dict(data) == summary
    text = backtest.render_summary_text(summary)
    assert 6 <= len(text.splitlines()) <= 12
    assert "Drift flagged on 2 of 18 monitored intervals (11.1%" in text
