"""Intervals in the spec's time zone, the range a spec covers, and what a run is about."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest

from nightly_ml.errors import IntervalOutOfRange
from nightly_ml.intervals import check_in_range, partition_name
from nightly_ml.spec import DatasetSpec, load_spec
from nightly_ml.tasks.common import day_interval, latest_complete_interval, resolve_interval, resolve_intervals

NEW_YORK = "America/New_York"


@pytest.fixture
def local_spec() -> DatasetSpec:
    return load_spec("demand").model_copy(update={"timezone": NEW_YORK, "start_date": date(2013, 1, 1)})


def test_a_local_day_across_the_spring_change_has_23_hours(local_spec: DatasetSpec) -> None:
    start, end = day_interval(local_spec, "2013-03-10")
    assert start == datetime(2013, 3, 10, 5, tzinfo=UTC)
    assert end - start == timedelta(hours=23)
    assert partition_name(local_spec, start) == "ds=2013-03-10"


def test_a_local_day_across_the_autumn_change_has_25_hours(local_spec: DatasetSpec) -> None:
    start, end = day_interval(local_spec, "2013-11-03")
    assert end - start == timedelta(hours=25)
    assert partition_name(local_spec, end) == "ds=2013-11-04"


def test_hourly_partitions_are_named_by_local_hour(local_spec: DatasetSpec) -> None:
    assert partition_name(local_spec, datetime(2013, 7, 1, 17, tzinfo=UTC)) == "ds=2013-07-01T13:00"


def test_an_interval_before_the_start_date_is_refused_with_what_to_change(local_spec: DatasetSpec) -> None:
    with pytest.raises(IntervalOutOfRange, match=r"before the spec's start_date 2013-01-01.*Set start_date"):
        check_in_range(local_spec, datetime(2012, 12, 31, 5, tzinfo=UTC), datetime(2013, 1, 1, 5, tzinfo=UTC))


def test_an_interval_not_over_yet_is_refused(local_spec: DatasetSpec) -> None:
    now = datetime(2013, 6, 1, 12, tzinfo=UTC)
    with pytest.raises(IntervalOutOfRange, match="not over yet"):
        check_in_range(local_spec, datetime(2013, 6, 1, 4, tzinfo=UTC), datetime(2013, 6, 2, 4, tzinfo=UTC), now)
    check_in_range(local_spec, datetime(2013, 5, 31, 4, tzinfo=UTC), datetime(2013, 6, 1, 4, tzinfo=UTC), now)


def _context(**kwargs: object) -> dict:
    conf = kwargs.pop("conf", {})
    return {"params": kwargs.pop("params", {}), "dag_run": SimpleNamespace(conf=conf), **kwargs}


def test_a_run_without_dates_means_the_latest_complete_interval(local_spec: DatasetSpec) -> None:
    start, end = latest_complete_interval(local_spec, now=datetime(2013, 7, 4, 15, tzinfo=UTC))
    assert (start, end) == (datetime(2013, 7, 3, 4, tzinfo=UTC), datetime(2013, 7, 4, 4, tzinfo=UTC))
    # A manual run with no logical date has an empty data interval: the latest complete one is taken.
    moment = datetime(2020, 1, 1, tzinfo=UTC)
    context = _context(data_interval_start=moment, data_interval_end=moment)
    start, end = resolve_interval(context, local_spec)
    assert end <= datetime.now(UTC) < end + timedelta(days=1, hours=1)


def test_a_day_in_the_form_is_a_local_day(local_spec: DatasetSpec) -> None:
    assert resolve_intervals(_context(params={"day": "2013-03-10"}), local_spec) == [
        (datetime(2013, 3, 10, 5, tzinfo=UTC), datetime(2013, 3, 11, 4, tzinfo=UTC))
    ]


def test_an_interval_in_the_form_before_the_start_date_fails_loudly(local_spec: DatasetSpec) -> None:
    context = _context(conf={"interval_start": "2012-05-01T04:00:00+00:00", "interval_end": "2012-05-02T04:00:00Z"})
    with pytest.raises(IntervalOutOfRange, match="before the spec's start_date"):
        resolve_intervals(context, local_spec)


def test_half_an_interval_in_the_form_is_refused(local_spec: DatasetSpec) -> None:
    with pytest.raises(ValueError, match="both interval_start and interval_end"):
        resolve_intervals(_context(params={"interval_start": "2013-05-01T04:00:00Z"}), local_spec)
