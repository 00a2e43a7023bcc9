"""Monitoring of one interval: drift aggregates computed in PostgreSQL, one verdict, stored and reported.

Everything that grows with the data stays in the database: quantiles
(``percentile_cont``/``percentile_disc``), bin counts (``width_bucket`` in one
``GROUP BY``), per-category counts and the exact two-sample KS statistic (values collapsed
to per-value counts first, then running sums). Python only sees a few numbers per feature,
plus the (label, prediction) pairs for live performance, which are streamed through a
server-side cursor and capped (newest rows first).

Windows
    *reference*  warehouse rows with event_time in [reference_start, reference_end): the
                 champion's training window;
    *current*    warehouse rows with event_time in [interval_start, interval_end).

Prediction drift
    The champion has no stored predictions for its training window, so predictions are
    compared with the champion's own predictions of earlier scored intervals: the
    evaluated interval (by default the newest interval scored by ``champion_version``
    before ``interval_start``, since the nightly flow scores after it monitors) against
    the ``prediction_reference_intervals`` scored intervals before it. A DAG that scores
    before monitoring passes ``prediction_interval_start=interval_start``. Using only
    what was scored before the interval keeps a re-run's answer equal to the first run's.

Live performance
    Rows with event_time in [interval_end - lookback_days, interval_end) whose label had
    arrived by interval_end (``_label_interval_start``), joined to the champion's
    predictions; at most ``max_labelled_rows`` pairs, the newest.

Each pass replaces the interval's rows in ``ops.monitoring_runs`` and
``ops.drift_metrics`` in one transaction, so re-runs are idempotent.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.config import settings
from nightly_ml.drift import (
    DriftVerdict,
    FeatureDrift,
    PredictionDrift,
    SampleStats,
    categorical_feature_drift,
    decide,
    live_metrics,
    no_champion_verdict,
    numeric_feature_drift,
    performance_check,
    prediction_drift,
    quantile_levels,
    reference_bin_edges,
)
from nightly_ml.spec import Column, DatasetSpec

__all__ = [
    "PREDICTION_FEATURE",
    "HistoryPoint",
    "MonitoringError",
    "MonitoringHistory",
    "MonitoringResult",
    "SamplePair",
    "Windows",
    "bin_counts",
    "category_counts",
    "compute_monitoring",
    "feature_drift",
    "feature_samples",
    "ks_statistic",
    "labelled_pairs",
    "load_history",
    "measure_prediction_drift",
    "monitored_features",
    "no_champion_verdict",
    "profile",
    "report_path_for",
    "run_monitoring",
    "window_rows",
    "write_result",
]

log = logging.getLogger(__name__)

REFERENCE, CURRENT = "reference", "current"  # sample names, also spelled out in the monitoring_*.sql files
PREDICTION_FEATURE = "_prediction"  # cannot clash with a feature: spec names start with a letter
LOCK_CLASS = 740_021_003
DEFAULT_PREDICTION_REFERENCE_INTERVALS = 7
DEFAULT_LOOKBACK_DAYS = 14
DEFAULT_MAX_LABELLED_ROWS = 1_000_000
FETCH_ROWS = 50_000
HISTORY_LIMIT = 90


class MonitoringError(RuntimeError):
    """An interval cannot be monitored (no reference or no current rows, bad arguments)."""


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Windows:
    """The reference window and the current interval, as half-open event-time ranges."""

    reference_start: datetime
    reference_end: datetime
    current_start: datetime
    current_end: datetime

    def __post_init__(self) -> None:
        for name in ("reference_start", "reference_end", "current_start", "current_end"):
            if getattr(self, name).tzinfo is None:
                raise MonitoringError(f"{name} must be timezone-aware, got {getattr(self, name)!r}")
        if not self.reference_start < self.reference_end:
            raise MonitoringError(f"empty reference window [{self.reference_start}, {self.reference_end})")
        if not self.current_start < self.current_end:
            raise MonitoringError(f"empty interval [{self.current_start}, {self.current_end})")

    def params(self) -> dict[str, datetime]:
        return {
            "ref_start": self.reference_start,
            "ref_end": self.reference_end,
            "cur_start": self.current_start,
            "cur_end": self.current_end,
        }


@dataclass(frozen=True)
class SamplePair:
    """Two SELECTs of ``(sample, v)`` -- reference and current -- and the parameters they bind."""

    reference: sql.Composable
    current: sql.Composable
    params: Mapping[str, Any]

    def compose(self, name: str, **identifiers: sql.Composable | str) -> sql.Composed:
        return db.compose(name, reference=self.reference, current=self.current, **identifiers)


def _value_type(column: Column) -> sql.SQL:
    return sql.SQL("float8" if column.is_numeric else "text")


def feature_samples(spec: DatasetSpec, feature: str, windows: Windows) -> SamplePair:
    """The reference and current samples of one feature of the warehouse table."""
    column = spec.feature(feature)

    def sample(name: str, prefix: str) -> sql.Composed:
        return db.compose(
            "monitoring_window_sample.sql",
            sample=sql.Literal(name),
            column=column.name,
            value_type=_value_type(column),
            table=db.warehouse_table(spec),
            event_time=spec.event_time,
            start=sql.Placeholder(f"{prefix}_start"),
            end=sql.Placeholder(f"{prefix}_end"),
        )

    return SamplePair(sample(REFERENCE, "ref"), sample(CURRENT, "cur"), windows.params())


def _prediction_samples(
    spec: DatasetSpec, reference_intervals: Sequence[datetime], current_interval: datetime, model_version: str | None
) -> SamplePair:
    def sample(name: str, intervals: str) -> sql.Composed:
        return db.compose(
            "monitoring_prediction_sample.sql",
            sample=sql.Literal(name),
            predictions=db.predictions_table(spec),
            intervals=sql.Placeholder(intervals),
            model_version=sql.Placeholder("model_version"),
        )

    params = {
        "ref_intervals": list(reference_intervals),
        "cur_intervals": [current_interval],
        "model_version": model_version,
    }
    return SamplePair(sample(REFERENCE, "ref_intervals"), sample(CURRENT, "cur_intervals"), params)


# --------------------------------------------------------------------------- aggregates


def window_rows(conn: psycopg2.extensions.connection, spec: DatasetSpec, windows: Windows) -> tuple[int, int]:
    """Rows in the reference window and in the current interval."""
    statement = db.compose("monitoring_window_rows.sql", table=db.warehouse_table(spec), event_time=spec.event_time)
    with conn.cursor() as cur:
        cur.execute(statement, windows.params())
        reference_rows, current_rows = cur.fetchone()
    return int(reference_rows), int(current_rows)


def profile(
    conn: psycopg2.extensions.connection, pair: SamplePair, *, levels: Sequence[float], discrete: bool = False
) -> tuple[SampleStats, SampleStats, tuple[float, ...]]:
    """Size, mean and sd of both samples, and the reference bin edges at quantile ``levels``.

    ``discrete`` uses ``percentile_disc`` so the edges of an integer feature are observed values.
    """
    percentile = sql.SQL("percentile_disc" if discrete else "percentile_cont")
    found: dict[str, SampleStats] = {}
    quantiles: list[float | None] | None = None
    with conn.cursor() as cur:
        statement = pair.compose("monitoring_numeric_profile.sql", percentile=percentile)
        cur.execute(statement, {**pair.params, "quantiles": list(levels)})
        for sample, rows, non_null, mean, sd, sample_quantiles in cur.fetchall():
            found[sample] = SampleStats(
                rows=int(rows),
                non_null=int(non_null),
                mean=math.nan if mean is None else float(mean),
                sd=math.nan if sd is None else float(sd),
            )
            if sample == REFERENCE:
                quantiles = sample_quantiles
    empty = SampleStats(0, 0)
    return found.get(REFERENCE, empty), found.get(CURRENT, empty), reference_bin_edges(quantiles)


def bin_counts(
    conn: psycopg2.extensions.connection, pair: SamplePair, edges: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Counts per reference bin (``len(edges) + 1`` bins, nulls left out) of both samples."""
    counts = {REFERENCE: np.zeros(len(edges) + 1, dtype=np.int64), CURRENT: np.zeros(len(edges) + 1, dtype=np.int64)}
    with conn.cursor() as cur:
        cur.execute(pair.compose("monitoring_bin_counts.sql"), {**pair.params, "edges": [float(e) for e in edges]})
        for sample, bin_number, n in cur.fetchall():
            counts[sample][bin_number] += n
    return counts[REFERENCE], counts[CURRENT]


