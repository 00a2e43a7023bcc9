"""Drift retraining waits for labels: a challenger judged on rows from before the shift judges nothing.

Labels arrive days after their rows. On the night a shift begins, a retrain would train on rows from before it
and be judged on a holdout from before it, so the gate's verdict says nothing about the new regime and the
challenger is rejected (or promoted) for the wrong reason. Drift therefore triggers retraining once the
labelled rows since the shift began fill the holdout: the gate then judges champion and challenger on the
new regime. Decay needs no wait (it is measured on labels, so they are there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nightly_ml.intervals import local
from nightly_ml.spec import DatasetSpec

AWAITING_LABELS = "awaiting_labels"  # the monitor's action while it waits
WAITS_FOR_LABELS = "retraining waits for labelled rows since the drift began"


@dataclass(frozen=True)
class LabelWait:
    """Whether a drift-triggered retrain may run tonight, and why (``reason``)."""

    began: datetime
    ready: bool
    gave_up: bool
    reason: str


def judge(
    spec: DatasetSpec, start: datetime, began: datetime, labelled_rows: int, newest_labelled: datetime | None
) -> LabelWait:
    """``began``: the first night of the drift; ``labelled_rows`` and ``newest_labelled``: the labelled rows
    whose event time is at or after it (by tonight). Ready once the holdout of a retrain (``holdout_days``
    before the end of the newest labelled day, as :func:`nightly_ml.modeling.frames.holdout_start_of` puts it)
    starts at or after ``began`` and holds ``drift.min_labelled_rows``; no longer waits once the drift is
    ``drift.performance_lookback_days`` old (labels that late are not coming in time to matter)."""
    holdout_days, needed = spec.training.holdout_days, spec.drift.min_labelled_rows
    since = f"{local(spec, began):%Y-%m-%d}"
    if newest_labelled is not None:
        newest_day_end = newest_labelled.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
            days=1
        )
        covered = newest_day_end - timedelta(days=holdout_days) >= began
    else:
        covered = False
    if covered and labelled_rows >= needed:
        return LabelWait(
            began,
            ready=True,
            gave_up=False,
            reason=f"labelled rows since the drift began on {since} fill the holdout ({labelled_rows:,} rows): the "
            "gate judges the retrained model on the new data",
        )
    waited = (start - began).days
    limit = spec.drift.performance_lookback_days
    if waited >= limit:
        return LabelWait(
            began,
            ready=True,
            gave_up=True,
            reason=f"the drift began on {since}, {waited} day(s) ago, and its labelled rows still do not fill the "
            f"{holdout_days}-day holdout ({labelled_rows:,} rows): retraining without waiting longer "
            f"(drift.performance_lookback_days: {limit})",
        )
    return LabelWait(
        began,
        ready=False,
        gave_up=False,
        reason=f"{WAITS_FOR_LABELS} on {since}: {labelled_rows:,} so far, and the gate needs a {holdout_days}-day "
        f"holdout of them with at least {needed:,} rows (else it judges the challenger on the old data); "
        f"at most until {local(spec, began + timedelta(days=limit)):%Y-%m-%d}",
    )
