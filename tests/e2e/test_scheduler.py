"""The real scheduler: REST API v2 triggers of ``ingest__demand`` and the Asset chain they start.

The stack is what ``make up`` runs (``airflow standalone`` and an MLflow server, see the
``live_stack`` fixture), on free 127.0.0.1 ports with scratch databases and a light demand spec
whose ``start_date`` is eight days back. Ingest, score and monitor are unpaused; retrain stays paused,
so the bootstrap retraining that the first monitor run asks for is queued, not run.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

pytestmark = pytest.mark.e2e


def test_the_api_refuses_a_request_without_a_token(live_stack) -> None:
    assert live_stack.api("GET", "/api/v2/dags", token=False).status_code == 401
    assert trigger_without_token(live_stack).status_code == 401
    assert live_stack.api("GET", "/api/v2/dags").status_code == 200


def test_the_api_server_listens_on_127_0_0_1_only(live_stack) -> None:
    import psutil

    port = int(live_stack.url.rsplit(":", 1)[1])
    listening = {
        conn.laddr.ip
        for conn in psutil.net_connections("inet")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    }
    assert listening == {"127.0.0.1"}


def trigger_without_token(stack):
    return stack.api("POST", "/api/v2/dags/ingest__demand/dagRuns", token=False, json={"logical_date": None})


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"day": "yesterday"}, "day"),
        ({"interval_start": "last monday", "interval_end": "2026-01-02"}, "interval_start"),
    ],
)
def test_invalid_params_are_refused_when_the_run_is_created(live_stack, conf: dict, field: str) -> None:
    response = live_stack.trigger("ingest__demand", conf)
    assert response.status_code in (400, 422), response.text
    assert field in response.json()["detail"], response.text
    # and no run was created with it (the scheduler may add its own scheduled run meanwhile)
    listed = live_stack.api("GET", "/api/v2/dags/ingest__demand/dagRuns", params={"limit": 100})
    listed.raise_for_status()
    assert [run["dag_run_id"] for run in listed.json()["dag_runs"] if run["conf"] == conf] == []


def test_manual_runs_load_their_intervals_and_the_asset_chain_scores_and_monitors_them(
    live_stack, demand_chain
) -> None:
    chain = demand_chain
    for name, run in (("day", chain.day_run), ("latest", chain.latest_run)):
        if run["state"] != "success":
            pytest.fail(f"{name}: {live_stack.failure_report('ingest__demand', run['dag_run_id'])}")
        assert run["run_type"] == "manual"
        states = live_stack.task_states("ingest__demand", run["dag_run_id"])
        assert set(states) >= {"wait_for_input", "extract", "stage", "validate", "merge", "archive"}
        assert set(states.values()) == {"success"}, f"{name}: {states}"

    # conf {"day": …}: exactly that day; no conf at all: the latest complete interval
    (day_start,) = chain.loaded["day"]
    assert day_start.date() == chain.day and day_start.utcoffset() == timedelta(0)
    (latest_start,) = chain.loaded["latest"]
    assert latest_start in [start for start, _ in chain.latest_candidates]
    assert latest_start > day_start

    starts = {day_start.isoformat(), latest_start.isoformat()}
    assert set(chain.score_runs) == starts
    assert set(chain.monitor_runs) == starts
    for dag_id, runs in (("score__demand", chain.score_runs), ("monitor__demand", chain.monitor_runs)):
        for start, run in runs.items():
            if run["state"] != "success":
                pytest.fail(live_stack.failure_report(dag_id, run["dag_run_id"]))
            assert run["run_type"] == "asset_triggered", (start, run)
            states = live_stack.task_states(dag_id, run["dag_run_id"])
            assert "failed" not in states.values() and "upstream_failed" not in states.values(), states
            assert "success" in states.values(), states
    for run in chain.monitor_runs.values():
        states = live_stack.task_states("monitor__demand", run["dag_run_id"])
        assert states["check"] == "success" and states["decide"] == "success" and states["done"] == "success"


def test_validate_tasks_fork_with_great_expectations_preloaded(live_stack, demand_chain) -> None:
    """The LocalExecutor's workers come from a forkserver that imported nightly_ml.tasks.preload: a validate
    task finds Great Expectations in memory instead of importing it (~6 s) itself."""
    logs = sorted((live_stack.home / "logs").rglob("task_id=validate/**/*.log"))
    assert logs, f"no validate task log under {live_stack.home / 'logs'}"
    for path in logs:
        text = path.read_text(errors="replace")
        assert "Great Expectations preloaded by the worker" in text, f"{path}:\n{text[-2000:]}"
        assert "Great Expectations imported by this task" not in text
