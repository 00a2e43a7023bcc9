"""Moving the ``champion`` alias safely, and its recorded history.

Every move of ``champion`` happens under a PostgreSQL advisory lock and is recorded in
``ops.promotion_history`` in the same database transaction, after checking that the champion is
still the one the decision was made against. A failure at any step leaves the champion where it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2.extensions
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from nightly_ml import db
from nightly_ml.modeling.promotion import Confidence, GateDecision
from nightly_ml.registry.access import (
    _TAG_VALUE_LIMIT,
    ALIAS_CHAMPION,
    ALIAS_PREVIOUS,
    TAG_PROMOTED_BY,
    TAG_PROMOTION_REASON,
    TAG_REJECTED,
    TAG_ROLLED_BACK_BY,
    PromotionOutcome,
    RegistryError,
    RollbackError,
    VersionNotFound,
    _alias_version,
    _client,
    _existing_versions,
    _holdout_metrics,
    _mlflow,
    _version,
)
from nightly_ml.spec import DatasetSpec

log = logging.getLogger(__name__)

TAG_PROMOTION_CONFIDENCE = "promotion_confidence"


@dataclass(frozen=True)
class DecisionContext:
    """What a gate decision was made on, for the history: the holdout window, and the interval whose run
    triggered the retrain (``None`` when unknown, e.g. a manual run)."""

    holdout: tuple[datetime, datetime] | None = None
    interval: tuple[datetime, datetime] | None = None


# --------------------------------------------------------------------------- moving the alias


def _lock_key(spec: DatasetSpec) -> str:
    return f"nightly_ml.champion:{spec.registered_model_name}"


def _version_metrics(client: MlflowClient, spec: DatasetSpec, version: ModelVersion) -> dict[str, float]:
    return _holdout_metrics(spec, client.get_run(version.run_id).data.metrics)


def _share(found: Confidence | None) -> float | None:
    return None if found is None else found.share


def _gate_columns(spec: DatasetSpec, decision: GateDecision | None, context: DecisionContext | None) -> dict[str, Any]:
    """The history's gate columns (NULL for a move that no gate decided, e.g. a rollback)."""
    context = context or DecisionContext()
    found = decision.confidence if decision else None
    holdout, interval = context.holdout or (None, None), context.interval or (None, None)
    bootstrap = (
        None
        if found is None
        else json.dumps(
            {"against": found.against, "resamples": found.resamples, "blocks": found.blocks, "cut": found.block_note}
        )
    )
    return {
        "primary_metric": spec.promotion.primary_metric if decision else None,
        "margin": decision.margin if decision else None,
        "confidence": _share(found),
        "required_confidence": found.required if found else None,
        "baseline_confidence": _share(decision.baseline_confidence) if decision else None,
        "bootstrap": bootstrap,
        "holdout_start": holdout[0],
        "holdout_end": holdout[1],
        "interval_start": interval[0],
        "interval_end": interval[1],
    }


def _decision_tags(decision: GateDecision) -> dict[str, str]:
    found = decision.confidence
    if found is None:
        return {}
    return {TAG_PROMOTION_CONFIDENCE: f"{found.share:.4f} vs {found.against} (required {found.required})"}


def _record(
    cur: psycopg2.extensions.cursor,
    spec: DatasetSpec,
    *,
    action: str,
    from_version: str | None,
    to_version: str,
    actor: str,
    reason: str,
    metrics: Mapping[str, Any],
    gate_reasons: Sequence[str] = (),
    decision: GateDecision | None = None,
    context: DecisionContext | None = None,
) -> int:
    cur.execute(
        db.load_sql("registry_record.sql"),
        {
            "dataset": spec.name,
            "model_name": spec.registered_model_name,
            "from_version": from_version,
            "to_version": to_version,
            "action": action,
            "actor": actor,
            "reason": reason,
            "metrics": json.dumps(db.json_safe(metrics)),
            "gate_reasons": json.dumps(list(gate_reasons)),
            **_gate_columns(spec, decision, context),
        },
    )
    return int(cur.fetchone()[0])


@dataclass
class _AliasMove:
    """Moves ``champion`` (and ``previous_champion``) and can put back exactly what it moved."""

    client: MlflowClient
    name: str
    old_champion: str | None
    old_previous: str | None
    changed: list[str] = field(default_factory=list)

    def apply(self, target: str) -> None:
        if self.old_champion is not None:
            self.changed.append(ALIAS_PREVIOUS)  # noted first: a failure mid-call must still restore it
            self.client.set_registered_model_alias(self.name, ALIAS_PREVIOUS, self.old_champion)
        self.changed.append(ALIAS_CHAMPION)
        self.client.set_registered_model_alias(self.name, ALIAS_CHAMPION, target)

    def restore(self) -> None:
        before = {ALIAS_CHAMPION: self.old_champion, ALIAS_PREVIOUS: self.old_previous}
        for alias in reversed(self.changed):
            if before[alias] is None:
                self.client.delete_registered_model_alias(self.name, alias)
            else:
                self.client.set_registered_model_alias(self.name, alias, before[alias])


