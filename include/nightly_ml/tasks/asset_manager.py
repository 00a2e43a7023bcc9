"""Airflow's asset manager, with a queue entry that keeps up with the newest event (upstream bug #56050).

``[core] asset_manager_class = nightly_ml.tasks.asset_manager.NewestEventAssetManager``, set wherever Airflow
runs (the Makefile, ``make up``, docker-compose.yml, the Helm values, the native topology).

Why: an event queues its Asset-scheduled Dags in ``asset_dag_run_queue``, one row per (Asset, Dag). On
PostgreSQL, Airflow 3.3 writes that row with ``ON CONFLICT DO NOTHING``, so a second event keeps the first
one's ``created_at``. The scheduler then creates the run "triggered" at that ``created_at``, consumes the
events up to it, and deletes the row: every later event that arrived meanwhile is left with no queue row and
no run, until some other event comes. That happens whenever a Dag is at ``max_active_runs`` (every DAG here
has 1) or the scheduler has not looped yet, and a backfill's last night was then never monitored
(tests/e2e/test_backfill.py, once in CI). Upstream's changes to this queue (#62501, then #70972, which
set the row's time from the event) are on Airflow's main branch only, and #56050 itself is still open.

This manager writes the row with the event's own timestamp and, on conflict, moves it forward to the newer
event (the same upsert as #62501), so the run the scheduler creates consumes every event that is
queued. Other databases keep Airflow's own path (its ORM merge already moves ``created_at`` forward).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.assets.manager import AssetManager


class NewestEventAssetManager(AssetManager):
    """Queues Asset-scheduled Dags with the newest event's time, so no queued event outlives its queue row."""

    @classmethod
    def _queue_dagruns(
        cls,
        *,
        asset_id: int,
        dags_to_queue: set[Any],
        partition_key: str | None,
        partition_date: datetime | None,
        event: Any,
        task_instance: Any,
        session: Any,
    ) -> None:
        from airflow.utils.sqlalchemy import get_dialect_name

        plain = {dag for dag in dags_to_queue if dag.timetable_partitioned is not True}
        if not plain or partition_key is not None or get_dialect_name(session) != "postgresql":
            return super()._queue_dagruns(
                asset_id=asset_id,
                dags_to_queue=dags_to_queue,
                partition_key=partition_key,
                partition_date=partition_date,
                event=event,
                task_instance=task_instance,
                session=session,
            )
        # partition-aware Dags keep Airflow's own queue; with no plain Dag left, Airflow stops there
        super()._queue_dagruns(
            asset_id=asset_id,
            dags_to_queue=dags_to_queue - plain,
            partition_key=partition_key,
            partition_date=partition_date,
            event=event,
            task_instance=task_instance,
            session=session,
        )
        queue_at_newest_event(asset_id, {dag.dag_id for dag in plain}, event.timestamp, session)


def queue_at_newest_event(asset_id: int, dag_ids: set[str], event_time: datetime, session: Any) -> None:
    """Queue ``dag_ids`` for the Asset at ``event_time``, or move their queue row forward to it.

    The row stays locked by a scheduler that is creating a run from it; the upsert waits for that run, and
    inserts a new row if the scheduler deleted the old one, so the event lands in the next run."""
    from airflow.models.asset import AssetDagRunQueue
    from sqlalchemy.dialects.postgresql import insert

    statement = insert(AssetDagRunQueue).values(
        [{"asset_id": asset_id, "target_dag_id": dag_id, "created_at": event_time} for dag_id in sorted(dag_ids)]
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[AssetDagRunQueue.asset_id, AssetDagRunQueue.target_dag_id],
            set_={"created_at": statement.excluded.created_at},
            where=AssetDagRunQueue.created_at < statement.excluded.created_at,
        )
    )
