"""Task steps of ``monitor__<dataset>``: drift and performance of scored intervals, and the decision to retrain.

Point in time: each interval is judged against the version that scored it (the ``model_version`` stored with
its predictions: the champion of its night) and that version's reference window, never today's champion, so
a catch-up or backfill run over many intervals gives each the result of its night. Each pass is stored as a
new history row for the interval and run (:mod:`nightly_ml.monitoring.results`), with the action taken.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from nightly_ml import alerts, db, layout
from nightly_ml.intervals import local
from nightly_ml.spec import DatasetSpec, load_spec

log = logging.getLogger(__name__)


def _load_status(dataset: str, start: datetime) -> str | None:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(db.load_sql("audit_status.sql"), {"dataset": dataset, "start": start})
        row = cur.fetchone()
    return row[0] if row else None


def monitor(dataset: str, start: datetime, end: datetime, run_id: str) -> dict[str, Any]:
    """Drift and performance of one interval against the version that scored it; says whether to retrain and why.

    Every decision is kept per interval and per run in ops.monitor_decisions, the nights without a monitoring
    pass (not merged, no champion yet, not scored on its night) included."""
    from nightly_ml.monitoring import results

    decision = _decide(dataset, start, end, run_id)
    results.record_decision(dataset, (start, end), run_id, decision)
    return decision


def _decide(dataset: str, start: datetime, end: datetime, run_id: str) -> dict[str, Any]:
    from nightly_ml.modeling import scoring
    from nightly_ml.monitoring import checks, drift, results
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

    scored = scoring.scored_versions(spec, start, end)
    if not scored:
        current = access.get_champion(spec)
        if current is not None:
            # Not scored on its night (no champion yet then): nothing to judge, and no bootstrap now.
            return {
                **base,
                "action": "none",
                "should_retrain": False,
                "reasons": [
                    f"the interval holds no predictions (no champion on its night); version {current.version} is "
                    "the champion now, so nothing is judged and no bootstrap training is needed"
                ],
                "drifted_features": [],
                "champion_version": None,
                "report_path": None,
                "report_url": None,
            }
    version = next(iter(scored), None)
    if len(scored) > 1:
        log.warning(
            "%s [%s, %s) holds predictions of versions %s; judging version %s", dataset, start, end, scored, version
        )
    champion = access.version_info(spec, version) if version is not None else None
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
    # This run's own copy: the link in the task and the mail keeps showing what this run decided.
    report = summary.get("run_report_path") or summary.get("report_path")
    summary["report_url"] = layout.public_url(report) if report else None
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
    if action == "retrain" and _already_triggered(dataset, start, run_id):
        # A catch-up or backfill re-judges the interval as on its night, but its retrain already ran then.
        action = "already_triggered"
        summary["reasons"] = [
            *summary["reasons"],
            "retraining not triggered again: an earlier run of this interval already triggered it",
        ]
    if action == "retrain" and not result.verdict.performance_decay:
        action = _wait_for_labels(spec, start, end, champion.version, summary)
    if action == "retrain" and result.verdict.performance_decay:
        began = _decay_began(spec, start, end)
        if began is not None and began < start:
            summary["train_since"] = began.isoformat()
            summary["reasons"] = [
                *summary["reasons"],
                f"{drift.DECAY_GOES_ON} {local(spec, began):%Y-%m-%d}: retraining trains on the "
                "rows from then on once they are enough to train and hold out (until then on the whole window)",
            ]
    if action == "retrain":
        _record_trigger(dataset, start, end, summary["reasons"])
    results.record_action(dataset, start, run_id, action, summary["reasons"])
    return {**base, **summary, "action": action}


def _already_triggered(dataset: str, start: datetime, run_id: str) -> bool:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            db.load_sql("monitoring_triggered_before.sql"), {"dataset": dataset, "start": start, "run_id": run_id}
        )
        return bool(cur.fetchone()[0])


def _recent_trigger(dataset: str, start: datetime, cooldown_days: int) -> datetime | None:
    if cooldown_days <= 0:
        return None
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            db.load_sql("retrain_trigger_recent.sql"),
            {"dataset": dataset, "start": start, "since": start - timedelta(days=cooldown_days)},
        )
        return cur.fetchone()[0]


def _run_start(name: str, spec: DatasetSpec, start: datetime, end: datetime, **params: Any) -> tuple[Any, ...]:
    """The row of a ``monitoring_*_start.sql`` query: where a run of nights that ends at ``[start, end)`` began,
    within the training window that ends with it."""
    window_start = end - timedelta(days=spec.training.window_days)
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(db.load_sql(name), {"dataset": spec.name, "start": start, "window_start": window_start, **params})
        return cur.fetchone()


def _decay_began(spec: DatasetSpec, start: datetime, end: datetime) -> datetime | None:
    """The first interval of the unbroken run of decayed intervals ending at ``[start, end)``, within the training
    window that ends with it: where the change that the decay shows began."""
    row = _run_start("monitoring_decay_start.sql", spec, start, end, min_labelled_rows=spec.drift.min_labelled_rows)
    return row[0]


def _wait_for_labels(spec: DatasetSpec, start: datetime, end: datetime, version: str, summary: dict[str, Any]) -> str:
    """``retrain`` once the labelled rows since the drift began fill a retrain's holdout, else ``awaiting_labels``
    (monitoring.label_wait); adds the reason, and ``drift_began`` and ``first_wait`` (mail ops once) to the
    summary. Soft failures alone (no feature or prediction drift) do not wait."""
    from nightly_ml.monitoring import label_wait

    began, waited_before = _drift_began(spec, start, end, version)
    if began is None:
        return "retrain"
    with db.transaction() as conn, conn.cursor() as cur:
        statement = db.compose(
            "monitoring_labels_since.sql",
            warehouse=db.warehouse_table(spec),
            event_time=spec.event_time,
            label=spec.label.name,
        )
        cur.execute(statement, {"since": began, "end": end})
        labelled_rows, newest_labelled = cur.fetchone()
    wait = label_wait.judge(spec, start, began, int(labelled_rows), newest_labelled)
    summary["reasons"] = [*summary["reasons"], wait.reason]
    summary["drift_began"] = began.isoformat()
    if wait.ready:
        return "retrain"
    summary["first_wait"] = not waited_before
    return label_wait.AWAITING_LABELS


def _drift_began(spec: DatasetSpec, start: datetime, end: datetime, version: str) -> tuple[datetime | None, bool]:
    """The first interval of the unbroken run of drifted intervals under champion ``version`` that ends at
    ``[start, end)`` (None when it did not drift), and whether an earlier night of the run waited for labels."""
    began, waited_before = _run_start("monitoring_drift_start.sql", spec, start, end, champion_version=version)
    return began, bool(waited_before)


def _record_trigger(dataset: str, start: datetime, end: datetime, reasons: list[str]) -> None:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(
            db.load_sql("retrain_trigger_record.sql"),
            {"dataset": dataset, "start": start, "end": end, "reasons": json.dumps(reasons)},
        )


def monitor_intervals(dataset: str, intervals: list[tuple[datetime, datetime]], run_id: str) -> dict[str, Any]:
    """Monitor each interval in order; one decision per run: retraining if any interval asks for it, on the
    newest such interval, else the newest interval's verdict."""
    summaries = [monitor(dataset, start, end, run_id) for start, end in sorted(intervals)]
    wanted = [s for s in summaries if s["action"] == "retrain"] or summaries
    return wanted[-1]