@contextmanager
def _champion_lock(spec: DatasetSpec, url: str | None) -> Generator[tuple[psycopg2.extensions.cursor, _AliasMove]]:
    """Hold the dataset's advisory lock for one transaction; read the aliases inside it.

    If the transaction fails after the aliases moved (e.g. the commit), they are moved back,
    so history and registry never disagree.
    """
    client = _client()
    name = spec.registered_model_name
    conn = db.connect(url)
    move: _AliasMove | None = None
    try:
        with conn, conn.cursor() as cur:
            cur.execute(db.load_sql("registry_lock.sql"), {"lock_key": _lock_key(spec)})
            with _mlflow(f"reading the aliases of {name}"):
                champion = _alias_version(client, name, ALIAS_CHAMPION)
                previous = _alias_version(client, name, ALIAS_PREVIOUS)
            move = _AliasMove(
                client=client,
                name=name,
                old_champion=None if champion is None else str(champion.version),
                old_previous=None if previous is None else str(previous.version),
            )
            yield cur, move
    except BaseException as error:
        if move is not None and move.changed:
            try:
                with _mlflow(f"restoring the aliases of {name}"):
                    move.restore()
            except (MlflowException, RegistryError) as restore_error:
                raise RegistryError(
                    f"{name}: moving the champion failed ({error}) and putting the aliases back failed too "
                    f"({restore_error}); set '{ALIAS_CHAMPION}' to {move.old_champion} by hand"
                ) from error
        raise
    finally:
        conn.close()


def _require_version(
    client: MlflowClient, spec: DatasetSpec, version: str, doing: str, error: type[RegistryError] = VersionNotFound
) -> ModelVersion:
    name = spec.registered_model_name
    found = _version(client, name, version)
    if found is None:
        existing = ", ".join(_existing_versions(client, name)) or "none"
        raise error(f"cannot {doing} {name} version {version}: no such version (existing: {existing})")
    return found


def _tag(client: MlflowClient, name: str, version: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value[:_TAG_VALUE_LIMIT])


def _recorded_move(
    cur: psycopg2.extensions.cursor,
    move: _AliasMove,
    spec: DatasetSpec,
    action: str,
    version: str,
    *,
    actor: str,
    reason: str,
    metrics: Mapping[str, Any],
    tags: Mapping[str, str],
    gate_reasons: Sequence[str] = (),
    decision: GateDecision | None = None,
    context: DecisionContext | None = None,
) -> PromotionOutcome:
    """The one sequence every decision follows, inside the champion lock's transaction: record it in
    ``ops.promotion_history``, move the aliases when it is a move, tag the version in MLflow. Any
    failure rolls the history row back and puts the aliases back (see :func:`_champion_lock`)."""
    name = spec.registered_model_name
    history_id = _record(
        cur,
        spec,
        action=action,
        from_version=move.old_champion,
        to_version=version,
        actor=actor,
        reason=reason,
        metrics=metrics,
        gate_reasons=tuple(gate_reasons),
        decision=decision,
        context=context,
    )
    if action in ("promote", "rollback"):
        move.apply(version)
    _tag(move.client, name, version, tags)
    return PromotionOutcome(action, name, move.old_champion, version, reason, history_id)


