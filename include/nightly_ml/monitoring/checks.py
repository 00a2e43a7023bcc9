"""One monitoring pass of an interval: drift, prediction drift and live performance against the champion.

Prediction drift
    The champion has no stored predictions for its training window, so predictions are
    compared with the champion's own predictions of earlier scored intervals: the
    evaluated interval against the ``prediction_reference_intervals`` scored intervals before
    it. Using only what was scored before the interval keeps a re-run's answer equal to the
    first run's.

Calibrated thresholds
    Every drift test's threshold is the null quantile of its statistic at tonight's batch size,
    simulated from the reference's per-interval histograms (:mod:`nightly_ml.monitoring.calibration`),
    at ``drift.false_alarm_rate`` split over the tests; ``drift.window_intervals`` pools the newest
    intervals into the current sample. The thresholds are stored with each metric row.

Live performance
    Rows with event_time in [interval_end - lookback_days, interval_end) whose label had
    arrived by interval_end (``_label_interval_start``), joined to the champion's
    predictions; at most ``max_labelled_rows`` pairs, the newest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import psycopg2.extensions

from nightly_ml import db, storage
from nightly_ml.monitoring.aggregates import (
    DEFAULT_LOOKBACK_DAYS,
    DEFAULT_MAX_LABELLED_ROWS,
    DEFAULT_PREDICTION_REFERENCE_INTERVALS,
    MonitoringError,
    Windows,
    labelled_pairs,
    measure_prediction_drift,
    pooled_windows,
    window_rows,
)
from nightly_ml.monitoring.drift import PredictionDrift, decide, live_metrics, performance_check
from nightly_ml.monitoring.plan import calibration_plan
from nightly_ml.monitoring.profiles import ReferenceProfile, feature_drifts, reference_for, store_reference
from nightly_ml.monitoring.results import MonitoringResult, load_history, write_result
from nightly_ml.spec import DatasetSpec

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- one pass


def compute_monitoring(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    windows: Windows,
    *,
    champion_holdout_metrics: Mapping[str, float] | None,
    run_id: str,
    champion_version: str | None = None,
    prediction_reference_intervals: int = DEFAULT_PREDICTION_REFERENCE_INTERVALS,
    prediction_interval_start: datetime | None = None,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    max_labelled_rows: int = DEFAULT_MAX_LABELLED_ROWS,
    reference: ReferenceProfile | None = None,
    side: psycopg2.extensions.connection | None = None,
) -> MonitoringResult:
    """Every statistic of one pass and the verdict, read on ``conn``; nothing is written.

    ``reference``: the champion's reference profile (:func:`profiles.reference_for`); by default read
    from the cache or computed by this pass (and then not stored: :func:`run_monitoring` stores it).
    ``side``: a second, idle connection to the same database. When given, the prediction drift and the
    labelled pairs are read on it, in a thread and in ``conn``'s snapshot, while ``conn`` counts the
    features; ``conn`` must then be in a REPEATABLE READ transaction (or start one).
    """
    reference_rows, current_rows = window_rows(conn, spec, windows)
    if reference_rows == 0:
        raise MonitoringError(
            f"{spec.name}: no warehouse rows in the reference window [{windows.reference_start}, "
            f"{windows.reference_end}); without a reference use no_champion_verdict()"
        )
    if current_rows == 0:
        raise MonitoringError(
            f"{spec.name}: no warehouse rows in the interval [{windows.current_start}, {windows.current_end}); "
            "was it merged?"
        )
    with conn.cursor() as cur:  # sorts and grouping sets of this pass in memory (SET LOCAL: this transaction)
        cur.execute(db.load_sql("monitoring_work_mem.sql"))
    # Thresholds are calibrated to tonight's batch size, seeded by the interval (a re-run draws the same null).
    plan = calibration_plan(spec, windows.current_start)
    pooled = pooled_windows(conn, spec, windows)
    if reference is None or reference.reference_rows != reference_rows:
        reference = reference_for(conn, spec, windows, champion_version, reference_rows)

    def read_predictions(
        on: psycopg2.extensions.connection,
    ) -> tuple[PredictionDrift | None, np.ndarray, np.ndarray]:
        prediction = measure_prediction_drift(
            on,
            spec,
            windows.current_start,
            champion_version=champion_version,
            reference_intervals=prediction_reference_intervals,
            prediction_interval_start=prediction_interval_start,
            plan=plan,
        )
        labels, predictions = labelled_pairs(
            on,
            spec,
            windows.current_end - timedelta(days=lookback_days),
            windows.current_end,
            champion_version=champion_version,
            max_rows=max_labelled_rows,
        )
        return prediction, labels, predictions

    if side is None:
        features = feature_drifts(conn, spec, pooled, reference, plan)
        prediction, labels, predictions = read_predictions(conn)
    else:
        # The predictions' part reads on the second connection, in this pass's snapshot, while this one
        # counts the features: each holds a server process busy, so the pass uses both cores.
        share_snapshot(conn, side)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitoring") as pool:
            side_part = pool.submit(read_predictions, side)
            features = feature_drifts(conn, spec, pooled, reference, plan)
            prediction, labels, predictions = side_part.result()
        side.rollback()
    metrics = live_metrics(spec.task, labels, predictions)
    performance = performance_check(
        spec.promotion.primary_metric, metrics, champion_holdout_metrics, len(labels), spec.drift
    )
    verdict = decide(spec, features, prediction=prediction, performance=performance)
    return MonitoringResult(
        dataset=spec.name,
        interval_start=windows.current_start,
        interval_end=windows.current_end,
        run_id=run_id,
        reference_start=windows.reference_start,
        reference_end=windows.reference_end,
        champion_version=champion_version,
        rows=current_rows,
        reference_rows=reference_rows,
        verdict=verdict,
        live_metrics=metrics,
        labelled_rows=len(labels),
        false_alarm_rate=spec.drift.false_alarm_rate,
        pool_start=pooled.pool_start,
    )


def share_snapshot(conn: psycopg2.extensions.connection, side: psycopg2.extensions.connection) -> None:
    """Open a read-only transaction on ``side`` that sees exactly what ``conn``'s transaction sees."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_export_snapshot()")
        (snapshot,) = cur.fetchone()
    side.rollback()
    side.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
    with side.cursor() as cur:
        cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
        cur.execute(db.load_sql("monitoring_work_mem.sql"))


