"""Data intervals: UTC instants, local-day partitions, and the range a spec covers.

Airflow hands out pendulum objects, which pandas and psycopg2 mishandle in places: every
interval inside the pipeline is a plain ``datetime`` in UTC. Partition folders and reports are
named by the interval's start in the spec's own time zone (a local day is ``ds=2013-03-10``
even though it starts at 05:00 UTC and lasts 23 hours).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nightly_ml.errors import IntervalOutOfRange
from nightly_ml.spec import DatasetSpec

Interval = tuple[datetime, datetime]


def parse_utc(value: Any) -> datetime:
    """A plain UTC ``datetime`` from an ISO string or any aware ``datetime`` (naive means UTC)."""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def require_utc(moment: datetime) -> datetime:
    """An aware moment in UTC; a naive one is refused (the pipeline never guesses a zone)."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: pass a timezone-aware (UTC) moment")
    return moment.astimezone(UTC)


def local(spec: DatasetSpec, moment: datetime) -> datetime:
    """``moment`` on the wall clock of the spec's time zone."""
    return moment.astimezone(spec.zone)


def partition_name(spec: DatasetSpec, start: datetime) -> str:
    """``ds=2026-01-05`` for intervals starting at local midnight, ``ds=2026-01-05T13:00`` for shorter ones."""
    wall = local(spec, start)
    if (wall.hour, wall.minute, wall.second) == (0, 0, 0):
        return f"ds={wall:%Y-%m-%d}"
    return f"ds={wall:%Y-%m-%dT%H:%M}"


def interval_extra(start: datetime, end: datetime) -> dict[str, str]:
    return {"interval_start": start.isoformat(), "interval_end": end.isoformat()}


def intervals_extra(intervals: list[Interval]) -> dict[str, Any]:
    """Asset-event extra for one or more intervals (the newest also as interval_start/interval_end)."""
    return {**interval_extra(*intervals[-1]), "intervals": [[s.isoformat(), e.isoformat()] for s, e in intervals]}


def check_in_range(spec: DatasetSpec, start: datetime, end: datetime, now: datetime | None = None) -> None:
    """Refuse an interval the spec does not cover, saying what to change."""
    if end <= start:
        raise IntervalOutOfRange(f"{spec.name}: interval [{start}, {end}) is empty or reversed")
    if start < spec.start:
        raise IntervalOutOfRange(
            f"{spec.name}: interval starting {local(spec, start):%Y-%m-%d %H:%M %Z} is before the spec's "
            f"start_date {spec.start_date} ({spec.timezone}); nothing would be loaded. Set start_date in "
            f"the spec to {local(spec, start):%Y-%m-%d} or earlier to include it."
        )
    current = now or datetime.now(UTC)
    if end > current:
        raise IntervalOutOfRange(
            f"{spec.name}: interval ending {local(spec, end):%Y-%m-%d %H:%M %Z} is not over yet "
            f"(now {local(spec, current):%Y-%m-%d %H:%M %Z}); run it after its end"
        )
