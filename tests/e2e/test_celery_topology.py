"""The Celery topology of docker-compose.yml, started natively: two workers, Redis, PostgreSQL, S3 storage.

What compose describes, with the commands of ``nightly_ml.devtools.topology`` (the compose test checks they
are compose's): PostgreSQL for Airflow's metadata and the warehouse (scratch databases on the machine's
server), the Redis broker at 127.0.0.1:6379 (a database of its own, flushed), the API server, scheduler, DAG
processor and triggerer, and **two Celery workers**, each with its own local data folder and host name, the
storage root on an S3-compatible server (moto) and MLflow on its own server. The nightly chain of a light
demand spec is triggered through REST API v2 with a token, as a person or a scheduler-less client would.

While the first data task runs, its worker is killed (SIGKILL of its process group, the task with it):
Airflow notices the lost heartbeat, and the task's retry runs on the other worker. Afterwards the chain has
succeeded, the tasks ran on both workers, the warehouse holds the interval once, the reports open through
the API server from the bucket, and the workers' data folders hold nothing.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

WORKERS = ("worker-a", "worker-b")
DAGS = ("ingest__demand", "score__demand", "monitor__demand")
DATA_TASKS = ("extract", "stage", "validate", "merge")
START_TIMEOUT_S = 300.0
CHAIN_TIMEOUT_S = 420.0
ROWS_PER_NIGHT = 300  # light_demand_spec's rows_per_interval


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} — CI must have it")
    pytest.skip(reason)


def _redis_database() -> int:
    """A Redis database of the machine's server for this run (flushed before and after), or skip."""
    try:
        import redis
    except ImportError:
        _missing("the redis client is not installed (it comes with apache-airflow-providers-celery)")
    number = 1 + uuid.uuid4().int % 15
    try:
        client = redis.Redis(host="127.0.0.1", port=6379, db=number, socket_timeout=5)
        client.ping()
    except redis.RedisError as error:
        _missing(f"no Redis at 127.0.0.1:6379 ({error})")
    client.flushdb()
    return number


@dataclass
class Topology:
    stack: Any
    worker_dirs: dict[str, Path]
    bucket: str
    s3_env: dict[str, str]
    ingest_run: dict[str, Any] = field(default_factory=dict)
    score_runs: dict[str, Any] = field(default_factory=dict)
    monitor_runs: dict[str, Any] = field(default_factory=dict)
    # (task id, worker) of the task whose worker was killed
    killed: tuple[str, str] = ("", "")
    # every try of every task instance of the chain: (dag id, task id, try number, hostname, state)
    tries: list[tuple[str, str, int, str, str]] = field(default_factory=list)


def _tries(stack: Any, dag_id: str, run_id: str) -> list[tuple[str, str, int, str, str]]:
    found = []
    instances = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    for ti in instances:
        response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/tries")
        response.raise_for_status()
        for attempt in response.json()["task_instances"]:
            found.append((dag_id, ti["task_id"], attempt["try_number"], attempt["hostname"] or "", attempt["state"]))
    return found


def _kill_the_worker_of_the_first_data_task(topology: Topology, processes: dict[str, Any], run_id: str) -> None:
    """Wait until a data task of the ingest run is running on a worker, then SIGKILL that worker's group."""
    stack = topology.stack
    deadline = time.monotonic() + CHAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        response = stack.api("GET", f"/api/v2/dags/ingest__demand/dagRuns/{run_id}/taskInstances")
        response.raise_for_status()
        for ti in response.json()["task_instances"]:
            if ti["task_id"] in DATA_TASKS and ti["state"] == "running" and ti["hostname"] in WORKERS:
                os.killpg(processes[ti["hostname"]].pid, signal.SIGKILL)
                processes[ti["hostname"]].wait(timeout=30)
                topology.killed = (ti["task_id"], ti["hostname"])
                return
        time.sleep(0.2)
    pytest.fail(f"no data task of ingest run {run_id} was seen running on a worker:\n{stack.log_tail()}")