def ks_statistic(conn: psycopg2.extensions.connection, pair: SamplePair) -> tuple[float, int, int]:
    """The exact two-sample KS statistic (NaN if a sample is empty) and the non-null sample sizes."""
    with conn.cursor() as cur:
        cur.execute(pair.compose("monitoring_ks_statistic.sql"), pair.params)
        statistic, n_ref, n_cur = cur.fetchone()
    value = math.nan if statistic is None or n_ref == 0 or n_cur == 0 else float(statistic)
    return value, int(n_ref), int(n_cur)


def category_counts(
    conn: psycopg2.extensions.connection, pair: SamplePair
) -> tuple[dict[str | None, int], dict[str | None, int]]:
    """Rows per category of both samples; nulls are counted under the key ``None``."""
    counts: dict[str, dict[str | None, int]] = {REFERENCE: {}, CURRENT: {}}
    with conn.cursor() as cur:
        cur.execute(pair.compose("monitoring_category_counts.sql"), pair.params)
        for sample, category, n in cur.fetchall():
            counts[sample][category] = int(n)
    return counts[REFERENCE], counts[CURRENT]


def _category_stats(counts: Mapping[str | None, int]) -> SampleStats:
    rows = sum(counts.values())
    return SampleStats(rows=rows, non_null=rows - counts.get(None, 0))


