"""Connection passwords never reach a task log: a real task (``dag.test()``) connects to the warehouse with a
password-carrying WAREHOUSE_URL (a temporary login role on the test server) and logs what a careless library
would; the log shows ``***`` where the passwords were (``nightly_ml.config.mask_connection_secrets``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from nightly_ml.devtools.scratch import admin_execute

pytestmark = pytest.mark.e2e

LOGIN = f"nmt_masked_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def password_url(warehouse_url: str, pg_admin_url: str) -> Iterator[tuple[str, str]]:
    """The test warehouse reached as a temporary login role with a password; the role is dropped after."""
    password = f"pw-{uuid.uuid4().hex}"
    admin_execute(pg_admin_url, f"CREATE ROLE \"{LOGIN}\" LOGIN PASSWORD '{password}' IN ROLE nightly_ml_reader")
    parts = urlsplit(warehouse_url)
    url = urlunsplit(parts._replace(netloc=f"{LOGIN}:{password}@{parts.netloc.rpartition('@')[2]}"))
    try:
        yield url, password
    finally:
        admin_execute(warehouse_url, f'DROP OWNED BY "{LOGIN}"')
        admin_execute(pg_admin_url, f'DROP ROLE IF EXISTS "{LOGIN}"')


PROBE_DAG = """
import logging
import os
from datetime import UTC, datetime

from airflow.sdk import DAG, task

with DAG("mask_probe", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC)) as dag:

    @task
    def connect() -> None:
        from nightly_ml import db
        from nightly_ml.config import settings

        with db.transaction() as conn, conn.cursor() as cur:
            cur.execute("SELECT session_user")
            (user,) = cur.fetchone()
        careless = logging.getLogger("careless.library")
        careless.warning("connected as %s to %s", user, settings().warehouse_url)
        careless.warning("mlflow login: %s", os.environ["MLFLOW_TRACKING_PASSWORD"])
        careless.warning("not a secret: %s", os.environ["MASK_PROBE_CONTROL"])

    connect()
"""


# dag.test() runs the task in this process and formats its log with whatever logging the process has; a
# worker's task log is written by the supervisor through Airflow's task logging, which redacts what
# the task registered with the secrets masker. So the probe runs in its own process with that logging.
RUNNER = """
import sys
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.log import configure_logging

configure_logging(output=sys.stdout, colored_console_log=False)
bag = DagBag(dag_folder=sys.argv[1])
assert bag.import_errors == {}, bag.import_errors
run = bag.dags["mask_probe"].test()
print("RUN STATE", run.state)
"""


def test_task_logs_show_stars_not_passwords(
    airflow_db,
    password_url: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, password = password_url
    mlflow_password = f"mlflow-{uuid.uuid4().hex}"
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_password)
    # dag.test() runs a DAG of a configured bundle: the project's DAGs folder, and this test's folder beside it
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "mask-probe", "classpath": local, "kwargs": {"path": str(tmp_path)}},
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    control = f"control-{uuid.uuid4().hex}"
    (tmp_path / "mask_probe.py").write_text(PROBE_DAG)
    env = {**os.environ, "WAREHOUSE_URL": url, "MASK_PROBE_CONTROL": control}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    text = result.stdout + result.stderr
    assert "RUN STATE success" in text, text[-3000:]
    assert f"connected as {LOGIN}" in text, "the task's log lines were not captured: the test would prove nothing"
    assert password not in text
    assert mlflow_password not in text
    assert f"{LOGIN}:***@" in text
    assert "mlflow login: ***" in text
    assert f"not a secret: {control}" in text, "the log is masked selectively, not wholesale"