def _wait_until_workers_are_ready(stack: Any, deadline: float) -> None:
    while True:
        ready = [name for name in WORKERS if " ready." in stack.logs[name].read_text(errors="replace")]
        if len(ready) == len(WORKERS):
            return
        exited = [name for name in WORKERS if stack.processes[name].poll() is not None]
        if exited or time.monotonic() > deadline:
            pytest.fail(f"Celery workers not ready (exited: {exited}):\n{stack.log_tail()}")
        time.sleep(1)


@pytest.fixture(scope="module")
def topology(
    pg_admin_url: str,
    s3_server: dict[str, str],
    mlflow_server: str,
    tmp_path_factory: pytest.TempPathFactory,
    stack_tools: Any,
) -> Iterator[Topology]:
    import s3fs

    from nightly_ml import db
    from nightly_ml.devtools import topology as layout
    from nightly_ml.devtools.scratch import admin_execute, database_url, free_port, login_url

    if importlib_missing("airflow.providers.celery"):
        _missing("apache-airflow-providers-celery is not installed: `make venv` installs requirements.txt")
    redis_db = _redis_database()
    root = tmp_path_factory.mktemp("celery")
    home, spec_dir = root / "airflow", root / "specs"
    home.mkdir()
    today = datetime.now(UTC).date()
    stack_tools.light_demand_spec(spec_dir, today - timedelta(days=2), today)
    worker_dirs = {name: root / name / "data" for name in WORKERS}
    for folder in worker_dirs.values():
        folder.mkdir(parents=True)
    bucket = f"nightly-ml-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(
        skip_instance_cache=True,
        key=s3_server["AWS_ACCESS_KEY_ID"],
        secret=s3_server["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=s3_server["AWS_ENDPOINT_URL"],
    ).mkdir(bucket)

    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    databases = {"warehouse": f"nightly_ml_celery_{suffix}", "airflow": f"nightly_ml_celery_airflow_{suffix}"}
    for name in databases.values():
        admin_execute(pg_admin_url, f'CREATE DATABASE "{name}"')
    warehouse_url = database_url(pg_admin_url, databases["warehouse"])
    metadata_url = database_url(pg_admin_url, databases["airflow"])
    processes: dict[str, subprocess.Popen[bytes]] = {}
    # as in docker-compose.yml: the migrations as the owner, the Airflow services as a writer login
    worker_login, worker_password = f"nmt_celery_worker_{suffix}", secrets.token_hex(16)
    try:
        db.migrate(warehouse_url)
        with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
            cur.execute(
                db.compose("roles_login_user.sql", login=worker_login, group="nightly_ml_writer"),
                {"password": worker_password},
            )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW", "MLFLOW_", "PYTEST_", "NIGHTLY_ML_", "AWS_"))
        }
        env.update(
            {
                **layout.CELERY_SETTINGS,
                **s3_server,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": os.environ["AIRFLOW__CORE__DAGS_FOLDER"],
                "AIRFLOW__CORE__PLUGINS_FOLDER": os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"],
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "nightly_ml.config.hostname",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url.replace(
                    "postgresql://", "postgresql+psycopg2://", 1
                ),
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}",
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,
                # one task at a time per worker: a second task needs the other worker
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__WORKERS": "1",
                # six Airflow processes share the machine's PostgreSQL with the rest of the suite: small pools
                "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "4",
                # shared by every part, as compose shares them: tokens one part signs, the others accept
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
                # a killed worker's task is found out in seconds, not the default five minutes
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                "GX_ANALYTICS_ENABLED": "false",
                "MLFLOW_ENABLE_TELEMETRY": "false",
                "DO_NOT_TRACK": "1",
                "WAREHOUSE_URL": login_url(warehouse_url, worker_login, worker_password),
                "MLFLOW_TRACKING_URI": mlflow_server,
                "NIGHTLY_ML_SPEC_DIR": str(spec_dir),
                "NIGHTLY_ML_STORAGE_URL": f"s3://{bucket}/nightly",
                "NIGHTLY_ML_DATA_DIR": str(root / "api" / "data"),
                "NIGHTLY_ML_BASE_URL": url,
                "NIGHTLY_ML_REPORTS_URL": f"{url}/nightly-ml/reports",
                "NIGHTLY_ML_TASK_RETRIES": "2",
                "NIGHTLY_ML_RETRY_DELAY_SECONDS": "1",
            }
        )
        logs = {"migrate": root / "migrate.log"}
        logs.update({name: root / f"{name}.log" for name in (*layout.AIRFLOW_SERVICES, *WORKERS)})
        stack = stack_tools.LiveStack(
            url=url,
            username="admin",
            password="",
            home=home,
            data_dir=root / "api" / "data",
            spec_dir=spec_dir,
            warehouse_url=warehouse_url,
            logs=logs,
            env=env,
        )
        with logs["migrate"].open("wb") as out:
            migrated = subprocess.run(
                [stack_tools.AIRFLOW, "db", "migrate"],
                env=env,
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=600,
            )
        if migrated.returncode != 0:
            pytest.fail(f"`airflow db migrate` failed:\n{logs['migrate'].read_text()[-4000:]}")
        for service in layout.AIRFLOW_SERVICES:
            if service != layout.WORKER_SERVICE:
                processes[service] = stack_tools._popen(
                    layout.airflow_command(stack_tools.AIRFLOW, service), env, logs[service], root
                )
        for name, folder in worker_dirs.items():
            worker_env = {**env, "NIGHTLY_ML_DATA_DIR": str(folder), "NIGHTLY_ML_HOSTNAME": name}
            command = layout.airflow_command(stack_tools.AIRFLOW, layout.WORKER_SERVICE, worker_name=name)
            processes[name] = stack_tools._popen(command, worker_env, logs[name], root)
        stack.processes = processes
        deadline = time.monotonic() + START_TIMEOUT_S
        password_file = home / "simple_auth_manager_passwords.json.generated"
        while (waiting := stack_tools._stack_ready(stack, password_file, set(DAGS))) is not None:
            exited = [name for name, p in processes.items() if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                pytest.fail(
                    f"the Celery topology did not start (exited: {exited}; last: {waiting}):\n{stack.log_tail()}"
                )
            time.sleep(1)
        _wait_until_workers_are_ready(stack, deadline)

        result = Topology(stack, worker_dirs, bucket, s3_server)
        for dag_id in DAGS:
            stack.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        triggered = stack.trigger("ingest__demand")  # no conf: the Params' defaults, the latest complete day
        assert triggered.status_code == 200, triggered.text
        run_id = triggered.json()["dag_run_id"]
        _kill_the_worker_of_the_first_data_task(result, processes, run_id)
        deadline = time.monotonic() + CHAIN_TIMEOUT_S
        result.ingest_run = stack.wait_for_run("ingest__demand", run_id, deadline)
        if result.ingest_run["state"] == "success":
            start = {_loaded_interval(warehouse_url, run_id)}
            result.score_runs = stack_tools.wait_for_asset_runs(stack, "score__demand", start, deadline)
            result.monitor_runs = stack_tools.wait_for_asset_runs(stack, "monitor__demand", start, deadline)
        result.tries = _tries(stack, "ingest__demand", run_id)
        for dag_id, runs in (("score__demand", result.score_runs), ("monitor__demand", result.monitor_runs)):
            for run in runs.values():
                result.tries += _tries(stack, dag_id, run["dag_run_id"])
        yield result
    finally:
        while processes:
            stack_tools._stop_group(processes.popitem()[1])
        for name in databases.values():
            admin_execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_execute(pg_admin_url, f'DROP ROLE IF EXISTS "{worker_login}"')
        _flush_redis(redis_db)


def importlib_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def _flush_redis(number: int) -> None:
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=number, socket_timeout=5).flushdb()


