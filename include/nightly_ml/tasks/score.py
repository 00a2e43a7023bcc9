"""Task steps of ``score__<dataset>``: score an interval with the champion of that moment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nightly_ml.spec import load_spec


def score(dataset: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Predictions for one interval from ``models:/<name>@champion``, replacing earlier ones."""
    from nightly_ml.modeling import scoring

    result = scoring.score_interval(load_spec(dataset), start, end)
    return {
        "interval_start": start.isoformat(),
        "interval_end": end.isoformat(),
        "rows": result.rows,
        "model_version": result.model_version,
        "skipped_reason": result.skipped_reason,
    }
