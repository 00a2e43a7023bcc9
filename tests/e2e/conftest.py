"""End-to-end fixtures: one migrated Airflow metadata database per test session (SQLite, private home), and
the real local stack (scheduler, API server and UI, MLflow) for the scheduler and browser tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from nightly_ml.devtools.scratch import free_port

AIRFLOW = str(Path(sys.executable).parent / "airflow")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


# This module as it was imported: pytest imports every conftest.py under the name "conftest", so a test
# cannot import it by name; a test that starts a stack of its own gets its helpers from `stack_tools`.
_THIS_MODULE = sys.modules[__name__]


@pytest.fixture(scope="session")
def stack_tools() -> Any:
    """The helpers of this conftest (LiveStack, _popen, _stack_ready, wait_for_asset_runs, …)."""
    return _THIS_MODULE


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    home = Path(os.environ["AIRFLOW_HOME"])
    subprocess.run([AIRFLOW, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    yield home


@pytest.fixture(scope="session")
def dag_bag(airflow_db: Path, warehouse_url: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert bag.import_errors == {}
    return bag


# --------------------------------------------------------------------------- the real stack, natively
# What `make up` starts (nightly_ml.devtools.localstack's plan: an MLflow server, the mail catcher, `airflow db
# migrate`, then Airflow's parts: API server with the UI, scheduler, DAG processor, triggerer), on free 127.0.0.1
# ports, with a private AIRFLOW_HOME and data dir, scratch PostgreSQL databases for the warehouse and
# Airflow's metadata, and a light copy of the demand spec starting a few days ago (so that "the latest
# complete interval" is in range). Shared by the scheduler test and the browser test; stopped (process
# groups) and its databases dropped at the end of the session.

STACK_START_TIMEOUT_S = 300.0
STACK_STOP_GRACE_S = 20.0
STACK_DAGS = ("ingest__demand", "score__demand", "monitor__demand")
# Extra light specs the stack can also serve, asked for by a module with
# ``pytestmark = pytest.mark.live_stack_specs("<name>", ...)`` (all of the session's asks are served, since one
# stack serves the whole session). Their DAGs stay paused: the test unpauses what it needs.
STACK_SPEC_MARK = "live_stack_specs"


@dataclass
class LiveStack:
    url: str
    username: str
    password: str
    home: Path
    data_dir: Path
    spec_dir: Path
    warehouse_url: str
    logs: dict[str, Path]
    # the MLflow UI and the mail catcher's web page; the environment the stack's processes run with
    mlflow_url: str = ""
    mail_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    # the process (group leader) of each part the fixture started, by name
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _token: str | None = None

    def token(self) -> str:
        if self._token is None:
            response = httpx.post(
                f"{self.url}/auth/token", json={"username": self.username, "password": self.password}, timeout=30
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, *, token: bool = True, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if token:
            headers["Authorization"] = f"Bearer {self.token()}"
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    # The helpers below, for tests that get the stack as a fixture.
    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> httpx.Response:
        return trigger(self, dag_id, conf)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return task_states(self, dag_id, run_id)

    def failure_report(self, dag_id: str, run_id: str) -> str:
        return failure_report(self, dag_id, run_id)

    def wait_for_run(self, dag_id: str, run_id: str, deadline: float) -> dict[str, Any]:
        return wait_for_run(self, dag_id, run_id, deadline)

    def covered_intervals(self, dag_id: str, run_id: str) -> set[str]:
        return covered_intervals(self, dag_id, run_id)

    def listening(self) -> dict[int, set[str]]:
        """The TCP ports the stack's processes (and their children) listen on, with the addresses."""
        import psutil

        pids: set[int] = set()
        for process in self.processes.values():
            try:
                leader = psutil.Process(process.pid)
                pids |= {leader.pid, *(child.pid for child in leader.children(recursive=True))}
            except psutil.NoSuchProcess:
                continue
        found: dict[int, set[str]] = {}
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
                found.setdefault(conn.laddr.port, set()).add(conn.laddr.ip)
        return found

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name} ({path}):\n{text[-chars:]}")
        return "\n".join(parts)


def first_demand_day(today: date) -> date:
    """The light demand spec's start: yesterday's weekday one week earlier. The stack ingests that day and
    yesterday, and the bootstrap trains on the first and holds out yesterday; simulated demand depends on
    the weekday (business zones empty out at weekends, weekdays differ by a few percent), so a model of a
    Friday lost to the naive baseline on a Saturday (seen on a Sunday's run) and no champion came to score
    and monitor with. The same weekday leaves the holdout nothing the training day did not show."""
    return today - timedelta(days=8)