def _loaded_interval(warehouse_url: str, run_id: str) -> str:
    """The interval (UTC start, ISO) a manual ingest run loaded: its Params chose it, not a logical date."""
    import psycopg2

    from nightly_ml.db import libpq_url

    conn = psycopg2.connect(libpq_url(warehouse_url))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT interval_start FROM ops.load_audit "
                "WHERE dataset = 'demand' AND run_id = %s AND status = 'merged'",
                (run_id,),
            )
            (start,) = cur.fetchone()
    finally:
        conn.close()
    return start.isoformat()


def test_the_chain_succeeds_through_the_rest_api(topology: Topology) -> None:
    assert topology.ingest_run["state"] == "success", topology.stack.failure_report(
        "ingest__demand", topology.ingest_run["dag_run_id"]
    )
    assert [run["state"] for run in topology.score_runs.values()] == ["success"]
    assert [run["state"] for run in topology.monitor_runs.values()] == ["success"]


def test_tasks_ran_on_both_workers(topology: Topology) -> None:
    by_worker: dict[str, list[str]] = {}
    for dag_id, task_id, attempt, hostname, state in topology.tries:
        by_worker.setdefault(hostname, []).append(f"{dag_id}.{task_id}#{attempt}={state}")
    print("tasks by worker:", by_worker)
    # '' is the scheduler's: skipped branches and empty tasks never reach a worker
    assert all(
        state in ("skipped", "success") for tries in by_worker.get("", []) for state in [tries.rsplit("=", 1)[1]]
    )
    assert set(by_worker) - {""} == set(WORKERS), by_worker


