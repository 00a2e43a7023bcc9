"""The real ingest DAG, run through Airflow (``dag.test``) against the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nightly_ml import db

pytestmark = pytest.mark.e2e


def test_ingest_dag_runs_nights_and_updates_the_asset(dag_bag, warehouse_url: str) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    dag = dag_bag.dags["ingest__demand"]
    for night in (datetime(2026, 2, 2, tzinfo=UTC), datetime(2026, 2, 3, tzinfo=UTC)):
        run = dag.test(logical_date=night)
        assert run.state == "success"
        assert (run.data_interval_end - run.data_interval_start).days == 1

    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT interval_start, status, rows_merged, checksum FROM ops.load_audit "
            "WHERE dataset = 'demand' ORDER BY interval_start"
        )
        audit = cur.fetchall()
        cur.execute('SELECT count(*) FROM warehouse."demand"')
        rows = cur.fetchone()[0]
    assert [a[0].day for a in audit] == [1, 2]
    assert all(a[1] == "merged" and a[2] > 0 and a[3] for a in audit)
    assert rows == sum(a[2] for a in audit)

    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_dag_id == "ingest__demand").all()
        extras = sorted(e.extra["interval_start"] for e in events)
    assert extras == ["2026-02-01T00:00:00+00:00", "2026-02-02T00:00:00+00:00"]


def test_a_rejected_batch_fails_the_dag_without_updating_the_asset(dag_bag, warehouse_url: str, monkeypatch) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    from nightly_ml.etl import simulator

    original = simulator.generate_batch

    def without_a_column(*args, **kwargs):
        return original(*args, **kwargs).drop(columns=["zone"])

    monkeypatch.setattr(simulator, "generate_batch", without_a_column)
    run = dag_bag.dags["ingest__demand"].test(logical_date=datetime(2026, 2, 10, tzinfo=UTC))
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["validate"] == "failed"
    assert states["merge"] == "upstream_failed"
    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_dag_id == "ingest__demand").all()
    assert "2026-02-09T00:00:00+00:00" not in {e.extra["interval_start"] for e in events}