def monitored_features(spec: DatasetSpec) -> list[Column]:
    """The features drift is measured on: the spec's ``monitored_features`` that are not free text.

    ``monitor_drift: false`` marks features whose per-interval distribution is fixed by the
    interval itself (``day_of_week`` in a daily batch never looks like a multi-day
    reference), which would otherwise flag every night. Free-text ``string`` features have
    no bins, and their per-value counts would grow with the data.
    """
    return [f for f in spec.monitored_features if f.type != "string"]


def feature_drift(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, feature: str, windows: Windows
) -> FeatureDrift:
    """All drift statistics of one feature, aggregated in the database."""
    column = spec.feature(feature)
    pair = feature_samples(spec, feature, windows)
    if column.is_numeric:
        reference, current, edges = profile(
            conn, pair, levels=quantile_levels(spec.drift.bins), discrete=column.type == "integer"
        )
        ref_counts, cur_counts = bin_counts(conn, pair, edges)
        statistic, _, _ = ks_statistic(conn, pair)
        return numeric_feature_drift(
            feature, edges, ref_counts, cur_counts, statistic, spec.drift, reference=reference, current=current
        )
    ref_counts, cur_counts = category_counts(conn, pair)
    return categorical_feature_drift(
        feature,
        {k: v for k, v in ref_counts.items() if k is not None},
        {k: v for k, v in cur_counts.items() if k is not None},
        spec.drift,
        reference=_category_stats(ref_counts),
        current=_category_stats(cur_counts),
    )


def _scored_intervals(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, before: datetime, model_version: str | None, limit: int
) -> list[datetime]:
    if limit <= 0:
        return []
    statement = db.compose("monitoring_scored_intervals.sql", predictions=db.predictions_table(spec))
    with conn.cursor() as cur:
        cur.execute(statement, {"before": before, "model_version": model_version, "limit": limit})
        return [row[0] for row in cur.fetchall()]


def measure_prediction_drift(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    interval_start: datetime,
    *,
    champion_version: str | None,
    reference_intervals: int = DEFAULT_PREDICTION_REFERENCE_INTERVALS,
    prediction_interval_start: datetime | None = None,
) -> PredictionDrift | None:
    """Prediction drift of one scored interval against the scored intervals before it (see module doc).

    None when there is nothing to compare: no scored interval, or none before it.
    """
    if prediction_interval_start is None:
        scored = _scored_intervals(conn, spec, interval_start, champion_version, reference_intervals + 1)
        if not scored:
            return None
        evaluated, references = scored[0], scored[1:]
    else:
        evaluated = prediction_interval_start
        references = _scored_intervals(conn, spec, evaluated, champion_version, reference_intervals)
    if not references:
        return None
    pair = _prediction_samples(spec, references, evaluated, champion_version)
    reference, current, edges = profile(conn, pair, levels=quantile_levels(spec.drift.bins))
    if reference.non_null == 0 or current.non_null == 0:
        return None
    ref_counts, cur_counts = bin_counts(conn, pair, edges)
    return prediction_drift(
        edges,
        ref_counts,
        cur_counts,
        spec.drift,
        interval_start=evaluated,
        reference_intervals=sorted(references),
    )