def light_demand_spec(spec_dir: Path, start: date, today: date) -> Path:
    """The demand spec, made small: few rows a night, one model candidate, a start a few days back; the
    training window reaches back to ``start`` from ``today``."""
    raw = yaml.safe_load((PROJECT_ROOT / "include" / "specs" / "demand.yaml").read_text())
    raw["start_date"] = start.isoformat()
    raw["catchup"] = False
    raw["source"]["rows_per_interval"] = 300
    raw["validation"]["min_rows"] = 50
    raw["drift"]["min_labelled_rows"] = 50
    raw["training"].update(
        window_days=max(2, (today - start).days),
        holdout_days=1,
        min_rows=100,
        cv_folds=2,
        candidates=[{"name": "ridge", "estimator": "ridge", "search": {"alpha": [1.0]}}],
    )
    spec_dir.mkdir(parents=True, exist_ok=True)
    path = spec_dir / "demand.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# A light copy of the real hourly airport-weather spec (include/specs/examples): its files exported for a few
# local days of 2013 around the spring DST change (2013-03-10 has 23 hours), its start_date the first of them.
NYC_TEMPERATURE = "nyc_airport_temperature"
NYC_FIRST_DAY, NYC_LAST_DAY = date(2013, 3, 8), date(2013, 3, 12)


def light_nyc_temperature_spec(spec_dir: Path, data_dir: Path) -> Path:
    """The nyc_airport_temperature example spec, made light (one ridge, a 2-day window, no weekly retrain),
    with its files for NYC_FIRST_DAY..NYC_LAST_DAY in ``<data_dir>/landing/public/<name>/ds=YYYY-MM-DD/``."""
    from nightly_ml.devtools import public_data

    landing = data_dir / "landing" / "public" / NYC_TEMPERATURE
    public_data.export_days(NYC_TEMPERATURE, landing, NYC_FIRST_DAY, NYC_LAST_DAY)
    raw = yaml.safe_load((PROJECT_ROOT / "include" / "specs" / "examples" / f"{NYC_TEMPERATURE}.yaml").read_text())
    raw["start_date"] = NYC_FIRST_DAY.isoformat()
    raw["source"]["path"] = str(landing)
    raw["validation"]["min_rows"] = 20
    # a 2-day window: the older day trains (72 rows), the newer one is the holdout
    raw["training"].update(window_days=2, holdout_days=1, min_rows=60, cv_folds=2, schedule=None)
    raw["training"]["candidates"] = [{"name": "ridge", "estimator": "ridge", "search": {"alpha": [1.0]}}]
    spec_dir.mkdir(parents=True, exist_ok=True)
    path = spec_dir / f"{NYC_TEMPERATURE}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


STACK_SPECS: dict[str, Callable[[Path, Path], Path]] = {NYC_TEMPERATURE: light_nyc_temperature_spec}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{STACK_SPEC_MARK}(*names): extra light specs the live_stack serves ({', '.join(STACK_SPECS)})"
    )


