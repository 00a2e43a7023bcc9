"""No Asset event is left without a run: ``NewestEventAssetManager`` against Airflow's own scheduler code.

Airflow 3.3's stock manager loses the newest event on PostgreSQL (upstream #56050): a Dag at
``max_active_runs`` that receives two events runs for the first only, and an event that arrives while the
scheduler is creating a run from the queue is dropped with it. Both scenarios run (in ``asset_queue_probe.py``,
a process of its own) against a real PostgreSQL metadata database, with the stock manager and with ours. The
stock runs show the loss: when an Airflow release no longer loses them, the workaround can go.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

PROBE = Path(__file__).with_name("asset_queue_probe.py")
OURS = "nightly_ml.tasks.asset_manager.NewestEventAssetManager"
STOCK = "airflow.assets.manager.AssetManager"
PROBE_DAG = """
from datetime import datetime, timezone

from airflow.sdk import Asset, dag, task


@dag(dag_id="probe", schedule=[Asset("probe")], max_active_runs=1, catchup=False,
     start_date=datetime(2026, 1, 1, tzinfo=timezone.utc))
def probe():
    @task
    def noop() -> None:
        pass

    noop()


probe()
"""


@pytest.fixture(scope="module")
def airflow_env(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A migrated Airflow metadata database on PostgreSQL with the ``probe`` Dag parsed and unpaused."""
    from nightly_ml.devtools.scratch import admin_execute, database_url

    if not Path(sys.executable).with_name("airflow").exists():
        pytest.skip("the `airflow` executable is not installed beside the interpreter: run `make venv`")
    root = tmp_path_factory.mktemp("asset_queue")
    (root / "dags").mkdir()
    (root / "dags" / "probe.py").write_text(PROBE_DAG)
    name = f"nightly_ml_asset_queue_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin_execute(pg_admin_url, f'CREATE DATABASE "{name}"')
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "PYTEST_"))},
        "AIRFLOW_HOME": str(root / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(pg_admin_url, name).replace(
            "postgresql://", "postgresql+psycopg2://", 1
        ),
    }
    airflow = str(Path(sys.executable).with_name("airflow"))
    try:
        for command in (["db", "migrate"], ["dags", "reserialize"], ["dags", "unpause", "probe"]):
            done = subprocess.run([airflow, *command], env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"airflow {' '.join(command)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        yield env
    finally:
        admin_execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def probe(env: dict[str, str], scenario: str, manager: str) -> dict[str, Any]:
    """Run one scenario on an empty event history; what each run consumed, and what none did."""
    import psycopg2

    conn = psycopg2.connect(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", ""))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM dag_run WHERE dag_id = 'probe'")
            cur.execute("DELETE FROM asset_event")
            cur.execute("DELETE FROM asset_dag_run_queue")
    finally:
        conn.close()
    done = subprocess.run(
        [sys.executable, str(PROBE), scenario],
        env={**env, "AIRFLOW__CORE__ASSET_MANAGER_CLASS": manager},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_events_that_arrive_while_the_dag_is_at_max_active_runs_all_reach_the_next_run(airflow_env) -> None:
    result = probe(airflow_env, "at_cap", OURS)
    assert result == {"runs": [[1], [2, 3]], "unconsumed": [], "queued": 0}


def test_an_event_registered_while_the_scheduler_creates_a_run_gets_a_run_of_its_own(airflow_env) -> None:
    result = probe(airflow_env, "while_locked", OURS)
    assert result == {"runs": [[1], [2]], "unconsumed": [], "queued": 0}


@pytest.mark.parametrize("scenario", ["at_cap", "while_locked"])
def test_the_stock_asset_manager_of_this_airflow_loses_the_newest_event(airflow_env, scenario: str) -> None:
    """Why the workaround exists; when this fails, the pinned Airflow has the fix and the workaround can go."""
    result = probe(airflow_env, scenario, STOCK)
    assert result["unconsumed"] == [3 if scenario == "at_cap" else 2] and result["queued"] == 0, result
