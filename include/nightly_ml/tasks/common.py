"""Small helpers the DAG files share: default args, Assets, and which interval a run is about.

Light on purpose: DAG files import this at parse time, so nothing heavy comes in here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable, Param

from nightly_ml.alerts import on_task_failure
from nightly_ml.config import settings
from nightly_ml.intervals import Interval, check_in_range, parse_utc
from nightly_ml.spec import DatasetSpec


def dag_start(spec: DatasetSpec) -> Any:
    """Every DAG of a dataset starts at its spec's first interval (local midnight of ``start_date``)."""
    import pendulum

    return pendulum.datetime(spec.start_date.year, spec.start_date.month, spec.start_date.day, tz=spec.timezone)


def ingest_timetable(spec: DatasetSpec) -> CronDataIntervalTimetable:
    """The spec's cron or preset in its own time zone: local days (or hours), DST-correct."""
    return CronDataIntervalTimetable(spec.schedule, timezone=spec.timezone)


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


DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
INSTANT_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?$"
)


def interval_params(verb: str) -> dict[str, Param]:
    """The form of a DAG run by hand: a day, or an interval, or nothing for the obvious default.

    The patterns make Airflow refuse a malformed value when the run is created, naming the field.
    """
    return {
        "day": Param(
            None,
            type=["null", "string"],
            pattern=DAY_PATTERN,
            title="Day",
            description=f"A day (YYYY-MM-DD, in the dataset's time zone) to {verb}. Empty: the run's own "
            "interval, or for a manual run the latest complete one.",
        ),
        "interval_start": Param(
            None,
            type=["null", "string"],
            pattern=INSTANT_PATTERN,
            title="Interval start",
            description=f"Or: start of an interval to {verb} (ISO 8601; without an offset, UTC).",
        ),
        "interval_end": Param(
            None,
            type=["null", "string"],
            pattern=INSTANT_PATTERN,
            title="Interval end",
            description="End of that interval (exclusive); needed with the start.",
        ),
    }


def warehouse_asset(dataset: str) -> Asset:
    """Updated by ingest__<dataset> after an interval is merged (extra: the interval)."""
    return Asset(name=f"warehouse_{dataset}", uri=f"x-nightly-ml://warehouse/{dataset}", group="warehouse")


def predictions_asset(dataset: str) -> Asset:
    """Updated by score__<dataset> after an interval is scored, or skipped for want of a champion."""
    return Asset(name=f"predictions_{dataset}", uri=f"x-nightly-ml://predictions/{dataset}", group="predictions")


def resolve_intervals(context: Any, spec: DatasetSpec | None = None) -> list[Interval]:
    """The data intervals a run is about, by precedence:

    1. ``interval_start``/``interval_end`` in the run's conf or params (manual runs, tests);
    2. the intervals carried by the Asset events that triggered the run (one per event);
    3. the run's own data interval (scheduled runs and backfills).

    With ``spec``, an interval the spec does not cover (before its ``start_date``, or not over
    yet) is refused with :class:`~nightly_ml.errors.IntervalOutOfRange`, which says what to change.
    """
    found = _intervals_of(context, spec)
    if spec is not None:
        for start, end in found:
            check_in_range(spec, start, end)
    return found


def _intervals_of(context: Any, spec: DatasetSpec | None) -> list[Interval]:
    params = context.get("params") or {}
    dag_run = context.get("dag_run")
    conf = (getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}
    day = conf.get("day") or params.get("day")
    if day and spec is not None:
        return [day_interval(spec, str(day))]
    start = conf.get("interval_start") or params.get("interval_start")
    end = conf.get("interval_end") or params.get("interval_end")
    if start and end:
        return [(parse_utc(start), parse_utc(end))]
    if bool(start) != bool(end):
        raise ValueError("give both interval_start and interval_end, or neither (or a day)")

    found: list[Interval] = []
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
    if start is not None and end is not None and start != end:
        return [(parse_utc(start), parse_utc(end))]
    if spec is not None:
        return [latest_complete_interval(spec)]
    raise ValueError(
        "cannot tell which data interval this run is about: give a day, or interval_start and interval_end, "
        "in the run's form, or trigger it from its Asset"
    )


def day_interval(spec: DatasetSpec, day: str) -> Interval:
    """The spec's interval that starts on ``day`` (local midnight in the spec's zone), DST-correct."""
    from datetime import date

    import pendulum
    from airflow.timetables.interval import CronDataIntervalTimetable as CoreTimetable

    local_day = date.fromisoformat(day)
    timetable = CoreTimetable(spec.schedule, timezone=pendulum.timezone(spec.timezone))
    start = pendulum.datetime(local_day.year, local_day.month, local_day.day, tz=spec.timezone)
    interval = timetable.infer_manual_data_interval(run_after=timetable._get_next(start))
    return parse_utc(interval.start), parse_utc(interval.end)


def latest_complete_interval(spec: DatasetSpec, now: datetime | None = None) -> Interval:
    """The newest interval of the spec's schedule that is over (what a manual run without a date means)."""
    import pendulum
    from airflow.timetables.interval import CronDataIntervalTimetable as CoreTimetable

    timetable = CoreTimetable(spec.schedule, timezone=pendulum.timezone(spec.timezone))
    moment = pendulum.instance(now) if now is not None else pendulum.now("UTC")
    interval = timetable.infer_manual_data_interval(run_after=moment)
    return parse_utc(interval.start), parse_utc(interval.end)


def resolve_interval(context: Any, spec: DatasetSpec | None = None) -> Interval:
    """The single interval of a run (the newest one, when Asset events carried several)."""
    return resolve_intervals(context, spec)[-1]
