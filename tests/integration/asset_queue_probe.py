"""Run by ``test_asset_queue.py`` in its own process, against a migrated PostgreSQL metadata database: Asset
events for the ``probe`` Dag (``max_active_runs=1``) and Airflow's own scheduler code creating runs from them,
with the asset manager ``AIRFLOW__CORE__ASSET_MANAGER_CLASS`` names. Prints, as JSON, the events each run
consumed and the events no run consumed.

Scenarios (argv[1]):

- ``at_cap``: event 1 starts a run; events 2 and 3 arrive while it is active; it finishes; the scheduler loops.
- ``while_locked``: event 1 is queued; while a scheduler loop is creating its run (the queue row locked
  and not yet deleted), event 2 is registered; then the scheduler loops again.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

DAG_ID = "probe"
ASSET = "probe"


def main(scenario: str) -> None:
    from airflow.executors.executor_loader import ExecutorLoader
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    runner = SchedulerJobRunner(job=Job(), executors=ExecutorLoader.init_executors())
    if scenario == "at_cap":
        emit(1)
        schedule(runner)
        emit(2)
        emit(3)
        schedule(runner)  # at max_active_runs: deferred
        finish_runs(runner)
        schedule(runner)
    elif scenario == "while_locked":
        emit(1)
        schedule(runner, before_dequeue=lambda: emit_concurrently(2))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    for _ in range(2):  # whatever is still queued gets its runs
        finish_runs(runner)
        schedule(runner)
    print(json.dumps(outcome()))


def emit(number: int) -> None:
    from airflow.assets.manager import resolve_asset_manager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.name == ASSET))
        resolve_asset_manager().register_asset_change(asset=asset, extra={"n": number}, session=session)


def emit_concurrently(number: int) -> None:
    """Register an event in a thread; return once it has committed or is waiting on a lock."""
    from airflow.utils.session import create_session
    from sqlalchemy import text

    worker = threading.Thread(target=emit, args=(number,))
    worker.start()
    while worker.is_alive():
        # not the scoped session: in this thread that is the scheduler's, which must not commit yet
        with create_session(scoped=False) as session:
            waiting = session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE '%asset_dag_run_queue%'"
                )
            )
        if waiting:
            break
        time.sleep(0.05)
    _threads.append(worker)


_threads: list[threading.Thread] = []


def schedule(runner: Any, before_dequeue: Any = None) -> None:
    """One scheduler loop's run creation (``SchedulerJobRunner._create_dagruns_for_dags``); ``before_dequeue``
    runs once inside it, after the run is created from the locked queue rows and before they are deleted."""
    from airflow.utils.session import create_session
    from airflow.utils.sqlalchemy import prohibit_commit
    from sqlalchemy import event

    pending = [before_dequeue] if before_dequeue is not None else []

    def on_execute(state: Any) -> None:
        if pending and state.is_delete and "asset_dag_run_queue" in str(state.statement):
            pending.pop()()

    with create_session() as session, prohibit_commit(session) as guard:
        event.listen(session, "do_orm_execute", on_execute)
        runner._create_dagruns_for_dags(guard, session)
        event.remove(session, "do_orm_execute", on_execute)
    assert not pending, "the scheduler created no run from the queue"
    while _threads:
        _threads.pop().join()


def finish_runs(runner: Any) -> None:
    """Mark the active runs successful, as the scheduler does when their tasks are done."""
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        active = (DagRunState.QUEUED, DagRunState.RUNNING)
        for run in session.scalars(select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.state.in_(active))):
            run.state = DagRunState.SUCCESS
        session.flush()
        runner._set_exceeds_max_active_runs(dag_model=session.get(DagModel, DAG_ID), session=session)


def outcome() -> dict[str, Any]:
    from airflow.models.asset import AssetDagRunQueue, AssetEvent
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import func, select
    from sqlalchemy.orm import selectinload

    with create_session() as session:
        runs = session.scalars(
            select(DagRun)
            .where(DagRun.dag_id == DAG_ID)
            .order_by(DagRun.run_after)
            .options(selectinload(DagRun.consumed_asset_events))
        ).all()
        consumed = [sorted(event.extra["n"] for event in run.consumed_asset_events) for run in runs]
        events = sorted(event.extra["n"] for event in session.scalars(select(AssetEvent)))
        queued = session.scalar(select(func.count()).select_from(AssetDagRunQueue))
    seen = {n for numbers in consumed for n in numbers}
    return {"runs": consumed, "unconsumed": [n for n in events if n not in seen], "queued": queued}


if __name__ == "__main__":
    main(sys.argv[1])
