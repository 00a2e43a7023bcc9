"""Fault 1: the ingest process killed with SIGKILL in the middle of a load, then the interval retried.

The child runs the real ingest steps against a 10k-row batch and is killed while PostgreSQL is observed
inside its COPY (rows already copied, the source stalled mid-file) or inside its merge transaction (every
row of the interval written, the audit row waiting for a row lock the test holds, before the commit).
The retry, in this process, must leave exactly what one clean run leaves: no partial or duplicate rows,
no leftover staging table in the way, one audit row, the quarantine once, and the raw input kept until
the retry archived it.
"""

from __future__ import annotations

import psycopg2
import pytest
from fault_support import (
    ROWS,
    START,
    Child,
    FaultWorld,
    archived_file,
    comparable,
    query,
    raw_input_places,
    run_ingest,
    sha256,
    wait_until,
    warehouse_state,
    write_input,
)

pytestmark = pytest.mark.faults


def copy_in_progress(url: str) -> int | None:
    """The backend of a COPY into staging that has copied rows and now waits for the client's next bytes."""
    rows = query(
        url,
        "SELECT a.pid FROM pg_stat_progress_copy p JOIN pg_stat_activity a USING (pid) "
        "WHERE a.datname = current_database() AND p.command = 'COPY FROM' AND p.tuples_processed > 0 "
        "AND a.wait_event = 'ClientRead' AND a.query LIKE 'COPY \"staging\".%%'",
    )
    return rows[0][0] if rows else None


def merge_blocked_midway(url: str) -> int | None:
    """The backend of the merge transaction, its rows written, waiting on a row lock to record the outcome."""
    rows = query(
        url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
        "AND wait_event_type = 'Lock' AND query LIKE '%%INSERT INTO ops.load_audit%%'",
    )
    return rows[0][0] if rows else None


def backend_gone(url: str, pid: int) -> bool:
    return not query(url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))


def assert_untouched_before_retry(world: FaultWorld, dataset: str, digest: str) -> None:
    state = warehouse_state(world.warehouse_url, dataset)
    assert state["rows"] == 0 and state["rows_elsewhere"] == 0, "a killed load left rows in the warehouse"
    assert state["audit"] == [], "a killed load recorded an outcome"
    assert raw_input_places(dataset) == {"landing": ["part-0.csv"], "archive": []}
    assert sha256(world.landing / dataset / f"ds={START:%Y-%m-%d}" / "part-0.csv") == digest


def assert_like_one_clean_run(world: FaultWorld, dataset: str, digest: str, clean: dict) -> None:
    state = warehouse_state(world.warehouse_url, dataset)
    assert comparable(state) == comparable(clean)
    assert state["rows"] == state["distinct_keys"] and 0 < state["rows"] < ROWS
    assert state["staging_tables"] == [], "the retry left staging tables behind"
    [(status, run_id, *_)] = state["audit"]
    assert (status, run_id) == ("merged", "retry")
    assert [run for run, *_ in state["quarantine"]] == ["retry"], "quarantine rows of the killed run remain"
    assert raw_input_places(dataset) == {"landing": [], "archive": ["part-0.csv"]}
    assert sha256(archived_file(dataset)) == digest


def test_killed_inside_the_copy_then_retried(fault_world: FaultWorld, clean_run: dict) -> None:
    dataset, url = "faults_kill_copy", fault_world.warehouse_url
    path, digest = write_input(dataset, ROWS)
    child = Child("ingest-stalling-copy", dataset, "killed", str(path.stat().st_size // 2))
    pid = wait_until(lambda: copy_in_progress(url), "the child's COPY with rows copied")
    child.kill()
    wait_until(lambda: backend_gone(url, pid), "the killed client's backend ending")
    assert_untouched_before_retry(fault_world, dataset, digest)
    # the COPY's transaction created the staging table: it went with it
    assert warehouse_state(url, dataset)["staging_tables"] == []

    run_ingest(dataset, "retry")
    assert_like_one_clean_run(fault_world, dataset, digest, clean_run)


def test_killed_inside_the_merge_then_retried(fault_world: FaultWorld, clean_run: dict) -> None:
    dataset, url = "faults_kill_merge", fault_world.warehouse_url
    _path, digest = write_input(dataset, ROWS)
    # Hold the interval's audit row in an open transaction: the merge transaction writes every row of the
    # interval, then waits for it before it can record the outcome and commit.
    holder = psycopg2.connect(url)
    try:
        with holder.cursor() as cur:
            cur.execute(
                "INSERT INTO ops.load_audit (dataset, interval_start, interval_end, run_id, status, rows_in, "
                "rows_merged, rows_quarantined) VALUES (%s, %s, %s, 'held by the test', 'merged', 0, 0, 0)",
                (dataset, START, START),
            )
        child = Child("ingest", dataset, "killed")
        pid = wait_until(lambda: merge_blocked_midway(url), "the child's merge transaction waiting before its commit")
        child.kill()
    finally:
        holder.rollback()
        holder.close()
    # the orphaned backend finishes its statement, finds its client gone and rolls back
    wait_until(lambda: backend_gone(url, pid), "the killed client's backend ending")
    assert_untouched_before_retry(fault_world, dataset, digest)
    # the killed run's staging tables are still there (stage and validate had committed): the retry copes
    assert warehouse_state(url, dataset)["staging_tables"]

    run_ingest(dataset, "retry")
    assert_like_one_clean_run(fault_world, dataset, digest, clean_run)