@pytest.fixture(scope="session")
def live_stack_specs(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The extra specs any collected test asks the live stack for (by the ``live_stack_specs`` mark)."""
    names: set[str] = set()
    for item in request.session.items:
        for mark in item.iter_markers(STACK_SPEC_MARK):
            names.update(mark.args)
    unknown = names - set(STACK_SPECS)
    if unknown:
        pytest.fail(f"unknown live_stack_specs {sorted(unknown)}; known: {sorted(STACK_SPECS)}")
    return tuple(sorted(names))


def stack_dag_ids(specs: tuple[str, ...]) -> set[str]:
    """Every DAG the stack must have parsed before it is ready."""
    stages = ("ingest", "score", "monitor", "retrain")
    return set(STACK_DAGS) | {f"{stage}__{name}" for name in specs for stage in stages}


def _popen(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        # A session (process group) of its own: `airflow standalone` starts its parts in its group, so
        # stopping the group stops all of them (and the task processes), and nothing else.
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a process group we started: one SIGTERM to each member, then SIGKILL for what is left."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STACK_STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _stack_ready(stack: LiveStack, password_file: Path, expected: set[str]) -> str | None:
    """None when the API answers, the scheduler and DAG processor are healthy and the DAGs are parsed;
    else what is still missing."""
    try:
        health = httpx.get(f"{stack.url}/api/v2/monitor/health", timeout=5)
    except httpx.HTTPError as error:
        return f"API server not answering ({error.__class__.__name__})"
    if health.status_code != 200:
        return f"health endpoint answered {health.status_code}"
    states = health.json()
    for part in ("scheduler", "dag_processor", "triggerer"):
        if (states.get(part) or {}).get("status") != "healthy":
            return f"{part} not healthy yet: {states.get(part)}"
    if not password_file.is_file():
        return f"no generated password in {password_file} yet"
    if not stack.password:
        stack.password = json.loads(password_file.read_text())[stack.username]
    listed = stack.api("GET", "/api/v2/dags", params={"limit": 100})
    if listed.status_code != 200:
        return f"listing the DAGs answered {listed.status_code}"
    found = {dag["dag_id"] for dag in listed.json()["dags"]}
    missing = expected - found
    return f"DAGs not parsed yet: {sorted(missing)}" if missing else None


@pytest.fixture(scope="session")
def live_stack(
    pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory, live_stack_specs: tuple[str, ...]
) -> Iterator[LiveStack]:
    """The local stack under the real scheduler; ingest, score and monitor of demand unpaused (retrain stays
    paused); the DAGs of the extra specs the session asks for (``live_stack_specs``) parsed and paused."""
    from nightly_ml import db
    from nightly_ml.config import settings
    from nightly_ml.devtools import localstack
    from nightly_ml.devtools.scratch import admin_execute, database_url
    from nightly_ml.spec import load_spec_file

    for tool in ("airflow", "mlflow"):
        if not Path(sys.executable).with_name(tool).exists():
            pytest.skip(f"the `{tool}` executable is not installed beside {sys.executable}: run `make venv`")

    root = tmp_path_factory.mktemp("stack")
    home, data_dir, spec_dir = root / "airflow", root / "data", root / "specs"
    home.mkdir()
    data_dir.mkdir()
    today = datetime.now(UTC).date()
    load_spec_file(light_demand_spec(spec_dir, first_demand_day(today), today))
    for name in live_stack_specs:
        load_spec_file(STACK_SPECS[name](spec_dir, data_dir))

    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    databases = {"warehouse": f"nightly_ml_stack_{suffix}", "airflow": f"nightly_ml_stack_airflow_{suffix}"}
    for name in databases.values():
        admin_execute(pg_admin_url, f'CREATE DATABASE "{name}"')
    warehouse_url = database_url(pg_admin_url, databases["warehouse"])
    metadata_url = database_url(pg_admin_url, databases["airflow"]).replace(
        "postgresql://", "postgresql+psycopg2://", 1
    )
    processes: list[subprocess.Popen[bytes]] = []

    def shut_down() -> None:
        while processes:
            _stop_group(processes.pop())
        while databases:
            admin_execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{databases.popitem()[1]}" WITH (FORCE)')

    _shutdowns.append(shut_down)
    try:
        db.migrate(warehouse_url)
        airflow_port, mlflow_port, smtp_port, mail_port = (free_port() for _ in range(4))
        environ = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("MLFLOW_", "PYTEST_", "AIRFLOW_CONN_", "AIRFLOW__SMTP__", "AIRFLOW__API__"))
        }
        environ.update(
            AIRFLOW_HOME=str(home),
            WAREHOUSE_URL=warehouse_url,
            # links in task pages and mails on the address the browser uses (its login cookie is per host)
            NIGHTLY_ML_BASE_URL=f"http://127.0.0.1:{airflow_port}",
            NIGHTLY_ML_REPORTS_URL=f"http://127.0.0.1:{airflow_port}/nightly-ml/reports",
        )
        # The plan reads the data dir from settings(): point it at the private one while it is made.
        previous_data_dir = os.environ.get("NIGHTLY_ML_DATA_DIR")
        os.environ["NIGHTLY_ML_DATA_DIR"] = str(data_dir)
        settings.cache_clear()
        try:
            plan = localstack.plan(airflow_port, mlflow_port, environ, smtp_port=smtp_port, mail_port=mail_port)
        finally:
            if previous_data_dir is None:
                os.environ.pop("NIGHTLY_ML_DATA_DIR", None)
            else:
                os.environ["NIGHTLY_ML_DATA_DIR"] = previous_data_dir
            settings.cache_clear()
        assert plan.mlflow_command is not None and plan.mail_command is not None
        assert not plan.start_embedded_warehouse and plan.host == "127.0.0.1"
        env = {
            **environ,
            **plan.env,
            "NIGHTLY_ML_SPEC_DIR": str(spec_dir),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # one API worker and no MLflow job runner: fewer processes competing for the test machine's cores
            "AIRFLOW__API__WORKERS": "1",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        logs = {
            "mlflow": root / "mlflow.log",
            "mail": root / "mail.log",
            "migrate": root / "airflow-migrate.log",
            **{name: root / f"airflow-{name}.log" for name in plan.airflow_commands},
        }
        stack = LiveStack(
            url=f"http://127.0.0.1:{airflow_port}",
            username="admin",
            password="",
            home=home,
            data_dir=data_dir,
            spec_dir=spec_dir,
            warehouse_url=warehouse_url,
            logs=logs,
            mlflow_url=f"http://127.0.0.1:{mlflow_port}",
            mail_url=f"http://127.0.0.1:{mail_port}",
            env=env,
        )
        (data_dir / "mlflow" / "artifacts").mkdir(parents=True)
        for name, command in (("mlflow", plan.mlflow_command), ("mail", plan.mail_command)):
            stack.processes[name] = _popen(command, env, logs[name], root)
            processes.append(stack.processes[name])
        with logs["migrate"].open("wb") as out:
            migrated = subprocess.run(
                plan.migrate_command, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT, timeout=600, check=False
            )
        if migrated.returncode != 0:
            pytest.fail(f"`airflow db migrate` failed:\n{stack.log_tail()}")
        for name, command in plan.airflow_commands.items():
            stack.processes[name] = _popen(command, env, logs[name], root)
            processes.append(stack.processes[name])

        password_file = home / "simple_auth_manager_passwords.json.generated"
        deadline = time.monotonic() + STACK_START_TIMEOUT_S
        expected_dags = stack_dag_ids(live_stack_specs)
        while (waiting := _stack_ready(stack, password_file, expected_dags)) is not None:
            exited = [name for name, p in stack.processes.items() if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                why = f"exited: {exited}" if exited else f"not ready after {STACK_START_TIMEOUT_S:.0f} s"
                pytest.fail(f"the local stack did not start ({why}; last: {waiting}):\n{stack.log_tail()}")
            time.sleep(1)
        for url in (env["MLFLOW_TRACKING_URI"], stack.mail_url):
            if not _healthy(url):
                pytest.fail(f"{url} is not healthy:\n{stack.log_tail()}")
        for dag_id in STACK_DAGS:
            stack.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        yield stack
    finally:
        shut_down()
        _shutdowns.remove(shut_down)


# Stopped right after the last test that uses it (not at the end of the session): the tests that run
# after it get the machine's cores back.
_shutdowns: list[Callable[[], None]] = []


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if not _shutdowns or "live_stack" not in getattr(item, "fixturenames", ()):
        return
    items = item.session.items
    later = items[items.index(item) + 1 :] if item in items else []
    if not any("live_stack" in getattr(other, "fixturenames", ()) for other in later):
        for shut_down in list(_shutdowns):
            shut_down()


# --------------------------------------------------------------------------- runs through REST API v2
CHAIN_TIMEOUT_S = 360.0
FINISHED = {"success", "failed"}


def trigger(stack: LiveStack, dag_id: str, conf: dict[str, Any] | None = None) -> httpx.Response:
    """``POST /api/v2/dags/<id>/dagRuns`` with no logical date, as the UI's trigger form sends it."""
    body: dict[str, Any] = {"logical_date": None}
    if conf is not None:
        body["conf"] = conf
    return stack.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)


