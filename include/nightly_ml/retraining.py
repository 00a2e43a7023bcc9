"""The steps of the retrain and rollback DAGs: check data, train + register, gate + promote, roll back.

Training is idempotent per Airflow run: a retried or cleared ``train`` task finds the model
version its run already registered instead of registering another (unless ``force``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from nightly_ml import alerts, db
from nightly_ml.spec import DatasetSpec, load_spec

log = logging.getLogger(__name__)


def _spec_for_family(spec: DatasetSpec, model_family: str | None) -> DatasetSpec:
    if not model_family or model_family == "all":
        return spec
    chosen = tuple(c for c in spec.training.candidates if c.name == model_family)
    if not chosen:
        known = ", ".join(c.name for c in spec.training.candidates)
        raise ValueError(f"{spec.name}: no candidate model named {model_family!r} (known: {known}, or 'all')")
    return spec.model_copy(update={"training": spec.training.model_copy(update={"candidates": chosen})})


def labelled_rows(dataset: str, window_end: datetime) -> dict[str, Any]:
    """Whether the window holds enough labelled rows to train and evaluate, with the split's own rules."""
    from nightly_ml import training

    spec = load_spec(dataset)
    frame = training.load_training_frame(spec, window_end)
    try:
        train_rows, holdout = training.time_split(spec, frame, window_end)
    except training.TrainingDataError as error:
        return {"rows": len(frame), "enough": False, "reason": f"not training yet: {error}"}
    return {
        "rows": len(frame),
        "enough": True,
        "reason": f"{len(train_rows)} labelled rows to train on, {len(holdout)} in the holdout",
    }


def existing_version(dataset: str, dag_id: str, run_id: str) -> str | None:
    """The model version a given Airflow run already registered, if any."""
    from nightly_ml import registry

    return registry.version_for_airflow_run(load_spec(dataset), dag_id, run_id)


def train(
    dataset: str,
    window_end: datetime,
    *,
    trigger: dict[str, Any],
    airflow_context: dict[str, Any],
    model_family: str | None = None,
) -> dict[str, Any]:
    """Fit the spec's candidates on the window, log everything to MLflow and register the best."""
    from nightly_ml import registry, training

    spec = _spec_for_family(load_spec(dataset), model_family)
    frame = training.load_training_frame(spec, window_end)
    result = training.run_training(spec, frame, window_end)
    record = registry.log_training_result(spec, result, trigger=trigger, airflow_context=airflow_context)
    log.info(
        "%s: registered version %s (%s, %s) — holdout %s",
        dataset,
        record.model_version,
        result.best.name,
        result.best.params,
        result.metrics,
    )
    return {
        "version": record.model_version,
        "run_id": record.run_id,
        "model_uri": record.model_uri,
        "candidate": result.best.name,
        "metrics": result.metrics,
        "baseline": result.baseline,
        "window_end": window_end.isoformat(),
        "mlflow_run_url": registry.run_url(record.run_id),
    }


def gate_and_promote(dataset: str, version: str, window_end: datetime, *, actor: str, reason: str) -> dict[str, Any]:
    """Compare the challenger and the champion on the same holdout; move the alias only if the gate passes."""
    from nightly_ml import promotion, registry, training

    spec = load_spec(dataset)
    champion_before = registry.get_champion(spec)
    if champion_before is not None and champion_before.version == str(version):
        return {"action": "noop", "version": version, "reasons": [f"version {version} is already the champion"]}

    frame = training.load_training_frame(spec, window_end)
    train_rows, holdout = training.time_split(spec, frame, window_end)
    challenger_model = registry.load_model(spec, version)
    challenger = promotion.Evaluation(
        metrics=training.evaluate(spec, challenger_model, holdout),
        slices=training.evaluate_slices(spec, challenger_model, holdout),
    )
    baseline = promotion.Evaluation(metrics=training.baseline_metrics(spec, train_rows, holdout), slices={})
    champion = registry.evaluate_champion_on(spec, holdout)
    decision = promotion.decide(spec.promotion, challenger, champion.evaluation if champion else None, baseline)
    reasons = list(decision.reasons)
    if decision.promote:
        outcome = registry.promote(
            spec,
            version,
            decision,
            expected_champion=champion.version if champion else None,
            actor=actor,
            reason=reason,
        )
    else:
        outcome = registry.reject(spec, version, decision, actor=actor, reason=reason)
    if outcome.action == "promote":
        alerts.send(
            alerts.model_moved(
                spec, "promote", outcome.from_version, outcome.to_version, reasons, registry.tracking_uri()
            ),
            spec,
        )
    else:
        alerts.send(alerts.challenger_rejected(spec, str(version), [outcome.reason, *reasons]), spec)
    return {
        "action": outcome.action,
        "version": str(version),
        "from_version": outcome.from_version,
        "reasons": reasons,
        "challenger": challenger.metrics,
        "champion": champion.evaluation.metrics if champion else None,
    }


def rollback(dataset: str, target: str, *, actor: str, reason: str) -> dict[str, Any]:
    from nightly_ml import registry

    spec = load_spec(dataset)
    outcome = registry.rollback(spec, target, actor=actor, reason=reason)
    alerts.send(
        alerts.model_moved(
            spec, "rollback", outcome.from_version, outcome.to_version, [reason], registry.tracking_uri()
        ),
        spec,
    )
    return {"action": outcome.action, "from_version": outcome.from_version, "to_version": outcome.to_version}


def resolve_window_end(dataset: str, params: dict[str, Any]) -> datetime:
    """End of the training window: the form's ``window_end``, the triggering interval's end, else the
    end of the newest merged interval (what the warehouse holds now)."""
    from nightly_ml.dag_support import parse_utc

    for key in ("window_end", "interval_end"):
        if params.get(key):
            return parse_utc(params[key])
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(db.load_sql("audit_latest_merged.sql"), {"dataset": dataset})
        row = cur.fetchone()
    if row is None or row[0] is None:
        raise ValueError(f"{dataset}: no merged interval in the warehouse yet; nothing to train on")
    return parse_utc(row[0])
