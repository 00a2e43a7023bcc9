"""Small helpers the DAG files share: default args, Assets, and which interval a run is about.

Light on purpose: DAG files import this at parse time, so nothing heavy comes in here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Param

from nightly_ml.alerts import on_task_failure
from nightly_ml.config import settings

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)


def default_args(timeout_minutes: int = 30) -> dict[str, Any]:
    config = settings()
    return {
        "owner": "ml-platform",
        "retries": config.task_retries,
        "retry_delay": timedelta(seconds=config.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=timeout_minutes),
        "on_failure_callback": on_task_failure,
    }


def interval_params(verb: str) -> dict[str, Param]:
    """The form fields of a DAG that can be run by hand for one past interval."""
    return {
        "interval_start": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description=f"Start of the interval to {verb} (ISO 8601, UTC). Empty: from the trigger.",
        ),
        "interval_end": Param(
            None, type=["null", "string"], format="date-time", description=f"End of the interval to {verb} (exclusive)."
        ),
    }


def warehouse_asset(dataset: str) -> Asset:
    """Updated by ingest__<dataset> after an interval is merged (extra: the interval)."""
    return Asset(name=f"warehouse_{dataset}", uri=f"x-nightly-ml://warehouse/{dataset}", group="warehouse")


def predictions_asset(dataset: str) -> Asset:
    """Updated by score__<dataset> after an interval is scored, or skipped for want of a champion."""
    return Asset(name=f"predictions_{dataset}", uri=f"x-nightly-ml://predictions/{dataset}", group="predictions")


def parse_utc(value: Any) -> datetime:
    """A plain UTC ``datetime`` (Airflow hands out pendulum objects, which pandas mishandles)."""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def interval_extra(start: datetime, end: datetime) -> dict[str, str]:
    return {"interval_start": start.isoformat(), "interval_end": end.isoformat()}


def intervals_extra(intervals: list[tuple[datetime, datetime]]) -> dict[str, Any]:
    """Asset-event extra for one or more intervals (the newest also as interval_start/interval_end)."""
    return {**interval_extra(*intervals[-1]), "intervals": [[s.isoformat(), e.isoformat()] for s, e in intervals]}


def resolve_intervals(context: Any) -> list[tuple[datetime, datetime]]:
    """The data intervals a run is about, by precedence:

    1. ``interval_start``/``interval_end`` in the run's conf or params (manual runs, tests);
    2. the intervals carried by the Asset events that triggered the run (one per event);
    3. the run's own data interval (scheduled runs and backfills).
    """
    params = context.get("params") or {}
    dag_run = context.get("dag_run")
    conf = (getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}
    start = conf.get("interval_start") or params.get("interval_start")
    end = conf.get("interval_end") or params.get("interval_end")
    if start and end:
        return [(parse_utc(start), parse_utc(end))]

    found: list[tuple[datetime, datetime]] = []
    events = context.get("triggering_asset_events") or {}
    for asset_events in events.values():
        for event in asset_events:
            extra = getattr(event, "extra", None) or {}
            pairs = extra.get("intervals") or (
                [[extra["interval_start"], extra["interval_end"]]] if "interval_start" in extra else []
            )
            for raw_start, raw_end in pairs:
                pair = (parse_utc(raw_start), parse_utc(raw_end))
                if pair not in found:
                    found.append(pair)
    if found:
        return sorted(found)

    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None or start == end:
        raise ValueError(
            "cannot tell which data interval this run is about: give interval_start and interval_end "
            "in the run's conf, or trigger it from its Asset"
        )
    return [(parse_utc(start), parse_utc(end))]


def resolve_interval(context: Any) -> tuple[datetime, datetime]:
    """The single interval of a run (the newest one, when Asset events carried several)."""
    return resolve_intervals(context)[-1]
