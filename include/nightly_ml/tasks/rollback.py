"""Task steps of ``rollback__<dataset>``: move ``champion`` back to the previous or a named version."""

from __future__ import annotations

from typing import Any

from nightly_ml import alerts
from nightly_ml.spec import load_spec


def rollback(dataset: str, target: str, *, actor: str, reason: str) -> dict[str, Any]:
    from nightly_ml.registry import access, aliases

    spec = load_spec(dataset)
    outcome = aliases.rollback(spec, target, actor=actor, reason=reason)
    alerts.send(
        alerts.model_moved(spec, "rollback", outcome.from_version, outcome.to_version, [reason], access.tracking_uri()),
        spec,
    )
    return {"action": outcome.action, "from_version": outcome.from_version, "to_version": outcome.to_version}
