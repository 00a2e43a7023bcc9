"""Shared fixtures: one throw-away PostgreSQL database per test session, and a private data dir.

The database comes from, in order: ``TEST_POSTGRES_ADMIN_URL``; the machine's server at
127.0.0.1:5432 (user postgres), unless ``TEST_EMBEDDED_POSTGRES=1``; else an embedded server
from the ``pgserver`` wheel (a real PostgreSQL, on a Unix socket).
Each session creates its own database and drops it at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nightly_ml.devtools.scratch import LOCAL_ADMIN_URL, environment_set, free_port, reachable

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration when first imported: point it at a private home before that.
os.environ["AIRFLOW_HOME"] = os.environ.get("TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="nightly_ml_airflow_")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(PROJECT_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(PROJECT_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__ASSET_MANAGER_CLASS"] = "nightly_ml.tasks.asset_manager.NewestEventAssetManager"
os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ["MLFLOW_ENABLE_TELEMETRY"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.pop("NIGHTLY_ML_SPEC_DIR", None)
os.environ.pop("NIGHTLY_ML_STORAGE_URL", None)  # local storage unless a test points it at its S3 server
# Tests that fail a task on purpose should not wait for production back-off.
os.environ["NIGHTLY_ML_TASK_RETRIES"] = "1"
os.environ["NIGHTLY_ML_RETRY_DELAY_SECONDS"] = "0.1"


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nightly_ml")


@pytest.fixture(scope="session")
def pg_admin_url(session_dir: Path) -> Iterator[str]:
    explicit = os.environ.get("TEST_POSTGRES_ADMIN_URL")
    if explicit:
        yield explicit
        return
    # TEST_EMBEDDED_POSTGRES=1 rehearses a machine without a PostgreSQL server.
    if not os.environ.get("TEST_EMBEDDED_POSTGRES") and reachable(LOCAL_ADMIN_URL):
        yield LOCAL_ADMIN_URL
        return
    import logging

    from nightly_ml.devtools import embedded

    # pgserver logs from an atexit hook, after pytest has closed its capture streams.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    server = embedded._server(session_dir / "pgdata")
    yield server.get_uri()
    embedded.stop(session_dir)  # the handle's own cleanup leaves a server started to outlive its process


@pytest.fixture(scope="session")
def data_dir(session_dir: Path) -> Path:
    path = session_dir / "data"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def warehouse_url(pg_admin_url: str, data_dir: Path) -> Iterator[str]:
    """A fresh, migrated database for this test session; the environment points everything at it."""
    from nightly_ml.devtools.scratch import scratch_database

    with scratch_database(pg_admin_url, f"nightly_ml_test_{os.getpid()}_{uuid.uuid4().hex[:8]}", data_dir) as url:
        yield url


# --------------------------------------------------------------------------- a real MLflow server
# SQLite backend store and proxied artifacts in a temporary directory, on a free 127.0.0.1 port;
# ``MLFLOW_TRACKING_URI`` points at it while the session runs.

MLFLOW_BIN = Path(sys.executable).with_name("mlflow")
STARTUP_TIMEOUT_S = 90


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``mlflow server``; yield its URL; stop it at the end of the session."""

    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    # No GenAI job runner: one process less competing for the test machine's cores.
    env = {
        **os.environ,
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(MLFLOW_BIN),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--serve-artifacts",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,  # its own process group: uvicorn and the job runner stop with it
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not _healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"mlflow server did not become healthy at {url}:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.25)

    try:
        with environment_set("MLFLOW_TRACKING_URI", url):
            yield url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and the children it spawned (its process group, which only it leads)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "nightly-ml-test",
    "AWS_SECRET_ACCESS_KEY": "nightly-ml-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3-compatible server (moto in server mode, its own process on 127.0.0.1); yields the
    environment a client needs (``AWS_*`` credentials and ``AWS_ENDPOINT_URL``). Nothing is set globally:
    a test applies it where it wants object storage."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("moto_server is missing: `make test` installs requirements-test.txt")
        pytest.skip("moto (the S3-compatible test server) is not installed: `make test` installs it")
    root = tmp_path_factory.mktemp("s3")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (root / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not _answers(f"{url}/moto-api/"):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"moto_server did not start at {url}:\n{(root / 'server.log').read_text()[-4000:]}")
        time.sleep(0.2)
    try:
        yield {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": url}
    finally:
        _stop(process)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture
def s3_bucket(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new bucket on the test S3 server, with the environment pointing the storage root into it."""
    import s3fs

    from nightly_ml.config import settings

    for name, value in s3_server.items():
        monkeypatch.setenv(name, value)
    bucket = f"nightly-ml-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    monkeypatch.setenv("NIGHTLY_ML_STORAGE_URL", f"s3://{bucket}/root")
    settings.cache_clear()
    yield bucket
    settings.cache_clear()
