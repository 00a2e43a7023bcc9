"""Replay intervals of a dataset through the real DAGs, in order, point-in-time (``make run``, ``make backtest``).

Each interval runs ``ingest`` → (warehouse Asset) → ``score`` → (predictions Asset) →
``monitor`` → and, when monitoring triggered it or the spec's retrain schedule fires in the
interval, ``retrain``. Each DAG runs with ``dag.test()``: the real DAG, its tasks and the
Airflow metadata DB in this one process; the Asset and trigger hand-offs that a scheduler would
do are done here, one interval at a time, so every interval is scored and judged by the
champion of its own night and never by a model trained on it.

Nothing here is silent: an interval outside the spec's range, or a DAG run that ran no task,
raises :class:`ReplayError` with what to change.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nightly_ml.intervals import Interval, check_in_range, local, parse_utc
from nightly_ml.spec import DatasetSpec

log = logging.getLogger(__name__)


_task_log: Path | None = None


def send_task_logs_to(path: Path | None) -> None:
    """Airflow's task logs go to ``path`` (None: to the terminal, as ``--verbose`` asks)."""
    global _task_log
    _task_log = path
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")


@contextlib.contextmanager
def _task_output() -> Generator[None, None, None]:
    """While a DAG runs in this process, its task logs (stdout and stderr) go to the task log file."""
    if _task_log is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with _task_log.open("ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


class ReplayError(RuntimeError):
    """A replay would do nothing, or something other than asked."""


@dataclass
class NightOutcome:
    dataset: str
    interval_start: datetime
    interval_end: datetime
    ingest: str
    score: str = "-"
    monitor: str = "-"
    retrain: str = "-"
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The interval as its owner reads it: the local day (or hour) it starts."""
        return (
            f"{self.interval_start:%Y-%m-%d}"
            if self.interval_start.hour == 0
            else f"{self.interval_start:%Y-%m-%d %H:%M}"
        )


def intervals_between(spec: DatasetSpec, first: datetime, last: datetime) -> list[Interval]:
    """The spec's intervals that start in [first, last], in order, from its own timetable (DST-correct)."""
    import pendulum
    from airflow.timetables.interval import CronDataIntervalTimetable

    timetable = CronDataIntervalTimetable(spec.schedule, timezone=pendulum.timezone(spec.timezone))
    found: list[Interval] = []
    cursor = pendulum.instance(first)
    while True:
        end = timetable._get_next(cursor)
        start = timetable._get_prev(end)
        if start < cursor:
            start, end = cursor, end
        if start > pendulum.instance(last):
            return found
        found.append((parse_utc(start), parse_utc(end)))
        cursor = pendulum.instance(end)


def retrain_scheduled(spec: DatasetSpec, start: datetime, end: datetime) -> bool:
    """Whether the spec's retrain schedule (``training.schedule``, in the spec's zone) fires in (start, end]."""
    if not spec.training.schedule:
        return False
    from croniter import croniter

    from nightly_ml.spec import CRON_PRESETS

    expression = CRON_PRESETS.get(spec.training.schedule, spec.training.schedule)
    fire = croniter(expression, local(spec, start)).get_next(datetime)
    return fire <= local(spec, end)


def _state(run: Any) -> str:
    return str(getattr(run, "state", "none"))


def _task_states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def run_dag(bag: Any, dag_id: str, interval: Interval | None, conf: dict[str, Any] | None = None) -> Any:
    """``dag.test()`` of one run; a run that ran no task is an error, never a silent success."""
    dag = bag.dags.get(dag_id)
    if dag is None:
        raise ReplayError(f"no DAG {dag_id} in {bag.dag_folder}: is its spec in the spec directory?")
    run_conf = dict(conf or {})
    if interval is not None:
        run_conf.setdefault("interval_start", interval[0].isoformat())
        run_conf.setdefault("interval_end", interval[1].isoformat())
    with _task_output():
        run = dag.test(logical_date=None, run_conf=run_conf)
    if not run.get_task_instances():
        raise ReplayError(
            f"{dag_id} run {run.run_id} ran no task (state {_state(run)}): its start_date "
            f"{dag.start_date} is probably after the interval {interval}; set start_date in the spec"
        )
    return run


def _queued_runs(dag_id: str) -> list[dict[str, Any]]:
    """Runs a TriggerDagRunOperator queued for ``dag_id``; removed here because this process runs them."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.state == DagRunState.QUEUED).all()
        confs = [dict(run.conf or {}) for run in runs]
        for run in runs:
            session.delete(run)
    return confs


def _promotion_of(run_id: str) -> str | None:
    """What the promotion gate did in a retrain run, from ops.promotion_history."""
    from nightly_ml import db

    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(db.load_sql("demo_promotion_of_run.sql"), {"actor": f"%/{run_id}"})
        row = cur.fetchone()
    if row is None:
        return None
    action, from_version, to_version, reasons = row
    verdict = {"promote": "promoted", "reject": "rejected"}.get(action, action)
    first = f" — {reasons[0]}" if reasons else ""
    return f"v{to_version} {verdict} (champion was {'v' + from_version if from_version else 'none'}){first}"


def _plan_reason(run: Any) -> str | None:
    """Why a retrain run's plan step let it train or not (its ``reason``), from the run's XCom."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        found = session.scalars(
            XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids="plan", key="return_value")
        ).first()
        planned = XComModel.deserialize_value(found) if found is not None else None
    return planned.get("reason") if isinstance(planned, dict) else None


def _retrain(bag: Any, spec: DatasetSpec, conf: dict[str, Any]) -> str:
    retrain = run_dag(bag, f"retrain__{spec.name}", None, conf)
    if _task_states(retrain).get("train") == "skipped":
        return f"skipped: {_plan_reason(retrain) or 'too few labelled rows yet'}"
    return _promotion_of(retrain.run_id) or _state(retrain)


def play_interval(bag: Any, spec: DatasetSpec, interval: Interval, *, scheduled_retrains: bool = True) -> NightOutcome:
    """One interval of one dataset through ingest → score → monitor → (retrain).

    ``scheduled_retrains=False`` leaves out the spec's calendar retrains (the demo tells the story
    of drift-triggered retraining; a backtest replays the whole policy).
    """
    start, end = interval
    try:
        check_in_range(spec, start, end)
    except ValueError as refused:
        raise ReplayError(str(refused)) from None
    dataset = spec.name
    outcome = NightOutcome(dataset, local(spec, start), local(spec, end), ingest="-")
    outcome.ingest = _state(run_dag(bag, f"ingest__{dataset}", interval))
    if outcome.ingest != "success":
        return outcome
    outcome.score = _state(run_dag(bag, f"score__{dataset}", interval))
    monitor = run_dag(bag, f"monitor__{dataset}", interval)
    states = _task_states(monitor)
    outcome.monitor = next(
        (t for t in ("trigger_retrain", "alert_drift", "no_action", "stop") if states.get(t) == "success"),
        _state(monitor),
    )
    confs = _queued_runs(f"retrain__{dataset}")
    if not confs and scheduled_retrains and retrain_scheduled(spec, start, end):
        confs = [{"reason": "scheduled retrain", "interval_start": start.isoformat(), "interval_end": end.isoformat()}]
    for conf in confs:
        outcome.retrain = _retrain(bag, spec, conf)
    return outcome


def load_dag_bag(dag_folder: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    with _task_output():
        bag = DagBag(dag_folder=dag_folder)
    if bag.import_errors:
        raise ReplayError(f"DAG import errors: {bag.import_errors}")
    return bag