def task_states(stack: LiveStack, dag_id: str, run_id: str) -> dict[str, str | None]:
    response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    response.raise_for_status()
    return {ti["task_id"]: ti["state"] for ti in response.json()["task_instances"]}


def failure_report(stack: LiveStack, dag_id: str, run_id: str) -> str:
    """The task states of a run and the end of the last try's log of each failed task, for a failure message."""
    response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    response.raise_for_status()
    instances = response.json()["task_instances"]
    lines = [f"{dag_id} / {run_id}: " + ", ".join(f"{ti['task_id']}={ti['state']}" for ti in instances)]
    for ti in instances:
        if ti["state"] not in ("failed", "up_for_retry"):
            continue
        log = stack.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{max(1, ti['try_number'])}",
            params={"full_content": "true"},
            headers={"Accept": "text/plain"},
        )
        lines.append(f"--- {ti['task_id']}, try {ti['try_number']}:\n{log.text[-3000:]}")
    return "\n".join(lines)


def wait_for_run(stack: LiveStack, dag_id: str, run_id: str, deadline: float) -> dict[str, Any]:
    """Poll the run until it has finished, or fail at the deadline (monotonic clock)."""
    while True:
        response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        run = response.json()
        if run["state"] in FINISHED:
            return run
        if time.monotonic() > deadline:
            pytest.fail(
                f"{dag_id} run {run_id} still {run['state']} at the deadline:\n{failure_report(stack, dag_id, run_id)}"
            )
        time.sleep(2)


