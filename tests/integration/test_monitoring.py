"""Monitoring against a real PostgreSQL: SQL aggregates equal numpy/scipy, verdicts, idempotent writes.

A private copy of the churn spec (its own warehouse tables) gets a 21-day reference window,
a stationary night (2024-01-22) and a night with a sudden covariate shift (2024-01-23).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2.extensions
import pytest
import yaml
from psycopg2 import sql
from scipy import stats
from sklearn import metrics

from nightly_ml import db
from nightly_ml.config import settings
from nightly_ml.monitoring import aggregates, checks, drift, listings, plan, profiles, results, statistics
from nightly_ml.spec import DatasetSpec, load_spec, parse_spec

pytestmark = pytest.mark.integration

REFERENCE_START = datetime(2024, 1, 1, tzinfo=UTC)
REFERENCE_END = datetime(2024, 1, 22, tzinfo=UTC)
STATIONARY = REFERENCE_END  # the night right after the champion's training window
SHIFTED = REFERENCE_END + timedelta(days=1)  # drift_start of the test spec
DAY = timedelta(days=1)
ROWS = 2000
VERSION = "3"
# What the simulator's sudden covariate shift moves (a price rise): plan mix, charges, calls, usage.
SHIFTED_FEATURES = {"plan", "monthly_charges", "support_calls", "usage_hours"}


def _spec() -> DatasetSpec:
    raw = yaml.safe_load((settings().spec_dir / "churn.yaml").read_text(encoding="utf-8"))
    raw["name"] = "churn_monitoring_it"
    raw["source"].update(
        scenario="sudden_covariate", drift_start=SHIFTED.date().isoformat(), label_delay_days=0, rows_per_interval=ROWS
    )
    return parse_spec(raw)


def _numpy_batch(spec: DatasetSpec, start: datetime, rows: int) -> pd.DataFrame:
    """Stand-in for nightly_ml.etl.simulator when it is not there: the same columns, a similar shift."""
    rng = np.random.default_rng(int(start.timestamp()))
    shift = 1.0 if start >= SHIFTED else 0.0
    plan = rng.choice(
        ["basic", "standard", "premium"], rows, p=[0.45 + 0.3 * shift, 0.35 - 0.18 * shift, 0.2 - 0.12 * shift]
    )
    return pd.DataFrame(
        {
            spec.key.name: [f"{start:%Y%m%d}-{i}" for i in range(rows)],
            spec.event_time: start + pd.to_timedelta(np.sort(rng.integers(0, 86_400_000, rows)), unit="ms"),
            "tenure_months": np.minimum(np.round(rng.gamma(1.2, 25.0, rows)), 240).astype(np.int64),
            "monthly_charges": np.round(60 * np.exp(rng.normal(0, 0.3, rows)) * (1 + 0.35 * shift), 2),
            "support_calls": rng.poisson(1.1 * (1 + shift), rows),
            "usage_hours": np.round(100 * rng.gamma(2.5, 0.4, rows) * (1 - 0.3 * shift), 2),
            "plan": plan,
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "autopay": rng.random(rows) < 0.6,
            spec.label.name: (rng.random(rows) < 0.2).astype(np.int64),
        }
    )


def _batch(spec: DatasetSpec, start: datetime) -> pd.DataFrame:
    try:
        from nightly_ml.etl.simulator import generate_batch
    except ImportError:
        return _numpy_batch(spec, start, ROWS)
    return generate_batch(spec, start, start + DAY, rows=ROWS)


def _champion_predictions(frame: pd.DataFrame) -> np.ndarray:
    """A fixed logistic 'model' of the churn features."""
    logit = (
        -1.5
        + 0.03 * (frame["monthly_charges"] - 60)
        + 0.8 * (frame["support_calls"] - 1)
        - 0.02 * (frame["tenure_months"] - 30)
        - 0.5 * frame["autopay"].astype(float)
    )
    return 1 / (1 + np.exp(-logit.to_numpy(dtype=float)))


def _copy(conn: psycopg2.extensions.connection, table: sql.Composable, frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    buffer.seek(0)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    with conn.cursor() as cur:
        cur.copy_expert(
            sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)").format(table, columns), buffer
        )


@dataclass(frozen=True)
class Loaded:
    spec: DatasetSpec
    url: str
    frames: dict[datetime, pd.DataFrame]
    predictions: dict[datetime, np.ndarray]
    # the 'champion holdout' roc_auc: the fixed model on the last labelled week of the reference
    holdout_auc: float

    def window(self, start: datetime, end: datetime) -> pd.DataFrame:
        return pd.concat([f for day, f in self.frames.items() if start <= day < end], ignore_index=True)


@pytest.fixture(scope="module")
def loaded(warehouse_url: str) -> Loaded:
    spec = _spec()
    db.ensure_dataset_tables(spec, warehouse_url)
    frames: dict[datetime, pd.DataFrame] = {}
    predictions: dict[datetime, np.ndarray] = {}
    with db.transaction(warehouse_url) as conn:
        day = REFERENCE_START
        while day <= SHIFTED:
            frame = _batch(spec, day)
            if day >= STATIONARY:
                frame[spec.label.name] = pd.array([pd.NA] * len(frame), dtype="Int64")  # labels arrive later
            frames[day] = frame
            _copy(
                conn,
                db.warehouse_table(spec),
                frame.assign(_interval_start=day, _interval_end=day + DAY, _row_hash="test"),
            )
            # the champion scored the last 15 nights (its own training days included)
            if day >= REFERENCE_END - 14 * DAY:
                predictions[day] = _champion_predictions(frame)
                scored = pd.DataFrame(
                    {
                        spec.key.name: frame[spec.key.name],
                        spec.event_time: frame[spec.event_time],
                        "_interval_start": day,
                        "prediction": predictions[day],
                        "predicted_label": (predictions[day] >= 0.5).astype(np.int64),
                        "model_name": spec.registered_model_name,
                        "model_version": VERSION,
                    }
                )
                _copy(conn, db.predictions_table(spec), scored)
            day += DAY
    holdout_days = [REFERENCE_END - d * DAY for d in range(1, 8)]
    holdout_auc = metrics.roc_auc_score(
        np.concatenate([frames[d][spec.label.name].to_numpy(dtype=float) for d in holdout_days]),
        np.concatenate([predictions[d] for d in holdout_days]),
    )
    return Loaded(spec, warehouse_url, frames, predictions, float(holdout_auc))


@pytest.fixture
def conn(loaded: Loaded) -> Iterator[psycopg2.extensions.connection]:
    connection = db.connect(loaded.url)
    try:
        yield connection
    finally:
        connection.rollback()
        connection.close()


def _run(loaded: Loaded, start: datetime, tmp_path: Path, **overrides: object) -> results.MonitoringResult:
    arguments: dict[str, object] = {
        "reference_start": REFERENCE_START,
        "reference_end": REFERENCE_END,
        "champion_holdout_metrics": {"roc_auc": loaded.holdout_auc},
        "run_id": f"test__{start.date()}",
        "url": loaded.url,
        "champion_version": VERSION,
        "output_dir": tmp_path,
    }
    arguments.update(overrides)
    return checks.run_monitoring(loaded.spec, start, start + DAY, **arguments)  # type: ignore[arg-type]


def _windows(current: datetime) -> aggregates.Windows:
    return aggregates.Windows(REFERENCE_START, REFERENCE_END, current, current + DAY)


@pytest.mark.parametrize("current", [STATIONARY, SHIFTED], ids=["stationary", "shifted"])
def test_sql_ks_statistic_and_bin_counts_equal_numpy(
    loaded: Loaded, conn: psycopg2.extensions.connection, current: datetime
) -> None:
    reference_frame, current_frame = loaded.window(REFERENCE_START, REFERENCE_END), loaded.frames[current]
    for column in loaded.spec.numeric_features:
        pair = aggregates.feature_samples(loaded.spec, column.name, _windows(current))
        ref = reference_frame[column.name].to_numpy(dtype=float)
        cur = current_frame[column.name].to_numpy(dtype=float)

        statistic, n_ref, n_cur = aggregates.ks_statistic(conn, pair)
        assert (n_ref, n_cur) == (len(ref), len(cur))
        assert statistic == pytest.approx(stats.ks_2samp(ref, cur).statistic, abs=1e-12), column.name

        levels = statistics.quantile_levels(loaded.spec.drift.bins)
        ref_stats, cur_stats, edges = aggregates.profile(conn, pair, levels=levels, discrete=column.type == "integer")
        method = "inverted_cdf" if column.type == "integer" else "linear"
        assert edges == pytest.approx(statistics.reference_bin_edges(np.quantile(ref, levels, method=method)))
        assert ref_stats.mean == pytest.approx(ref.mean()) and ref_stats.sd == pytest.approx(ref.std(ddof=1))
        assert cur_stats.rows == len(cur)

        ref_counts, cur_counts = aggregates.bin_counts(conn, pair, edges)
        assert ref_counts.tolist() == statistics.histogram_counts(ref, edges).tolist()
        assert cur_counts.tolist() == statistics.histogram_counts(cur, edges).tolist()


def test_sql_per_interval_bins_and_moments_equal_numpy(loaded: Loaded, conn: psycopg2.extensions.connection) -> None:
    """The count matrix the calibrated null draws from: one row per reference day, as numpy bins it."""
    days = sorted(d for d in loaded.frames if REFERENCE_START <= d < REFERENCE_END)
    for column in loaded.spec.numeric_features:
        pair = aggregates.feature_samples(loaded.spec, column.name, _windows(SHIFTED))
        _, _, edges = aggregates.profile(conn, pair, levels=statistics.quantile_levels(10))
        bins = aggregates.interval_bins(conn, pair, edges)
        expected = [
            statistics.histogram_counts(loaded.frames[d][column.name].to_numpy(dtype=float), edges) for d in days
        ]
        assert bins.reference.tolist() == np.array(expected).tolist(), column.name
        means = [loaded.frames[d][column.name].to_numpy(dtype=float).mean() for d in days]
        assert bins.moments.means == pytest.approx(means) and bins.moments.sizes == (ROWS,) * len(days)


@pytest.mark.parametrize("current", [STATIONARY, SHIFTED], ids=["stationary", "shifted"])
def test_two_scans_and_the_cached_reference_decide_as_the_per_feature_queries(
    loaded: Loaded, conn: psycopg2.extensions.connection, current: datetime
) -> None:
    """The profile path (reference computed, then read back from ops.reference_profile) gives every feature the
    PSI, counts, threshold and decision of the per-feature queries; its KS is the exact one within the grid bounds."""
    spec, windows = loaded.spec, _windows(current)
    plan_ = plan.calibration_plan(spec, current)
    expected = {
        f.name: aggregates.feature_drift(conn, spec, f.name, windows, plan_) for f in plan.monitored_features(spec)
    }
    reference_rows, _ = aggregates.window_rows(conn, spec, windows)
    computed = profiles.compute_reference(conn, spec, windows, reference_rows)
    assert profiles.store_reference(spec, windows, "cache-test", computed, loaded.url)
    cached = profiles.load_reference(conn, spec, windows, "cache-test", reference_rows)
    assert cached is not None and cached.cached
    assert profiles.load_reference(conn, spec, windows, "cache-test", reference_rows + 1) is None  # rows changed
    for reference in (computed, cached):
        for found in profiles.feature_drifts(conn, spec, windows, reference, plan_):
            want = expected[found.feature]
            assert found.drifted == want.drifted, found.feature
            assert found.kind == "numeric" or found.reason == want.reason, found.feature
            assert found.psi == pytest.approx(want.psi, abs=1e-12), found.feature
            assert found.threshold == pytest.approx(want.threshold, nan_ok=True), found.feature
            assert found.histogram == want.histogram, found.feature
            for mine, theirs in ((found.reference, want.reference), (found.current, want.current)):
                assert (mine.rows, mine.non_null) == (theirs.rows, theirs.non_null), found.feature
                assert mine.mean == pytest.approx(theirs.mean, nan_ok=True), found.feature
                assert mine.sd == pytest.approx(theirs.sd, nan_ok=True), found.feature
            assert found.mean_tolerance == pytest.approx(want.mean_tolerance, nan_ok=True), found.feature
            if found.kind == "numeric":
                assert found.ks_statistic <= want.ks_statistic + 1e-12, found.feature


def test_ks_bounds_bracket_the_exact_statistic() -> None:
    rng = np.random.default_rng(7)
    ref, cur = rng.normal(size=5000), rng.normal(0.2, 1.1, size=3000)
    fine = statistics.reference_bin_edges(np.quantile(ref, statistics.quantile_levels(profiles.FINE_BINS)))
    lower, upper = profiles.ks_bounds(statistics.histogram_counts(ref, fine), statistics.histogram_counts(cur, fine))
    exact = stats.ks_2samp(ref, cur).statistic
    assert lower <= exact <= upper and upper - lower < 0.01


def test_calibrated_thresholds_are_stored_with_each_metric(loaded: Loaded, tmp_path: Path) -> None:
    _run(loaded, STATIONARY, tmp_path)
    with db.transaction(loaded.url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT feature, psi_threshold, null_level, null_method, tested FROM ops.drift_metrics "
            "WHERE dataset = %s AND interval_start = %s",
            (loaded.spec.name, STATIONARY),
        )
        rows = cur.fetchall()
        cur.execute(
            "SELECT false_alarm_rate FROM ops.monitoring_runs WHERE dataset = %s AND interval_start = %s",
            (loaded.spec.name, STATIONARY),
        )
        assert cur.fetchone()[0] == pytest.approx(loaded.spec.drift.false_alarm_rate)
    tests = len(aggregates.monitored_features(loaded.spec)) + 1
    for feature, threshold, level, method, tested in rows:
        assert threshold > 0 and tested and method == "intervals", feature
        assert level == pytest.approx(1 - loaded.spec.drift.false_alarm_rate / tests)


def test_sql_category_counts_equal_pandas(loaded: Loaded, conn: psycopg2.extensions.connection) -> None:
    for column in loaded.spec.categorical_features:
        pair = aggregates.feature_samples(loaded.spec, column.name, _windows(SHIFTED))
        ref_counts, cur_counts = aggregates.category_counts(conn, pair)
        expected = loaded.frames[SHIFTED][column.name].astype(str).str.lower().value_counts().to_dict()
        assert cur_counts == expected
        assert sum(ref_counts.values()) == len(loaded.window(REFERENCE_START, REFERENCE_END))


def test_stationary_interval_needs_no_retraining(loaded: Loaded, tmp_path: Path) -> None:
    result = _run(loaded, STATIONARY, tmp_path)
    assert not result.should_retrain, result.reasons
    assert result.drifted_features == ()
    assert result.rows == ROWS and result.reference_rows == 21 * ROWS
    assert max(f.psi for f in result.verdict.features) < 0.05

    # default: the newest night scored before this one, against the 7 scored before it
    prediction = result.verdict.prediction
    assert prediction is not None and not prediction.drifted
    assert prediction.interval_start == STATIONARY - DAY
    assert prediction.reference_intervals == tuple(STATIONARY - d * DAY for d in range(8, 1, -1))
    reference_predictions = np.concatenate([loaded.predictions[t] for t in prediction.reference_intervals])
    edges = statistics.reference_bin_edges(np.quantile(reference_predictions, statistics.quantile_levels(10)))
    assert prediction.histogram.current == tuple(
        statistics.histogram_counts(loaded.predictions[STATIONARY - DAY], edges)
    )

    # live performance: the labelled, scored rows of the 14 days before the interval's end
    days = [d for d in loaded.predictions if STATIONARY + DAY - 14 * DAY <= d < STATIONARY]
    labels = np.concatenate([loaded.frames[d][loaded.spec.label.name].to_numpy(dtype=float) for d in days])
    scores = np.concatenate([loaded.predictions[d] for d in days])
    assert result.labelled_rows == len(labels) == 13 * ROWS
    assert result.live_metrics["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels, scores))
    assert result.verdict.performance is not None and not result.verdict.performance.decayed

    assert result.report_path is not None and result.report_path.is_file()
    assert result.report_path == tmp_path / "reports" / loaded.spec.name / "drift_2024-01-22.html"


def test_shifted_interval_triggers_retraining_naming_the_features(loaded: Loaded, tmp_path: Path) -> None:
    result = _run(loaded, SHIFTED, tmp_path, prediction_interval_start=SHIFTED)
    assert result.should_retrain
    assert set(result.drifted_features) == SHIFTED_FEATURES
    feature_reason = result.reasons[0]
    for name in SHIFTED_FEATURES:
        assert name in feature_reason
    assert result.verdict.prediction is not None and result.verdict.prediction.drifted
    assert any("prediction drift" in r for r in result.reasons)
    assert {s.feature for s in result.verdict.soft_failures} <= SHIFTED_FEATURES
    html = result.report_path.read_text(encoding="utf-8") if result.report_path else ""
    for name in SHIFTED_FEATURES:
        assert name in html


def test_performance_decay_triggers_retraining(loaded: Loaded, tmp_path: Path) -> None:
    holdout = {"roc_auc": loaded.holdout_auc + 2 * loaded.spec.drift.performance_tolerance}
    result = _run(loaded, STATIONARY, tmp_path, champion_holdout_metrics=holdout)
    assert result.verdict.performance_decay
    assert result.should_retrain
    assert any(r.startswith("performance decay") for r in result.reasons)


def _stored(url: str, dataset: str, start: datetime) -> tuple[list[tuple], list[tuple]]:
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT dataset, interval_start, interval_end, run_id, champion_version, rows, reference_rows, "
            "drifted_features, prediction_psi, prediction_drift, prediction_interval_start, live_metrics, "
            "labelled_rows, performance_decay, soft_failures, should_retrain, reasons, report_path "
            "FROM ops.monitoring_runs WHERE dataset = %s AND interval_start = %s",
            (dataset, start),
        )
        runs = cur.fetchall()
        cur.execute(
            "SELECT feature, kind, psi, ks_statistic, ks_pvalue, chi2_statistic, chi2_pvalue, cramers_v, "
            "unseen_share, ref_rows, cur_rows, ref_mean, cur_mean, ref_sd, cur_sd, ref_null_share, cur_null_share, "
            "drifted, reason, histogram, run_id FROM ops.drift_metrics "
            "WHERE dataset = %s AND interval_start = %s ORDER BY feature",
            (dataset, start),
        )
        return runs, cur.fetchall()


def test_rerunning_an_interval_leaves_the_same_rows(loaded: Loaded, tmp_path: Path) -> None:
    first = _run(loaded, SHIFTED, tmp_path, prediction_interval_start=SHIFTED)
    before = _stored(loaded.url, loaded.spec.name, SHIFTED)
    report = first.report_path.read_bytes() if first.report_path else b""
    second = _run(loaded, SHIFTED, tmp_path, prediction_interval_start=SHIFTED)
    after = _stored(loaded.url, loaded.spec.name, SHIFTED)
    assert len(after[0]) == 1
    assert len(after[1]) == len(loaded.spec.features) + 1  # + the predictions row
    assert before == after
    assert second.report_path == first.report_path
    assert second.report_path is not None and second.report_path.read_bytes() == report

    run = after[0][0]
    assert set(run[7]) == SHIFTED_FEATURES and run[15] is True
    histograms = {row[0]: row[19] for row in after[1]}
    assert set(histograms["monthly_charges"]) >= {"edges", "reference", "current", "labels"}
    assert sum(histograms["monthly_charges"]["current"]) == ROWS
    assert first.verdict.prediction is not None
    assert histograms[aggregates.PREDICTION_FEATURE]["interval_start"] == SHIFTED.isoformat()


def test_history_feeds_the_report(loaded: Loaded, tmp_path: Path) -> None:
    _run(loaded, STATIONARY, tmp_path)
    _run(loaded, SHIFTED, tmp_path, prediction_interval_start=SHIFTED)
    history = results.load_history(loaded.spec, SHIFTED + DAY, loaded.url)
    assert [p.interval_start for p in history.points] == [STATIONARY, SHIFTED]
    latest = history.points[-1]
    assert latest.should_retrain and set(latest.drifted_features) == SHIFTED_FEATURES
    assert latest.feature_psi["monthly_charges"] > loaded.spec.drift.psi_threshold
    assert aggregates.PREDICTION_FEATURE in latest.feature_psi
    assert not math.isnan(history.points[0].live_metrics["roc_auc"])
    assert results.load_history(loaded.spec, STATIONARY, loaded.url).points == ()


def test_no_reference_rows_is_an_error(loaded: Loaded, tmp_path: Path) -> None:
    with pytest.raises(aggregates.MonitoringError, match="no_champion_verdict"):
        _run(
            loaded,
            STATIONARY,
            tmp_path,
            reference_start=datetime(2020, 1, 1, tzinfo=UTC),
            reference_end=datetime(2020, 2, 1, tzinfo=UTC),
        )
    with pytest.raises(aggregates.MonitoringError, match="timezone-aware"):
        _run(loaded, datetime(2024, 1, 22), tmp_path)  # naive
    assert drift.no_champion_verdict().reasons == ("no champion yet: bootstrap training",)


def test_features_marked_not_monitored_are_skipped() -> None:
    demand = load_spec("demand")
    names = [f.name for f in aggregates.monitored_features(demand)]
    assert "day_of_week" not in names  # one weekday per daily batch: would drift every night
    assert "hour" in names and "zone" in names


@pytest.mark.parametrize("current", [STATIONARY, SHIFTED], ids=["stationary", "shifted"])
def test_prediction_drift_reads_the_current_predictions_once(
    loaded: Loaded, conn: psycopg2.extensions.connection, current: datetime
) -> None:
    """The current sample's predictions are only binned (its size comes from the bins): the result is the
    one of profiling both samples first, then binning them."""
    spec = loaded.spec
    measured = aggregates.measure_prediction_drift(conn, spec, current, champion_version=VERSION)
    assert measured is not None
    wanted = aggregates.DEFAULT_PREDICTION_REFERENCE_INTERVALS + spec.drift.window_intervals
    scored = listings.scored_intervals(conn, spec, current, VERSION, wanted)
    pooled = spec.drift.window_intervals
    pair = aggregates._prediction_samples(spec, scored[pooled:], scored[:pooled], VERSION)
    _, current_stats, edges = aggregates.profile(conn, pair, levels=statistics.quantile_levels(spec.drift.bins))
    bins = aggregates.interval_bins(conn, pair, edges)
    assert current_stats.non_null == int(bins.current.sum()) == len(loaded.predictions[current])
    expected = drift.prediction_drift(
        edges,
        bins.reference,
        bins.current,
        spec.drift,
        interval_start=scored[0],
        reference_intervals=sorted(scored[pooled:]),
    )
    assert measured == expected


def test_prediction_drift_of_an_interval_without_predictions_is_none(
    loaded: Loaded, conn: psycopg2.extensions.connection
) -> None:
    unscored = SHIFTED + DAY  # scored intervals exist before it, none of its own
    assert (
        aggregates.measure_prediction_drift(
            conn, loaded.spec, unscored, champion_version=VERSION, prediction_interval_start=unscored
        )
        is None
    )


def test_the_predictions_part_on_a_second_connection_reads_the_pass_snapshot(
    loaded: Loaded, conn: psycopg2.extensions.connection
) -> None:
    """With ``side``, prediction drift and the labelled pairs are read on a second connection, in a thread, in
    the pass's snapshot: the result equals the one-connection pass, and predictions another transaction commits
    after the pass began stay unseen."""
    spec, windows = loaded.spec, _windows(SHIFTED)
    arguments: dict[str, object] = {
        "champion_holdout_metrics": {"roc_auc": loaded.holdout_auc},
        "run_id": "side-test",
        "champion_version": VERSION,
        "prediction_interval_start": SHIFTED,
    }
    conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
    alone = checks.compute_monitoring(conn, spec, windows, **arguments)  # type: ignore[arg-type]
    conn.rollback()
    late = pd.DataFrame(
        {
            spec.key.name: [f"late-{i}" for i in range(500)],
            spec.event_time: SHIFTED + timedelta(hours=1),
            "_interval_start": SHIFTED,
            "prediction": 0.999,
            "predicted_label": 1,
            "model_name": spec.registered_model_name,
            "model_version": VERSION,
        }
    )
    side = db.connect(loaded.url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")  # the pass's snapshot is taken here, before the late predictions
        with db.transaction(loaded.url) as other:
            _copy(other, db.predictions_table(spec), late)
        beside = checks.compute_monitoring(conn, spec, windows, side=side, **arguments)  # type: ignore[arg-type]
        conn.rollback()
        seen_now = checks.compute_monitoring(conn, spec, windows, side=side, **arguments)  # type: ignore[arg-type]
    finally:
        conn.rollback()
        side.close()
        with db.transaction(loaded.url) as other, other.cursor() as cur:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE {} LIKE 'late-%%'").format(
                    db.predictions_table(spec), sql.Identifier(spec.key.name)
                )
            )
    assert alone.verdict.prediction is not None and beside.verdict.prediction is not None
    assert beside.verdict.prediction == alone.verdict.prediction
    assert (beside.labelled_rows, beside.drifted_features) == (alone.labelled_rows, alone.drifted_features)
    assert beside.live_metrics == pytest.approx(alone.live_metrics)
    assert [f.psi for f in beside.verdict.features] == pytest.approx([f.psi for f in alone.verdict.features])
    # a pass that starts after the commit sees the late predictions (the check above could not pass by accident)
    assert seen_now.verdict.prediction is not None
    assert seen_now.verdict.prediction != alone.verdict.prediction


def _executed_relations(plan: dict) -> set[str]:
    """The tables an EXPLAIN ANALYZE plan (JSON) read at least once."""
    found = set()
    if plan.get("Relation Name") and plan.get("Actual Loops", 0) > 0:
        found.add(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found |= _executed_relations(child)
    return found


def test_live_performance_reads_only_the_predictions_of_the_windows_intervals(warehouse_url: str) -> None:
    """The (label, prediction) pairs join each labelled row of the window to the prediction stored under its own
    interval, and read the predictions of the window's intervals only: the partitions of older nights are
    skipped when the query starts (the predictions table has no index on the key, so a join by key alone
    read every night ever scored)."""
    from nightly_ml import partitions

    spec = _spec().model_copy(update={"name": "churn_pairs_pruned"})
    db.ensure_dataset_tables(spec, warehouse_url)
    days = [REFERENCE_START + d * DAY for d in range(4)]
    frames = {day: _batch(spec, day).head(300) for day in days}
    predictions_name = db.predictions_table_name(spec)
    with db.transaction(warehouse_url) as conn:
        for day, frame in frames.items():
            _copy(
                conn,
                db.warehouse_table(spec),
                frame.assign(_interval_start=day, _interval_end=day + DAY, _row_hash="t"),
            )
            own = sql.Identifier("warehouse", partitions.partition_names(predictions_name, day).final)
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(own, db.predictions_table(spec))
                )
            scored = pd.DataFrame(
                {
                    spec.key.name: frame[spec.key.name],
                    spec.event_time: frame[spec.event_time],
                    "_interval_start": day,
                    "prediction": _champion_predictions(frame),
                    "predicted_label": 0,
                    "model_name": spec.registered_model_name,
                    "model_version": VERSION,
                }
            )
            _copy(conn, own, scored)
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                        db.predictions_table(spec), own, sql.Literal(day)
                    )
                )
    window_start, window_end = days[2], days[3] + DAY
    with db.transaction(warehouse_url) as conn:
        labels, scores = aggregates.labelled_pairs(conn, spec, window_start, window_end, champion_version=VERSION)
    window = pd.concat([frames[days[2]], frames[days[3]]], ignore_index=True)
    window = window.assign(prediction=_champion_predictions(window)).sort_values(
        [spec.event_time, spec.key.name], ascending=[False, True]
    )
    window = window[window[spec.label.name].notna()]
    assert len(labels) == len(window) > 0
    np.testing.assert_allclose(labels, window[spec.label.name].to_numpy(dtype=float))
    np.testing.assert_allclose(scores, window["prediction"].to_numpy())

    params = {"window_start": window_start, "window_end": window_end, "model_version": VERSION, "max_rows": 10**6}
    with db.transaction(warehouse_url) as conn:
        params["first_interval"] = aggregates.window_first_interval(conn, spec, window_start, window_end)
    assert params["first_interval"] == days[2]
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(aggregates.labelled_pairs_statement(spec)), params
        )
        read = _executed_relations(cur.fetchone()[0][0]["Plan"])
    names = {day: partitions.partition_names(predictions_name, day).final for day in days}
    assert {names[days[2]], names[days[3]]} <= read, read
    assert not {names[days[0]], names[days[1]]} & read, read
