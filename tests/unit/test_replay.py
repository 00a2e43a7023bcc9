"""The replay runner refuses to do nothing: out-of-range intervals and DAG runs that ran no task fail loudly."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest

from nightly_ml.devtools import replay
from nightly_ml.spec import load_spec


class _Run:
    def __init__(self, tasks: list[str]) -> None:
        self.run_id, self.state, self._tasks = "manual__x", "success", tasks

    def get_task_instances(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(task_id=t, state="success") for t in self._tasks]


class _Dag:
    def __init__(self, tasks: list[str]) -> None:
        self.start_date, self.tasks_run, self.confs = datetime(2026, 1, 1, tzinfo=UTC), tasks, []

    def test(self, logical_date: object = None, run_conf: dict | None = None) -> _Run:
        self.confs.append(run_conf)
        return _Run(self.tasks_run)


def _bag(**dags: _Dag) -> SimpleNamespace:
    return SimpleNamespace(dags=dags, dag_folder="dags/")


def test_a_dag_run_that_ran_no_task_is_an_error_not_a_success() -> None:
    bag = _bag(ingest__churn=_Dag([]))
    interval = (datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 2, tzinfo=UTC))
    with pytest.raises(replay.ReplayError, match=r"ran no task .*set start_date in the spec"):
        replay.run_dag(bag, "ingest__churn", interval)


def test_the_interval_travels_in_the_run_conf() -> None:
    dag = _Dag(["wait_for_input"])
    interval = (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 2, tzinfo=UTC))
    replay.run_dag(_bag(ingest__churn=dag), "ingest__churn", interval)
    assert dag.confs == [{"interval_start": "2026-02-01T00:00:00+00:00", "interval_end": "2026-02-02T00:00:00+00:00"}]


def test_a_missing_dag_names_the_spec_directory() -> None:
    with pytest.raises(replay.ReplayError, match="no DAG ingest__nope"):
        replay.run_dag(_bag(), "ingest__nope", None)


def test_an_interval_before_the_start_date_is_refused_before_any_run() -> None:
    dag = _Dag(["wait_for_input"])
    spec = load_spec("churn")
    before = (datetime(2025, 12, 30, tzinfo=UTC), datetime(2025, 12, 31, tzinfo=UTC))
    with pytest.raises(replay.ReplayError, match="before the spec's start_date 2026-01-01"):
        replay.play_interval(_bag(ingest__churn=dag), spec, before)
    assert dag.confs == []


def test_intervals_follow_the_spec_timetable_across_dst() -> None:
    spec = load_spec("demand").model_copy(update={"timezone": "Europe/Berlin", "start_date": date(2024, 1, 1)})
    first = datetime(2024, 3, 30, tzinfo=spec.zone)
    intervals = replay.intervals_between(spec, first, datetime(2024, 4, 1, tzinfo=spec.zone))
    assert [e - s for s, e in intervals] == [timedelta(hours=24), timedelta(hours=23), timedelta(hours=24)]
    hourly = spec.model_copy(update={"schedule": "@hourly"})
    assert len(replay.intervals_between(hourly, first, first + timedelta(hours=5))) == 6


def test_the_retrain_schedule_fires_in_the_spec_zone() -> None:
    spec = load_spec("demand").model_copy(update={"timezone": "America/New_York"})
    sunday = datetime(2026, 3, 1, 5, tzinfo=UTC)  # local midnight starting Sunday 2026-03-01
    saturday = sunday - timedelta(days=1)
    assert replay.retrain_scheduled(spec, saturday, sunday)  # @weekly fires at local Sunday 00:00
    assert not replay.retrain_scheduled(spec, sunday, sunday + timedelta(days=1))