def covered_intervals(stack: LiveStack, dag_id: str, run_id: str) -> set[str]:
    """The interval starts carried by the Asset events that triggered a run."""
    response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents")
    response.raise_for_status()
    starts: set[str] = set()
    for event in response.json()["asset_events"]:
        extra = event.get("extra") or {}
        starts.update(start for start, _ in extra.get("intervals") or [])
        if "interval_start" in extra:
            starts.add(extra["interval_start"])
    return starts


def wait_for_asset_runs(stack: LiveStack, dag_id: str, starts: set[str], deadline: float) -> dict[str, dict[str, Any]]:
    """For each interval start, a finished run of ``dag_id`` triggered by an Asset event of that interval
    (a successful one when there is one)."""
    found: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    while True:
        response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "run_after", "limit": 100})
        response.raise_for_status()
        for run in response.json()["dag_runs"]:
            if run["state"] not in FINISHED or run["dag_run_id"] in seen:
                continue
            seen.add(run["dag_run_id"])
            for start in covered_intervals(stack, dag_id, run["dag_run_id"]) & starts:
                if found.get(start, {}).get("state") != "success":
                    found[start] = run
        if set(found) == starts and all(run["state"] == "success" for run in found.values()):
            return found
        if time.monotonic() > deadline:
            reports = [failure_report(stack, dag_id, run["dag_run_id"]) for run in found.values()]
            pytest.fail(
                f"{dag_id}: runs by interval at the deadline: { {s: r['state'] for s, r in found.items()} }, "
                f"wanted {sorted(starts)}\n" + "\n".join(reports)
            )
        time.sleep(3)


@dataclass
class DemandChain:
    """What the scheduler made of two manual ingest runs: a past day, and no conf at all."""

    day: date
    day_run: dict[str, Any]
    latest_run: dict[str, Any]
    # the interval (UTC starts, ISO) each ingest run loaded, from ops.load_audit
    loaded: dict[str, list[datetime]]
    score_runs: dict[str, dict[str, Any]]
    monitor_runs: dict[str, dict[str, Any]]
    latest_candidates: list[tuple[datetime, datetime]]
    seconds: float


@pytest.fixture(scope="session")
def demand_chain(live_stack: LiveStack) -> DemandChain:
    """Trigger ``ingest__demand`` for its first day (conf ``{"day": …}``) and with no conf, then wait
    (bounded) until both have run and the Asset-scheduled score and monitor runs of both intervals finished."""
    import psycopg2

    from nightly_ml.spec import load_spec_file
    from nightly_ml.tasks.common import latest_complete_interval

    spec = load_spec_file(live_stack.spec_dir / "demand.yaml")
    started = time.monotonic()
    deadline = started + CHAIN_TIMEOUT_S
    day = spec.start_date
    # the latest complete interval, as the server will see it (either side of a midnight)
    candidates = [latest_complete_interval(spec)]
    day_response = trigger(live_stack, "ingest__demand", {"day": day.isoformat()})
    latest_response = trigger(live_stack, "ingest__demand")
    candidates.append(latest_complete_interval(spec))
    for response in (day_response, latest_response):
        assert response.status_code == 200, response.text
    runs = {
        name: wait_for_run(live_stack, "ingest__demand", response.json()["dag_run_id"], deadline)
        for name, response in (("day", day_response), ("latest", latest_response))
    }
    loaded: dict[str, list[datetime]] = {}
    with psycopg2.connect(live_stack.warehouse_url) as conn, conn.cursor() as cur:
        for name, run in runs.items():
            cur.execute(
                "SELECT interval_start FROM ops.load_audit "
                "WHERE dataset = 'demand' AND run_id = %s AND status = 'merged'",
                (run["dag_run_id"],),
            )
            loaded[name] = [row[0] for row in cur.fetchall()]
    conn.close()
    starts = {start.isoformat() for name in loaded for start in loaded[name]}
    score_runs = monitor_runs = {}
    if all(run["state"] == "success" for run in runs.values()) and starts:
        score_runs = wait_for_asset_runs(live_stack, "score__demand", starts, deadline)
        monitor_runs = wait_for_asset_runs(live_stack, "monitor__demand", starts, deadline)
    return DemandChain(
        day=day,
        day_run=runs["day"],
        latest_run=runs["latest"],
        loaded=loaded,
        score_runs=score_runs,
        monitor_runs=monitor_runs,
        latest_candidates=candidates,
        seconds=time.monotonic() - started,
    )
