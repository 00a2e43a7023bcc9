"""Monitoring results: one verdict per interval and run, stored in the ops schema, and its history.

Nothing is overwritten: each run's pass over an interval is a row of ``ops.monitoring_runs`` (with its
``ops.drift_metrics``), keyed by dataset, interval and Airflow run id; the newest pass is the interval's
``is_current`` one, flipped in the transaction that stores it. A retry of the same run replaces its own rows.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2.extras

from nightly_ml import db, layout
from nightly_ml.monitoring.aggregates import HISTORY_LIMIT, LOCK_CLASS, PREDICTION_FEATURE
from nightly_ml.monitoring.drift import DriftVerdict, FeatureDrift, PredictionDrift
from nightly_ml.spec import DatasetSpec

log = logging.getLogger(__name__)

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
    # the spec's drift.false_alarm_rate the thresholds were calibrated to, and the pooled sample's start
    false_alarm_rate: float = math.nan
    pool_start: datetime | None = None

    @property
    def run_report_path(self) -> Path | None:
        """This run's own copy of the report (``report_path`` is the interval's latest one)."""
        return layout.drift_run_report_path(self.report_path, self.run_id) if self.report_path else None

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
        return db.json_safe(
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
                "false_alarm_rate": self.false_alarm_rate,
                "untested_features": [f.feature for f in self.verdict.features if not f.tested],
                "report_path": str(self.report_path) if self.report_path else None,
                "run_report_path": str(self.run_report_path) if self.run_report_path else None,
            }
        )


def _json(value: Any) -> str:
    return json.dumps(db.json_safe(value), allow_nan=False)


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
        "psi_threshold": _number(f.threshold),
        "null_pvalue": _number(f.null_pvalue),
        "null_level": _number(f.null_level),
        "null_method": f.null_method or None,
        "tested": f.tested,
        "mean_tolerance": _number(f.mean_tolerance),
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
            "mean_tolerance",
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
        psi_threshold=_number(p.threshold),
        null_pvalue=_number(p.null_pvalue),
        null_level=_number(p.null_level),
        null_method=p.null_method or None,
        tested=bool(p.null_method),
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
        "false_alarm_rate": _number(result.false_alarm_rate),
        "pool_start": result.pool_start,
        "run_report_path": str(result.run_report_path) if result.run_report_path else None,
    }


def write_result(result: MonitoringResult, url: str | None = None) -> None:
    """Add this run's pass to ops.monitoring_runs and ops.drift_metrics and make it the interval's current one,
    in one transaction; earlier runs' passes are kept (a retry of the same run replaces its own)."""
    keys = {"dataset": result.dataset, "interval_start": result.interval_start, "run_id": result.run_id}
    metric_rows = [_metric_row(result, f) for f in result.verdict.features]
    if result.verdict.prediction is not None:
        metric_rows.append(_prediction_row(result, result.verdict.prediction))
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(db.load_sql("monitoring_lock.sql"), {**keys, "lock_class": LOCK_CLASS})
        cur.execute(db.load_sql("monitoring_supersede.sql"), keys)
        cur.execute(db.load_sql("monitoring_insert_run.sql"), _run_row(result))
        psycopg2.extras.execute_batch(cur, db.load_sql("monitoring_insert_drift_metric.sql"), metric_rows)


def record_action(
    dataset: str, interval_start: datetime, run_id: str, action: str, reasons: list[str], url: str | None = None
) -> None:
    """Store what the monitor task did with a run's verdict (retrain, cooldown, awaiting_labels, none, ...) and
    the reasons of that decision (the verdict's and its own) on that run's row."""
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            db.load_sql("monitoring_set_action.sql"),
            {
                "dataset": dataset,
                "interval_start": interval_start,
                "run_id": run_id,
                "action": action,
                "reasons": json.dumps(reasons),
            },
        )


def record_decision(
    dataset: str,
    interval: tuple[datetime, datetime],
    run_id: str,
    decision: Mapping[str, Any],
    url: str | None = None,
) -> None:
    """Keep what a monitor run decided for an interval (ops.monitor_decisions), whatever the decision: the
    nights without a full monitoring pass (no champion, not merged, not scored) leave their decision too."""
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            db.load_sql("monitor_decision_upsert.sql"),
            {
                "dataset": dataset,
                "interval_start": interval[0],
                "interval_end": interval[1],
                "run_id": run_id,
                "action": decision["action"],
                "should_retrain": bool(decision.get("should_retrain")),
                "reasons": _json(list(decision.get("reasons") or [])),
                "champion_version": decision.get("champion_version"),
            },
        )


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
    # feature (or PREDICTION_FEATURE) -> PSI, and the calibrated threshold it was judged by
    feature_psi: dict[str, float] = field(default_factory=dict)
    feature_threshold: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: MonitoringResult) -> HistoryPoint:
        psi = {f.feature: f.psi for f in result.verdict.features}
        thresholds = {f.feature: f.threshold for f in result.verdict.features}
        if result.verdict.prediction is not None:
            psi[PREDICTION_FEATURE] = result.verdict.prediction.psi
            thresholds[PREDICTION_FEATURE] = result.verdict.prediction.threshold
        return cls(
            interval_start=result.interval_start,
            should_retrain=result.should_retrain,
            drifted_features=result.drifted_features,
            prediction_psi=result.prediction_psi,
            live_metrics=dict(result.live_metrics),
            labelled_rows=result.labelled_rows,
            feature_psi=psi,
            feature_threshold=thresholds,
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
            feature_threshold={k: _float_or_nan(v) for k, v in (thresholds or {}).items()},
        )
        for (
            interval_start,
            should_retrain,
            drifted,
            prediction_psi,
            metrics,
            labelled_rows,
            feature_psi,
            thresholds,
        ) in rows
    )
    return MonitoringHistory(spec.name, points)