def labelled_pairs(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    window_start: datetime,
    window_end: datetime,
    *,
    champion_version: str | None,
    max_rows: int = DEFAULT_MAX_LABELLED_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) of the window's labelled, scored rows, streamed in chunks; newest ``max_rows``."""
    statement = db.compose(
        "monitoring_labelled_pairs.sql",
        warehouse=db.warehouse_table(spec),
        predictions=db.predictions_table(spec),
        key=spec.key.name,
        event_time=spec.event_time,
        label=spec.label.name,
        label_cast=sql.SQL("integer" if spec.label.type == "boolean" else "float8"),
    )
    params = {
        "window_start": window_start,
        "window_end": window_end,
        "model_version": champion_version,
        "max_rows": max_rows,
    }
    chunks: list[np.ndarray] = []
    # A named (server-side) cursor: the client holds one chunk of rows at a time.
    with conn.cursor(name="monitoring_labelled_pairs") as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(statement, params)
        while rows := cur.fetchmany(FETCH_ROWS):
            chunks.append(np.asarray(rows, dtype=np.float64))
    pairs = np.concatenate(chunks) if chunks else np.empty((0, 2), dtype=np.float64)
    return pairs[:, 0], pairs[:, 1]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MonitoringResult:
    """One monitoring pass over one interval: the verdict and what it was computed from."""

    dataset: str
    interval_start: datetime
    interval_end: datetime
    run_id: str
    reference_start: datetime
    reference_end: datetime
    champion_version: str | None
    rows: int
    reference_rows: int
    verdict: DriftVerdict
    live_metrics: dict[str, float]
    labelled_rows: int
    report_path: Path | None = None

    @property
    def should_retrain(self) -> bool:
        return self.verdict.should_retrain

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.verdict.reasons

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return self.verdict.drifted_features

    @property
    def prediction_psi(self) -> float:
        return self.verdict.prediction.psi if self.verdict.prediction is not None else math.nan

    def summary(self) -> dict[str, Any]:
        """A JSON-safe digest (for XCom, alert mails and logs)."""
        return _json_safe(
            {
                "dataset": self.dataset,
                "interval_start": self.interval_start.isoformat(),
                "interval_end": self.interval_end.isoformat(),
                "run_id": self.run_id,
                "champion_version": self.champion_version,
                "rows": self.rows,
                "should_retrain": self.should_retrain,
                "reasons": list(self.reasons),
                "drifted_features": list(self.drifted_features),
                "prediction_psi": self.prediction_psi,
                "performance_decay": self.verdict.performance_decay,
                "live_metrics": self.live_metrics,
                "labelled_rows": self.labelled_rows,
                "soft_failures": [s.feature for s in self.verdict.soft_failures],
                "report_path": str(self.report_path) if self.report_path else None,
            }
        )


