"""Task steps of ``monitor__<dataset>``: drift and performance of scored intervals, and the decision to retrain."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from nightly_ml import alerts, db, layout
from nightly_ml.spec import load_spec

log = logging.getLogger(__name__)


def _load_status(dataset: str, start: datetime) -> str | None:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(db.load_sql("audit_status.sql"), {"dataset": dataset, "start": start})
        row = cur.fetchone()
    return row[0] if row else None


def monitor(dataset: str, start: datetime, end: datetime, run_id: str) -> dict[str, Any]:
    """Drift and performance of one interval against the champion; says whether to retrain and why."""
    from nightly_ml.monitoring import checks, drift
    from nightly_ml.registry import access

    spec = load_spec(dataset)
    base = {"dataset": dataset, "interval_start": start.isoformat(), "interval_end": end.isoformat()}
    status = _load_status(dataset, start)
    if status != "merged":
        # Never train on bad data: a rejected (or missing) interval stops here.
        return {
            **base,
            "action": "stop",
            "should_retrain": False,
            "reasons": [f"the interval's load status is {status or 'missing'}, not merged"],
        }

    champion = access.get_champion(spec)
    if champion is None or champion.reference_window is None:
        verdict = drift.no_champion_verdict()
        return {
            **base,
            "action": "retrain",
            "should_retrain": True,
            "reasons": list(verdict.reasons),
            "drifted_features": [],
            "champion_version": None,
            "report_path": None,
            "report_url": None,
        }

    reference_start, reference_end = champion.reference_window
    result = checks.run_monitoring(
        spec,
        start,
        end,
        reference_start=reference_start,
        reference_end=reference_end,
        champion_holdout_metrics=champion.metrics,
        champion_version=champion.version,
        run_id=run_id,
        # The scoring DAG ran before this one, so tonight's predictions are there to compare.
        prediction_interval_start=start,
        lookback_days=spec.drift.performance_lookback_days,
    )
    summary = result.summary()
    report = summary.get("report_path")
    summary["report_url"] = layout.public_url(Path(report)) if report else None
    action = "retrain" if result.should_retrain else "none"
    if result.should_retrain and not result.verdict.performance_decay:
        since = _recent_trigger(dataset, start, spec.drift.retrain_cooldown_days)
        if since is not None:
            action = "cooldown"
            summary["reasons"] = [
                *summary["reasons"],
                f"retraining not triggered again: drift already triggered it for "
                f"{since:%Y-%m-%d}, within the {spec.drift.retrain_cooldown_days}-day cool-down",
            ]
    if action == "retrain":
        _record_trigger(dataset, start, end, summary["reasons"])
    return {**base, **summary, "action": action}


def _recent_trigger(dataset: str, start: datetime, cooldown_days: int) -> datetime | None:
    if cooldown_days <= 0:
        return None
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            db.load_sql("retrain_trigger_recent.sql"),
            {"dataset": dataset, "start": start, "since": start - timedelta(days=cooldown_days)},
        )
        return cur.fetchone()[0]


def _record_trigger(dataset: str, start: datetime, end: datetime, reasons: list[str]) -> None:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            db.load_sql("retrain_trigger_record.sql"),
            {"dataset": dataset, "start": start, "end": end, "reasons": json.dumps(reasons)},
        )


def monitor_intervals(dataset: str, intervals: list[tuple[datetime, datetime]], run_id: str) -> dict[str, Any]:
    """Monitor each interval in order; one decision per run: retraining if any interval asks for it, on the
    newest such interval, else the newest interval's verdict."""
    summaries = [monitor(dataset, start, end, run_id) for start, end in intervals]
    wanted = [s for s in summaries if s["action"] == "retrain"] or summaries
    return wanted[-1]


def branch_for(summary: dict[str, Any]) -> str:
    """The task the monitor DAG's branch follows for a decision."""
    return {"retrain": "retrain_conf", "stop": "stop"}.get(summary["action"], "no_action")


def retrain_conf(summary: dict[str, Any]) -> dict[str, Any]:
    """The conf of the retrain run that a decision triggers."""
    return {
        "reason": "; ".join(summary["reasons"]),
        "interval_start": summary["interval_start"],
        "interval_end": summary["interval_end"],
        "drifted_features": summary.get("drifted_features", []),
        "triggered_by": "monitor",
    }


def alert_retraining(summary: dict[str, Any]) -> str | None:
    """Mail ops that drift or decay triggered retraining (not for the bootstrap of a first model)."""
    if not summary.get("champion_version"):
        log.info("%s: no champion yet; retraining triggered without an alert", summary["dataset"])
        return None
    spec = load_spec(summary["dataset"])
    start = datetime.fromisoformat(summary["interval_start"])
    end = datetime.fromisoformat(summary["interval_end"])
    return alerts.send(
        alerts.retraining_triggered(spec, start, end, list(summary["reasons"]), summary.get("report_url")), spec
    )
