"""Task steps of ``score__<dataset>``: score each interval with the champion of that interval's night.

Point in time: a run that carries several intervals (queued Asset events after a pause, a backfill, a
catch-up) handles each on its own, in order, as on its night. The version is the champion as of the
interval's end from the recorded moves (:func:`nightly_ml.registry.access.champion_at`), never a model
whose training window covers the interval; an interval that version already scored is left alone.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from nightly_ml.spec import DatasetSpec, load_spec

log = logging.getLogger(__name__)


def version_for(spec: DatasetSpec, start: datetime, end: datetime) -> tuple[str | None, str | None]:
    """``(version, None)``: the version that scores ``[start, end)``; or ``(None, why not)``."""
    from nightly_ml.registry import access

    version = access.champion_at(spec, end)
    interval = f"{spec.name} [{start.isoformat()}, {end.isoformat()})"
    if version is None:
        return None, (
            f"no champion on that night: registered model {spec.registered_model_name!r} had no version with "
            f"alias '{access.ALIAS_CHAMPION}' before {end.isoformat()}, so {interval} was not scored "
            "(a later champion would score data it may have been trained on); train and promote a model first"
        )
    info = access.version_info(spec, version)
    if info is not None and info.trained_on(start, end):
        window_start, window_end = info.reference_window or (start, end)
        return None, (
            f"version {version}, the champion of that night, was trained on [{window_start.isoformat()}, "
            f"{window_end.isoformat()}), which covers {interval}: not scored, so that no interval is judged "
            "by a model trained on it"
        )
    return version, None


def score(dataset: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Predictions for one interval from the champion of its night (reused when already there)."""
    from nightly_ml.modeling import scoring

    spec = load_spec(dataset)
    base = {"interval_start": start.isoformat(), "interval_end": end.isoformat()}
    version, reason = version_for(spec, start, end)
    if version is None:
        log.warning(reason)
        return {**base, "rows": 0, "model_version": None, "skipped_reason": reason, "reused": False}
    result = scoring.score_version(spec, version, start, end)
    return {
        **base,
        "rows": result.rows,
        "model_version": result.model_version,
        "skipped_reason": result.skipped_reason,
        "reused": result.reused,
    }


def score_intervals(dataset: str, intervals: list[tuple[datetime, datetime]]) -> list[dict[str, Any]]:
    """Score each interval on its own, oldest first."""
    return [score(dataset, start, end) for start, end in sorted(intervals)]