def _json_safe(value: Any) -> Any:
    """NaN/inf become null (JSON and jsonb have no NaN); containers are converted recursively."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _json(value: Any) -> str:
    return json.dumps(_json_safe(value), allow_nan=False)


def _number(value: float | None) -> float | None:
    """A float column value: NULL for 'not computable'."""
    return None if value is None or not math.isfinite(value) else float(value)


def _metric_row(result: MonitoringResult, f: FeatureDrift) -> dict[str, Any]:
    ref, cur = f.reference, f.current
    return {
        "dataset": result.dataset,
        "interval_start": result.interval_start,
        "feature": f.feature,
        "kind": f.kind,
        "psi": _number(f.psi),
        "ks_statistic": _number(f.ks_statistic),
        "ks_pvalue": _number(f.ks_pvalue),
        "chi2_statistic": _number(f.chi2_statistic),
        "chi2_pvalue": _number(f.chi2_pvalue),
        "cramers_v": _number(f.cramers_v),
        "unseen_share": _number(f.unseen_share) if f.kind == "categorical" else None,
        "ref_rows": ref.rows if ref else None,
        "cur_rows": cur.rows if cur else None,
        "ref_mean": _number(ref.mean) if ref else None,
        "cur_mean": _number(cur.mean) if cur else None,
        "ref_sd": _number(ref.sd) if ref else None,
        "cur_sd": _number(cur.sd) if cur else None,
        "ref_null_share": _number(ref.null_share) if ref else None,
        "cur_null_share": _number(cur.null_share) if cur else None,
        "drifted": f.drifted,
        "reason": f.reason,
        "histogram": _json(f.histogram.to_json()),
        "run_id": result.run_id,
    }


def _prediction_row(result: MonitoringResult, p: PredictionDrift) -> dict[str, Any]:
    row = dict.fromkeys(
        (
            "ks_statistic",
            "ks_pvalue",
            "chi2_statistic",
            "chi2_pvalue",
            "cramers_v",
            "unseen_share",
            "ref_mean",
            "cur_mean",
            "ref_sd",
            "cur_sd",
            "ref_null_share",
            "cur_null_share",
        ),
    )
    row.update(
        dataset=result.dataset,
        interval_start=result.interval_start,
        feature=PREDICTION_FEATURE,
        kind="prediction",
        psi=_number(p.psi),
        ref_rows=sum(p.histogram.reference),
        cur_rows=sum(p.histogram.current),
        drifted=p.drifted,
        reason=p.reason,
        histogram=_json(
            {
                **p.histogram.to_json(),
                "interval_start": p.interval_start.isoformat() if p.interval_start else None,
                "reference_intervals": [t.isoformat() for t in p.reference_intervals],
            }
        ),
        run_id=result.run_id,
    )
    return row


def _run_row(result: MonitoringResult) -> dict[str, Any]:
    verdict = result.verdict
    prediction = verdict.prediction
    return {
        "dataset": result.dataset,
        "interval_start": result.interval_start,
        "interval_end": result.interval_end,
        "run_id": result.run_id,
        "champion_version": result.champion_version,
        "reference_start": result.reference_start,
        "reference_end": result.reference_end,
        "rows": result.rows,
        "reference_rows": result.reference_rows,
        "drifted_features": list(verdict.drifted_features),
        "prediction_psi": _number(prediction.psi) if prediction else None,
        "prediction_drift": verdict.prediction_drifted,
        "prediction_interval_start": prediction.interval_start if prediction else None,
        "live_metrics": _json(result.live_metrics),
        "labelled_rows": result.labelled_rows,
        "performance_decay": verdict.performance_decay,
        "soft_failures": _json([s.to_json() for s in verdict.soft_failures]),
        "should_retrain": verdict.should_retrain,
        "reasons": _json(list(verdict.reasons)),
        "report_path": str(result.report_path) if result.report_path else None,
    }


def write_result(result: MonitoringResult, url: str | None = None) -> None:
    """Replace the interval's rows in ops.monitoring_runs and ops.drift_metrics, in one transaction."""
    keys = {"dataset": result.dataset, "interval_start": result.interval_start}
    metric_rows = [_metric_row(result, f) for f in result.verdict.features]
    if result.verdict.prediction is not None:
        metric_rows.append(_prediction_row(result, result.verdict.prediction))
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(db.load_sql("monitoring_lock.sql"), {**keys, "lock_class": LOCK_CLASS})
        cur.execute(db.load_sql("monitoring_delete.sql"), keys)
        cur.execute(db.load_sql("monitoring_insert_run.sql"), _run_row(result))
        psycopg2.extras.execute_batch(cur, db.load_sql("monitoring_insert_drift_metric.sql"), metric_rows)


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
) -> MonitoringResult:
    """Every statistic of one pass and the verdict, read on ``conn``; nothing is written."""
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
    features = [feature_drift(conn, spec, f.name, windows) for f in monitored_features(spec)]
    prediction = measure_prediction_drift(
        conn,
        spec,
        windows.current_start,
        champion_version=champion_version,
        reference_intervals=prediction_reference_intervals,
        prediction_interval_start=prediction_interval_start,
    )
    labels, predictions = labelled_pairs(
        conn,
        spec,
        windows.current_end - timedelta(days=lookback_days),
        windows.current_end,
        champion_version=champion_version,
        max_rows=max_labelled_rows,
    )
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
    )