def promote(
    spec: DatasetSpec,
    version: str,
    decision: GateDecision,
    *,
    expected_champion: str | None,
    actor: str,
    reason: str,
    url: str | None = None,
    context: DecisionContext | None = None,
) -> PromotionOutcome:
    """Make ``version`` the champion, if the champion is still ``expected_champion``.

    ``expected_champion`` is the version the gate compared against (``None``: there was no
    champion). If another promotion moved the champion meanwhile, nothing moves and a
    ``reject`` with reason ``stale: champion moved`` is recorded: re-evaluate against the new
    champion. Returns what happened.
    """
    if not decision.promote:
        raise ValueError(f"the gate rejected version {version}; call reject() instead of promote()")
    version = str(version)
    name = spec.registered_model_name
    with _champion_lock(spec, url) as (cur, move):
        client = move.client
        with _mlflow(f"promoting {name} version {version}"):
            target = _require_version(client, spec, version, "promote")
            metrics = {**_version_metrics(client, spec, target), "primary_delta": decision.primary_delta}
            if move.old_champion != (None if expected_champion is None else str(expected_champion)):
                stale = (
                    f"stale: champion moved from {expected_champion or 'none'} to {move.old_champion or 'none'} "
                    f"after the gate compared version {version} against it; re-evaluate against the new champion"
                )
                return _recorded_move(
                    cur,
                    move,
                    spec,
                    "reject",
                    version,
                    actor=actor,
                    reason="stale: champion moved",
                    metrics=metrics,
                    tags={TAG_REJECTED: stale, **_decision_tags(decision)},
                    gate_reasons=(stale, *decision.reasons),
                    decision=decision,
                    context=context,
                )
            outcome = _recorded_move(
                cur,
                move,
                spec,
                "promote",
                version,
                actor=actor,
                reason=reason,
                metrics=metrics,
                tags={TAG_PROMOTED_BY: actor, TAG_PROMOTION_REASON: reason, **_decision_tags(decision)},
                gate_reasons=decision.reasons,
                decision=decision,
                context=context,
            )
    log.info("%s: promoted version %s (was %s)", name, version, move.old_champion)
    return outcome


def reject(
    spec: DatasetSpec,
    version: str,
    decision: GateDecision,
    *,
    actor: str = "promotion_gate",
    reason: str | None = None,
    url: str | None = None,
    context: DecisionContext | None = None,
) -> PromotionOutcome:
    """Record that the gate rejected ``version``: tag it ``promotion_rejected`` and add a history row."""
    if decision.promote:
        raise ValueError(f"the gate passed version {version}; call promote() instead of reject()")
    version = str(version)
    name = spec.registered_model_name
    why = reason or " ".join(decision.reasons) or "rejected by the promotion gate"
    with _champion_lock(spec, url) as (cur, move):
        client = move.client
        with _mlflow(f"rejecting {name} version {version}"):
            target = _require_version(client, spec, version, "reject")
            metrics = {**_version_metrics(client, spec, target), "primary_delta": decision.primary_delta}
            return _recorded_move(
                cur,
                move,
                spec,
                "reject",
                version,
                actor=actor,
                reason=why,
                metrics=metrics,
                tags={TAG_REJECTED: " ".join(decision.reasons) or why, **_decision_tags(decision)},
                gate_reasons=decision.reasons,
                decision=decision,
                context=context,
            )


def rollback(
    spec: DatasetSpec, target: str = "previous", *, actor: str, reason: str, url: str | None = None
) -> PromotionOutcome:
    """Move ``champion`` back: to the version before the latest move (``"previous"``) or to a version number.

    ``"previous"`` is the ``from_version`` of the latest promote/rollback in the history
    (the ``previous_champion`` alias when there is no history).
    """
    name = spec.registered_model_name
    with _champion_lock(spec, url) as (cur, move):
        client = move.client
        if target == "previous":
            cur.execute(db.load_sql("registry_last_move.sql"), {"model_name": name})
            last = cur.fetchone()
            if last is not None:
                if last[0] is None:
                    raise RollbackError(
                        f"cannot roll back {name}: its latest move ({last[2]} of version {last[1]}) "
                        "had no previous champion; name a version instead"
                    )
                wanted = str(last[0])
            elif move.old_previous is not None:
                wanted = move.old_previous
            else:
                raise RollbackError(f"cannot roll back {name}: no promotion history and no '{ALIAS_PREVIOUS}' alias")
        elif str(target).isdigit():
            wanted = str(int(target))
        else:
            raise RollbackError(f"rollback target must be 'previous' or a version number, got {target!r}")
        with _mlflow(f"rolling {name} back to version {wanted}"):
            version = _require_version(client, spec, wanted, "roll back to", RollbackError)
            if move.old_champion == wanted:
                raise RollbackError(f"cannot roll back {name} to version {wanted}: it is already the champion")
            outcome = _recorded_move(
                cur,
                move,
                spec,
                "rollback",
                wanted,
                actor=actor,
                reason=reason,
                metrics=_version_metrics(client, spec, version),
                tags={TAG_ROLLED_BACK_BY: actor, TAG_PROMOTION_REASON: f"rollback: {reason}"},
            )
    log.info("%s: rolled back to version %s (was %s)", name, wanted, move.old_champion)
    return outcome


def promotion_history(spec: DatasetSpec, *, limit: int = 100, url: str | None = None) -> list[dict[str, Any]]:
    """The model's history rows, newest first."""
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(db.load_sql("registry_history.sql"), {"model_name": spec.registered_model_name, "limit": limit})
        columns = [c.name for c in cur.description]
        return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