def run_monitoring(
    spec: DatasetSpec,
    interval_start: datetime,
    interval_end: datetime,
    *,
    reference_start: datetime,
    reference_end: datetime,
    champion_holdout_metrics: Mapping[str, float] | None,
    run_id: str,
    url: str | None = None,
    champion_version: str | None = None,
    prediction_reference_intervals: int = DEFAULT_PREDICTION_REFERENCE_INTERVALS,
    prediction_interval_start: datetime | None = None,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    max_labelled_rows: int = DEFAULT_MAX_LABELLED_ROWS,
    output_dir: storage.StoragePath | None = None,
) -> MonitoringResult:
    """Monitor one interval against the champion's reference: compute, report, store; return the verdict.

    Only call it when there is a champion (and so a reference window); otherwise use
    :func:`no_champion_verdict`. The report goes to ``reports.report_path_for(spec, interval_start,
    output_dir or storage.root())``.
    """
    # Imported here: matplotlib is heavy and only the report needs it.
    from nightly_ml.monitoring.reports import render_report

    windows = Windows(reference_start, reference_end, interval_start, interval_end)
    conn = db.connect(url)
    side = db.connect(url)
    try:
        # One snapshot for every aggregate, so a concurrent merge cannot split the pass.
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        with conn:
            reference_rows, _ = window_rows(conn, spec, windows)
            reference = reference_for(conn, spec, windows, champion_version, reference_rows) if reference_rows else None
            result = compute_monitoring(
                conn,
                spec,
                windows,
                champion_holdout_metrics=champion_holdout_metrics,
                run_id=run_id,
                champion_version=champion_version,
                prediction_reference_intervals=prediction_reference_intervals,
                prediction_interval_start=prediction_interval_start,
                lookback_days=lookback_days,
                max_labelled_rows=max_labelled_rows,
                reference=reference,
                side=side,
            )
    finally:
        side.close()
        conn.close()
    # The reference side is computed once per champion version: later nights read it from the cache.
    if reference is not None:
        store_reference(spec, windows, champion_version, reference, url)
    history = load_history(spec, interval_start, url)
    path = render_report(spec, result, history, output_dir or storage.root())
    result = replace(result, report_path=path)
    write_result(result, url)
    log.info(
        "monitored %s [%s, %s): should_retrain=%s drifted=%s prediction_psi=%.4g report=%s",
        spec.name,
        interval_start,
        interval_end,
        result.should_retrain,
        list(result.drifted_features),
        result.prediction_psi,
        path,
    )
    return result