def report_path_for(spec: DatasetSpec, interval_start: datetime, output_dir: Path) -> Path:
    """Where an interval's drift report lives: ``<output_dir>/reports/<dataset>/drift_<YYYY-MM-DD>.html`` (UTC)."""
    day = interval_start.astimezone(UTC).date().isoformat()
    return output_dir / "reports" / spec.name / f"drift_{day}.html"


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
    output_dir: Path | None = None,
) -> MonitoringResult:
    """Monitor one interval against the champion's reference: compute, report, store; return the verdict.

    Only call it when there is a champion (and so a reference window); otherwise use
    :func:`no_champion_verdict`. The report goes to ``report_path_for(spec, interval_start,
    output_dir or settings().data_dir)``.
    """
    # Imported here: matplotlib is heavy and only the report needs it.
    from nightly_ml.reports import render_report

    windows = Windows(reference_start, reference_end, interval_start, interval_end)
    conn = db.connect(url)
    try:
        # One snapshot for every aggregate, so a concurrent merge cannot split the pass.
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        with conn:
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
            )
    finally:
        conn.close()
    history = load_history(spec, interval_start, url)
    path = render_report(spec, result, history, output_dir or settings().data_dir)
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


# --------------------------------------------------------------------------- history


@dataclass(frozen=True)
class HistoryPoint:
    """One earlier monitoring pass, as the report's time series need it."""

    interval_start: datetime
    should_retrain: bool
    drifted_features: tuple[str, ...] = ()
    prediction_psi: float = math.nan
    live_metrics: dict[str, float] = field(default_factory=dict)
    labelled_rows: int = 0
    # feature (or PREDICTION_FEATURE) -> PSI
    feature_psi: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: MonitoringResult) -> HistoryPoint:
        psi = {f.feature: f.psi for f in result.verdict.features}
        if result.verdict.prediction is not None:
            psi[PREDICTION_FEATURE] = result.verdict.prediction.psi
        return cls(
            interval_start=result.interval_start,
            should_retrain=result.should_retrain,
            drifted_features=result.drifted_features,
            prediction_psi=result.prediction_psi,
            live_metrics=dict(result.live_metrics),
            labelled_rows=result.labelled_rows,
            feature_psi=psi,
        )


@dataclass(frozen=True)
class MonitoringHistory:
    """Earlier monitoring passes of one dataset, oldest first."""

    dataset: str
    points: tuple[HistoryPoint, ...] = ()

    def with_result(self, result: MonitoringResult) -> MonitoringHistory:
        """The history up to ``result``'s interval, ending with ``result`` itself."""
        earlier = tuple(p for p in self.points if p.interval_start < result.interval_start)
        return MonitoringHistory(self.dataset, (*earlier, HistoryPoint.from_result(result)))


def _float_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def load_history(
    spec: DatasetSpec, until: datetime, url: str | None = None, *, limit: int = HISTORY_LIMIT
) -> MonitoringHistory:
    """The newest ``limit`` monitoring passes with interval_start strictly before ``until``, oldest first."""
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(db.load_sql("monitoring_history.sql"), {"dataset": spec.name, "until": until, "limit": limit})
        rows = cur.fetchall()
    points = tuple(
        HistoryPoint(
            interval_start=interval_start,
            should_retrain=bool(should_retrain),
            drifted_features=tuple(drifted or ()),
            prediction_psi=_float_or_nan(prediction_psi),
            live_metrics={k: _float_or_nan(v) for k, v in (metrics or {}).items()},
            labelled_rows=int(labelled_rows),
            feature_psi={k: _float_or_nan(v) for k, v in (feature_psi or {}).items()},
        )
        for interval_start, should_retrain, drifted, prediction_psi, metrics, labelled_rows, feature_psi in rows
    )
    return MonitoringHistory(spec.name, points)
