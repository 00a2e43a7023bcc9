"""Fault 4: two runs of the same interval at once (a backfill and a manual run, or a zombie task and its
retry). Both processes start their ingest steps at the same moment; the warehouse must end as one clean
run leaves it, at least one run succeeds, a failed one fails with a worded reason, and the ops tables
describe one run."""

from __future__ import annotations

import pytest
from fault_support import (
    ROWS,
    Child,
    FaultWorld,
    archived_file,
    comparable,
    raw_input_places,
    sha256,
    warehouse_state,
    write_input,
)

pytestmark = pytest.mark.faults

RUNS = ("run_a", "run_b")


def test_two_runs_of_one_interval_at_once_leave_one_runs_result(fault_world: FaultWorld, clean_run: dict) -> None:
    dataset = "faults_race"
    _path, digest = write_input(dataset, ROWS)
    children = {run: Child("ingest", dataset, run, wait_for_go=True) for run in RUNS}
    for child in children.values():
        child.ready()
    for child in children.values():
        child.go()
    outcomes = {run: child.outcome() for run, child in children.items()}

    succeeded = [run for run, outcome in outcomes.items() if outcome["ok"]]
    assert succeeded, outcomes
    for outcome in outcomes.values():
        if not outcome["ok"]:
            # a clean failure names the other run and what to do, not a driver error from a vanished table
            assert outcome["error"].startswith("ConcurrentRun: "), outcome["error"]
            assert "another run" in outcome["error"], outcome["error"]

    state = warehouse_state(fault_world.warehouse_url, dataset)
    assert comparable(state) == comparable(clean_run)
    [(status, audit_run, *_)] = state["audit"]
    assert status == "merged" and audit_run in succeeded
    assert [run for run, *_ in state["quarantine"]] == [audit_run], "quarantine rows of another run remain"
    assert raw_input_places(dataset) == {"landing": [], "archive": ["part-0.csv"]}
    assert sha256(archived_file(dataset)) == digest