def test_the_killed_workers_task_is_retried_on_the_other_worker(topology: Topology) -> None:
    task_id, victim = topology.killed
    attempts = sorted(
        (a, host, state) for dag, task, a, host, state in topology.tries if task == task_id and dag == "ingest__demand"
    )
    assert attempts[0][1] == victim and attempts[0][2] != "success", attempts
    survivor = next(name for name in WORKERS if name != victim)
    assert attempts[-1][1:] == (survivor, "success"), attempts


def test_the_warehouse_holds_the_interval_once(topology: Topology) -> None:
    import psycopg2

    from nightly_ml.db import libpq_url

    with psycopg2.connect(libpq_url(topology.stack.warehouse_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT record_id) FROM warehouse.demand")
        rows, keys = cur.fetchone()
    conn.close()
    assert rows == keys == ROWS_PER_NIGHT


def test_the_reports_open_through_the_api_server(topology: Topology) -> None:
    stack = topology.stack
    index = stack.api("GET", "/nightly-ml/index.json")
    assert index.status_code == 200, index.text
    validation = [r for r in index.json() if r["dataset"] == "demand" and r["kind"] == "validation"]
    assert len(validation) == 1, index.json()
    page = stack.api("GET", f"/nightly-ml/reports/{validation[0]['path']}")
    assert page.status_code == 200 and "demand" in page.text
    assert stack.api("GET", "/nightly-ml/index.json", token=False).status_code == 401
    assert stack.api("GET", "/api/v2/dags", token=False).status_code == 401


def test_the_workers_keep_nothing_on_their_disks(topology: Topology) -> None:
    for name, folder in topology.worker_dirs.items():
        left = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert left == [], f"{name} left {left}"


def test_the_workers_ran_the_night_as_the_writer_group_not_the_owner(topology: Topology) -> None:
    """As in docker-compose.yml, the Celery workers log in as a login in nightly_ml_writer: the dataset's
    tables they created (rows, predictions, their partitions) belong to the group, and the chain succeeded
    (test_the_chain_succeeds_through_the_rest_api) with no more rights than that."""
    import psycopg2

    from nightly_ml.db import libpq_url

    with psycopg2.connect(libpq_url(topology.stack.warehouse_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class AS c JOIN pg_namespace AS n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'warehouse' AND c.relname LIKE 'demand%%' "
            "AND c.relkind IN ('r', 'p')"
        )
        owners = {owner for (owner,) in cur.fetchall()}
    conn.close()
    assert owners == {"nightly_ml_writer"}
