"""The steps of the retrain and rollback DAGs: check data, train + register, gate + promote, roll back.

Training is idempotent per Airflow run: a retried or cleared ``train`` task finds the model
version its run already registered instead of registering another (unless ``force``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, TypedDict

from nightly_ml import alerts, db
from nightly_ml.intervals import local, parse_utc
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


def labelled_rows(dataset: str, window_end: datetime, since: datetime | None = None) -> dict[str, Any]:
    """Whether the window holds enough labelled rows to train and evaluate, with the split's own rules.

    ``since`` (a change began there: see :func:`plan`): the window starts there when the rows since then are
    enough, else it is the spec's whole window; ``train_since`` says which. One read of the whole window.
    """
    from nightly_ml.modeling import frames

    spec = load_spec(dataset)
    frame = frames.load_training_frame(spec, window_end)
    too_few = None
    if since is not None:
        found = _enough_rows(spec, frame[frame[spec.event_time] >= since], window_end, since)
        if found["enough"]:
            return {**found, "train_since": since}
        too_few = found["reason"].removeprefix("not training yet: ")
    found = _enough_rows(spec, frame, window_end, None)
    if too_few is not None:
        found["reason"] = (
            f"the rows since the change are not enough yet ({too_few}); on the spec's whole window: {found['reason']}"
        )
    return {**found, "train_since": None}


def _enough_rows(spec: DatasetSpec, frame: Any, window_end: datetime, since: datetime | None) -> dict[str, Any]:
    """Whether ``frame`` (the labelled rows of the window from ``since``) splits into training rows and a holdout."""
    from nightly_ml.modeling import frames

    window_start, _ = frames.training_window(spec, window_end, since)
    try:
        train_rows, holdout = frames.time_split(spec, frame, window_end)
    except frames.TrainingDataError as error:
        return {"rows": len(frame), "enough": False, "reason": f"not training yet: {error}"}
    return {
        "rows": len(frame),
        "enough": True,
        "reason": f"{len(train_rows)} labelled rows to train on, {len(holdout)} in the holdout "
        f"(window from {local(spec, window_start):%Y-%m-%d %H:%M %Z})",
    }


def existing_version(dataset: str, dag_id: str, run_id: str) -> str | None:
    """The model version a given Airflow run already registered, if any."""
    from nightly_ml.registry import access

    return access.version_for_airflow_run(load_spec(dataset), dag_id, run_id)


def train(
    dataset: str,
    window_end: datetime,
    *,
    trigger: dict[str, Any],
    airflow_context: dict[str, Any],
    model_family: str | None = None,
    since: datetime | None = None,
) -> dict[str, Any]:
    """Fit the spec's candidates on the window (from ``since`` when given), log everything to MLflow and register
    the best."""
    from nightly_ml.modeling import frames, training
    from nightly_ml.registry import access, run_logging

    spec = _spec_for_family(load_spec(dataset), model_family)
    frame = frames.load_training_frame(spec, window_end, since=since)
    result = training.run_training(spec, frame, window_end, since=since)
    record = run_logging.log_training_result(spec, result, trigger=trigger, airflow_context=airflow_context)
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
        "train_since": since.isoformat() if since else None,
        "mlflow_run_url": access.run_url(record.run_id),
    }


def gate_and_promote(
    dataset: str, version: str, window_end: datetime, *, actor: str, reason: str, since: datetime | None = None
) -> dict[str, Any]:
    """Compare the challenger and the champion on the same holdout; move the alias only if the gate passes.

    ``since``: the window the challenger was trained on starts there; the naive baseline learns from the same rows.

    Both models (and the naive baseline) are scored row by row on the same holdout, so the gate can
    run its paired bootstrap; the decision, its confidence and the window it was judged on are
    recorded in the promotion history and said in the mail.
    """
    from nightly_ml.modeling import evaluation, frames, promotion
    from nightly_ml.registry import access, aliases

    spec = load_spec(dataset)
    champion_before = access.get_champion(spec)
    if champion_before is not None and champion_before.version == str(version):
        return {"action": "noop", "version": version, "reasons": [f"version {version} is already the champion"]}

    frame = frames.load_training_frame(spec, window_end, since=since)
    train_rows, holdout = frames.time_split(spec, frame, window_end)
    challenger = evaluation.paired_evaluation(spec, access.load_model(spec, version), holdout)
    baseline = evaluation.baseline_evaluation(spec, train_rows, holdout)
    champion = access.evaluate_champion_on(spec, holdout)
    decision = promotion.decide(
        spec.promotion, challenger, champion.evaluation if champion else None, baseline, seed=spec.training.seed
    )
    holdout_start = frames.holdout_start_of(spec, frame, window_end)
    context = aliases.DecisionContext(
        holdout=(holdout_start, holdout_start + timedelta(days=spec.training.holdout_days)),
        interval=access.trigger_interval(spec, version),
    )
    reasons = list(decision.reasons)
    # The mail tells the whole retraining: why it ran (monitoring mails a decay only on its first night) and on what.
    why = [f"retrained because: {reason}"]
    if since is not None:
        why.append(f"trained on the rows since {local(spec, since):%Y-%m-%d %H:%M %Z}, where the change began")
    if decision.promote:
        outcome = aliases.promote(
            spec,
            version,
            decision,
            expected_champion=champion.version if champion else None,
            actor=actor,
            reason=reason,
            context=context,
        )
    else:
        outcome = aliases.reject(spec, version, decision, actor=actor, reason=reason, context=context)
    if outcome.action == "promote":
        moved = alerts.model_moved(
            spec, "promote", outcome.from_version, outcome.to_version, [*reasons, *why], access.tracking_uri(), decision
        )
        alerts.send(moved, spec)
    else:
        alerts.send(alerts.challenger_rejected(spec, str(version), [outcome.reason, *reasons, *why], decision), spec)
    return {
        "action": outcome.action,
        "version": str(version),
        "from_version": outcome.from_version,
        "reasons": reasons,
        "challenger": challenger.metrics,
        "champion": champion.evaluation.metrics if champion else None,
        "margin": decision.margin,
        "confidence": decision.confidence.share if decision.confidence else None,
        "baseline_confidence": decision.baseline_confidence.share if decision.baseline_confidence else None,
        "holdout_window": [moment.isoformat() for moment in context.holdout or ()],
    }


def parse_optional_utc(value: str | None) -> datetime | None:
    """An optional instant handed between tasks (ISO 8601), as an aware UTC datetime."""
    return parse_utc(value) if value else None


def resolve_window_end(dataset: str, params: dict[str, Any]) -> datetime:
    """End of the training window: the form's ``window_end``, the triggering interval's end, else the
    end of the newest merged interval (what the warehouse holds now)."""

    for key in ("window_end", "interval_end"):
        if params.get(key):
            return parse_utc(params[key])
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(db.load_sql("audit_latest_merged.sql"), {"dataset": dataset})
        row = cur.fetchone()
    if row is None or row[0] is None:
        raise ValueError(f"{dataset}: no merged interval in the warehouse yet; nothing to train on")
    return parse_utc(row[0])


class TrainingPlan(TypedDict):
    """What the plan step hands on: the window (its end, and where it starts when not ``window_days`` before) and
    whether it holds enough labelled rows."""

    window_end: str
    train_since: str | None
    enough: bool
    reason: str


def plan(dataset: str, params: dict[str, Any]) -> TrainingPlan:
    """The window to train on and whether it holds enough labelled rows.

    ``train_since`` (set by monitoring when a performance decay goes on past its first night, or by hand) starts
    the window there once the rows since then are enough to train and hold out: after a sudden change in the
    label's relation, a window mostly from before it gives challengers that lose to the naive baseline night
    after night. Until then the spec's whole window is used, as for any retrain: after a gradual change (a
    season) those challengers are the ones that win, and waiting for a window of the change's own rows would
    leave a decaying champion in place for weeks of small batches (measured: 16 nights of a real dataset's spring).
    """
    window_end = resolve_window_end(dataset, params)
    found = labelled_rows(dataset, window_end, parse_optional_utc(params.get("train_since")))
    since = found["train_since"]
    return {
        "window_end": window_end.isoformat(),
        "train_since": since.isoformat() if since else None,
        "enough": bool(found["enough"]),
        "reason": str(found["reason"]),
    }


def trigger_of(params: dict[str, Any], *, scheduled: bool) -> dict[str, Any]:
    """Why this training run happened, as its MLflow tags record it."""
    return {
        "reason": params["reason"],
        "triggered_by": "schedule" if scheduled else params["triggered_by"],
        "interval_start": params["interval_start"],
        "interval_end": params["interval_end"],
        "drifted_features": params["drifted_features"],
        "model_family": params["model_family"],
        "train_since": params.get("train_since"),
    }


def airflow_context_of(ti: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The Airflow run a training run came from, for its MLflow tags."""
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "try_number": ti.try_number,
        "data_interval_start": params["interval_start"],
        "data_interval_end": params["interval_end"],
    }
