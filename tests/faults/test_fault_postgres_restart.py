"""Fault 2: PostgreSQL restarted (``pg_ctl restart -m fast``) in the middle of an ingest DAG run. A private
server (the ``pgserver`` wheel, in a temporary directory) is restarted once the merge transaction is observed
in flight; the merge task fails, its retry finds the server back, the run ends in success and the warehouse
holds the interval exactly once, as one clean run leaves it. Airflow's metadata DB (SQLite) is untouched."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from fault_support import (
    END,
    ROWS,
    START,
    FaultWorld,
    comparable,
    dag_of,
    query,
    wait_until,
    warehouse_state,
    write_input,
)

from nightly_ml.devtools.scratch import database_url, environment_set

pytestmark = pytest.mark.faults


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Any]:
    import logging

    import pgserver

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    server = pgserver.get_server(tmp_path / "pgdata", cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()
        # After a restart the postmaster is not the one pgserver started: its cleanup left it running (seen as
        # orphan servers after a CI run). Stop whatever still runs on this data folder.
        if (Path(server.pgdata) / "postmaster.pid").exists():
            from pgserver._commands import pg_ctl

            with contextlib.suppress(Exception):
                pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)
        assert not (Path(server.pgdata) / "postmaster.pid").exists(), "the private server is still running"


def restart(server: Any, mode: str) -> None:
    from pgserver._commands import pg_ctl

    # a generous wait: on a loaded 2-core machine the shutdown checkpoint alone can pass pg_ctl's default 60 s
    pg_ctl(["-w", "-t", "300", "-m", mode, "restart"], pgdata=server.pgdata, user=server.system_user)


def private_warehouse(server: Any) -> str:
    from nightly_ml import db
    from nightly_ml.devtools.scratch import admin_execute

    admin = server.get_uri()
    admin_execute(admin, 'CREATE DATABASE "warehouse"')
    url = database_url(admin, "warehouse")
    db.migrate(url)
    return url


def run_with_restart(dataset: str, server: Any, url: str, mode: str) -> Any:
    """Run the ingest DAG of ``dataset`` on a private server restarted (``pg_ctl -m <mode>``) while the merge
    transaction waits before its commit (``WAREHOUSE_URL`` is ``url``); returns the DAG run."""
    write_input(dataset, ROWS)
    dag = dag_of("ingest.py", f"ingest__{dataset}")
    holder = psycopg2.connect(url)
    with holder.cursor() as cur:  # the merge transaction waits on this row before its commit
        cur.execute(
            "INSERT INTO ops.load_audit (dataset, interval_start, interval_end, run_id, status, rows_in, "
            "rows_merged, rows_quarantined) VALUES (%s, %s, %s, 'held by the test', 'merged', 0, 0, 0)",
            (dataset, START, START),
        )
    holder_pid = holder.get_backend_pid()
    restarted = threading.Event()
    failures: list[BaseException] = []

    def restart_mid_merge() -> None:
        try:
            wait_until(
                lambda: (
                    query(
                        url,
                        "SELECT 1 FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND pid <> %s "
                        "AND state = 'active' AND wait_event_type = 'Lock' AND query LIKE %s",
                        (holder_pid, "%INSERT INTO ops.load_audit%"),
                    )
                    or None
                ),
                "the merge transaction in flight",
            )
            restart(server, mode)
            restarted.set()
        except BaseException as error:  # noqa: BLE001 — reported by the test
            failures.append(error)

    thread = threading.Thread(target=restart_mid_merge, daemon=True)
    thread.start()
    try:
        run = dag.test(run_conf={"interval_start": START.isoformat(), "interval_end": END.isoformat()})
    finally:
        thread.join(timeout=360)
        holder.close()
    assert not failures, failures
    assert restarted.is_set()
    return run


def tries_of(run: Any) -> dict[str, tuple[str, int]]:
    return {ti.task_id: (str(ti.state), ti.try_number) for ti in run.get_task_instances()}


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # retries that outlast a restart of a small server
    monkeypatch.setenv("NIGHTLY_ML_TASK_RETRIES", "3")
    monkeypatch.setenv("NIGHTLY_ML_RETRY_DELAY_SECONDS", "2")


def test_postgres_restarted_during_a_run_recovers_through_retries(
    fault_world: FaultWorld,
    clean_run: dict,
    airflow_db: Path,
    private_postgres: Any,
    quick_retries: None,
) -> None:
    dataset, url = "faults_restart", private_warehouse(private_postgres)
    with environment_set("WAREHOUSE_URL", url):
        run = run_with_restart(dataset, private_postgres, url, "fast")
        tries = tries_of(run)
        assert str(run.state) == "success", tries
        assert tries["merge"][1] >= 2, f"the merge was not hit by the restart: {tries}"
        state = warehouse_state(url, dataset)
    assert comparable(state) == comparable(clean_run)
    [(status, run_id, *_)] = state["audit"]
    assert status == "merged" and run_id == run.run_id


def test_a_crash_that_empties_staging_fails_the_merge_instead_of_merging_nothing(
    fault_world: FaultWorld,
    clean_run: dict,
    airflow_db: Path,
    private_postgres: Any,
    quick_retries: None,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """``-m immediate`` is a crash: on recovery PostgreSQL empties unlogged tables, the staging tables among
    them. The merge's retry must not replace the interval with nothing: it fails, saying so, and a new run
    of the interval (what clearing the run from ``stage`` does) loads it as one clean run would."""
    dataset, url = "faults_crash", private_warehouse(private_postgres)
    with environment_set("WAREHOUSE_URL", url):
        run = run_with_restart(dataset, private_postgres, url, "immediate")
        tries = tries_of(run)
        assert str(run.state) == "failed" and tries["merge"][0] == "failed", tries
        logged = capfd.readouterr()
        assert "were lost (a database crash empties unlogged staging tables)" in logged.out + logged.err
        lost = warehouse_state(url, dataset)
        assert lost["rows"] == 0 and not [a for a in lost["audit"] if a[0] == "merged"], lost

        again = dag_of("ingest.py", f"ingest__{dataset}").test(
            run_conf={"interval_start": START.isoformat(), "interval_end": END.isoformat()}
        )
        assert str(again.state) == "success", tries_of(again)
        state = warehouse_state(url, dataset)
    assert comparable(state) == comparable(clean_run)