def branch_for(summary: dict[str, Any]) -> str:
    """The task the monitor DAG's branch follows for a decision."""
    branches = {"retrain": "retrain_conf", "stop": "stop", "awaiting_labels": "alert_drift"}
    return branches.get(summary["action"], "no_action")  # cooldown, none, ...


def retrain_conf(summary: dict[str, Any]) -> dict[str, Any]:
    """The conf of the retrain run that a decision triggers."""
    return {
        "reason": "; ".join(summary["reasons"]),
        "interval_start": summary["interval_start"],
        "interval_end": summary["interval_end"],
        "drifted_features": summary.get("drifted_features", []),
        "triggered_by": "monitor",
        "train_since": summary.get("train_since"),
    }


def alert_retraining(summary: dict[str, Any]) -> str | None:
    """Mail ops that drift or decay triggered retraining (not for the bootstrap of a first model)."""
    if not summary.get("champion_version"):
        log.info("%s: no champion yet; retraining triggered without an alert", summary["dataset"])
        return None
    if summary.get("train_since"):
        # Ops heard of this decay on its first night; the retrain says what it did (promoted or rejected).
        log.info("%s: performance decay since %s goes on; no new alert", summary["dataset"], summary["train_since"])
        return None
    return _send(alerts.retraining_triggered, summary)


def alert_drift_awaiting_labels(summary: dict[str, Any]) -> str | None:
    """Mail ops on the first night a drift waits for labels before it retrains (not on the nights after)."""
    if not summary.get("first_wait"):
        log.info("%s: drift since %s still waits for labels; no new alert", summary["dataset"], summary["drift_began"])
        return None
    return _send(alerts.drift_awaiting_labels, summary)


def _send(alert: Callable[..., alerts.Alert], summary: dict[str, Any]) -> str:
    """Send the alert that ``alert(spec, start, end, reasons, report_url)`` makes of a monitoring decision."""
    spec = load_spec(summary["dataset"])
    start = datetime.fromisoformat(summary["interval_start"])
    end = datetime.fromisoformat(summary["interval_end"])
    return alerts.send(alert(spec, start, end, list(summary["reasons"]), summary.get("report_url")), spec)
