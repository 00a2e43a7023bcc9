"""MLflow as a non-admin worker (nightly_ml.registry.auth_init) against a real ``mlflow server --app-name basic-auth``.

The server runs on a free 127.0.0.1 port with SQLite stores in a temporary directory. After the init step, the
worker logs a run, registers a version and moves an alias, and is refused (403) deleting the registered model;
the admin may. Without credentials the server answers 401.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression

from nightly_ml.devtools.scratch import environment_set, free_port
from nightly_ml.registry import auth_init
from nightly_ml.spec import load_spec

pytestmark = pytest.mark.integration

MLFLOW_BIN = Path(sys.executable).with_name("mlflow")
DATASET = "churn"
ADMIN_PASSWORD = f"admin-{uuid.uuid4().hex}"
WORKER = "nightly_ml_worker"
STARTUP_TIMEOUT_S = 90


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow_auth")
    config = root / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(MLFLOW_BIN),
                "server",
                "--app-name",
                "basic-auth",
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
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow basic-auth server did not start at {url}:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.25)
        yield url
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def logins(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What docker-compose.yml gives the mlflow-init service; the worker's password is new each test."""
    password = f"worker-{uuid.uuid4().hex}"
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("NIGHTLY_ML_MLFLOW_WORKER_USERNAME", WORKER)
    monkeypatch.setenv("NIGHTLY_ML_MLFLOW_WORKER_PASSWORD", password)
    return {"worker": password}


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch, auth_server: str) -> Iterator[object]:
    """``as_user(name, password)`` points the MLflow client (fluent API too) at the server with that login."""
    previous = mlflow.get_tracking_uri()

    def login(username: str, password: str) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        mlflow.set_tracking_uri(auth_server)
        mlflow.set_registry_uri(auth_server)
        return MlflowClient(tracking_uri=auth_server, registry_uri=auth_server)

    with environment_set("MLFLOW_TRACKING_URI", auth_server):
        yield login
    mlflow.set_tracking_uri(previous)
    mlflow.set_registry_uri(previous)


def test_no_credentials_is_401(auth_server: str) -> None:
    response = requests.get(f"{auth_server}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=10)
    assert response.status_code == 401
    wrong = requests.get(
        f"{auth_server}/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        auth=("admin", "not-the-password"),
        timeout=10,
    )
    assert wrong.status_code == 401


def test_the_worker_logs_registers_and_moves_aliases_but_cannot_delete_the_model(
    auth_server: str, logins: dict[str, str], as_user
) -> None:
    spec = load_spec(DATASET)
    outcome = auth_init.ensure_worker(auth_server, dataset_names=[DATASET])
    granted = {(g.resource_type, g.name) for g in outcome.grants}
    assert granted == {("experiment", spec.name), ("registered_model", spec.registered_model_name)}

    client = as_user(WORKER, logins["worker"])
    experiment = client.get_experiment_by_name(spec.name)
    assert experiment is not None
    features, labels = np.arange(20.0).reshape(10, 2), np.array([0, 1] * 5)
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.log_params({"C": 1.0})
        mlflow.log_metrics({"holdout_roc_auc": 0.5})
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(features, labels),
            name="model",
            registered_model_name=spec.registered_model_name,
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(spec.registered_model_name, "champion", version)
    client.set_model_version_tag(spec.registered_model_name, version, "promoted_by", "test")
    assert client.get_model_version_by_alias(spec.registered_model_name, "champion").run_id == run.info.run_id

    for forbidden in (
        lambda: client.delete_registered_model(spec.registered_model_name),
        lambda: client.delete_model_version(spec.registered_model_name, version),
        # MANAGE too: the alias rollback of nightly_ml.registry.aliases cannot remove an alias it had just added
        lambda: client.delete_registered_model_alias(spec.registered_model_name, "champion"),
        lambda: client.delete_experiment(experiment.experiment_id),
    ):
        with pytest.raises(MlflowException, match="error code 403") as refused:
            forbidden()
        assert refused.value.error_code == "PERMISSION_DENIED"
    assert client.get_registered_model(spec.registered_model_name).name == spec.registered_model_name
    worker_makes_a_user = requests.post(
        f"{auth_server}/api/2.0/mlflow/users/create",
        json={"username": f"intruder-{uuid.uuid4().hex[:6]}", "password": uuid.uuid4().hex},
        auth=(WORKER, logins["worker"]),
        timeout=10,
    )
    assert worker_makes_a_user.status_code == 403

    admin = as_user("admin", ADMIN_PASSWORD)
    admin.delete_registered_model(spec.registered_model_name)
    with pytest.raises(MlflowException) as gone:
        admin.get_registered_model(spec.registered_model_name)
    assert gone.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_running_the_init_again_rotates_the_worker_password(
    auth_server: str, logins: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    auth_init.ensure_worker(auth_server, dataset_names=[DATASET])
    old = logins["worker"]
    new = f"rotated-{uuid.uuid4().hex}"
    monkeypatch.setenv("NIGHTLY_ML_MLFLOW_WORKER_PASSWORD", new)
    outcome = auth_init.ensure_worker(auth_server, dataset_names=[DATASET])
    assert not outcome.user_created

    def status(password: str) -> int:
        url = f"{auth_server}/api/2.0/mlflow/experiments/get-by-name"
        response = requests.get(url, params={"experiment_name": DATASET}, auth=(WORKER, password), timeout=10)
        return response.status_code

    assert (status(old), status(new)) == (401, 200)


def test_the_init_refuses_a_wrong_admin_password_or_a_short_worker_password(
    auth_server: str, logins: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "not-the-admin-password")
    with pytest.raises(auth_init.AuthInitError, match="refused the admin login"):
        auth_init.ensure_worker(auth_server, dataset_names=[DATASET])
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("NIGHTLY_ML_MLFLOW_WORKER_PASSWORD", "short")
    with pytest.raises(auth_init.AuthInitError, match="at least 12"):
        auth_init.ensure_worker(auth_server, dataset_names=[DATASET])
