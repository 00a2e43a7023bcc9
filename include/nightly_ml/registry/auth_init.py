"""The MLflow worker login: the one place the MLflow admin password is used (docs/SECURITY.md).

``python -m nightly_ml.registry.auth_init`` (the ``mlflow-init`` service of docker-compose.yml) logs in as
the admin of a server started with ``mlflow server --app-name basic-auth`` and, idempotently:

1. creates the worker user (``NIGHTLY_ML_MLFLOW_WORKER_USERNAME``), or resets its password to the configured
   one (rotation: change the secret, run this again, restart the workers), and makes sure it is no admin;
2. creates, for every dataset spec, its experiment and its registered model as the admin, so the worker
   never becomes their creator (a creator gets MANAGE, which includes deleting);
3. grants the worker EDIT on both: read and update, i.e. create runs and log to them, register versions,
   tag them and move aliases, but not delete a model, a version or an alias (that needs MANAGE).

With the server's ``default_permission = READ`` the worker still reads everything else. A new spec needs
another run of this step before its first training run.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import requests

from nightly_ml.config import mlflow_logins, settings
from nightly_ml.spec import load_all_specs

log = logging.getLogger(__name__)

WORKER_PERMISSION = "EDIT"
RESOURCE_EXPERIMENT = "experiment"
RESOURCE_REGISTERED_MODEL = "registered_model"
TIMEOUT_S = 30
MIN_PASSWORD_LENGTH = 12  # what MLflow asks of the admin's; the worker's is held to the same


class AuthInitError(RuntimeError):
    """The worker login could not be set up (nothing half-done matters: the step is idempotent)."""


@dataclass(frozen=True)
class Grant:
    resource_type: str
    resource_id: str
    name: str  # the experiment or model name (the id of an experiment is a number)


@dataclass
class Outcome:
    worker: str
    user_created: bool
    grants: list[Grant] = field(default_factory=list)


class _Admin:
    """REST calls to the tracking server with the admin's basic-auth credentials (never from the environment)."""

    def __init__(self, tracking_uri: str, username: str, password: str) -> None:
        self.base = tracking_uri.rstrip("/")
        self.session = requests.Session()
        self.session.auth = (username, password)

    def call(self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> dict[str, Any] | None:
        response = self.session.request(method, f"{self.base}/api/{path}", timeout=TIMEOUT_S, **kwargs)
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            raise AuthInitError(
                f"the MLflow server at {self.base} refused the admin login ({response.status_code}): check "
                "MLFLOW_AUTH_ADMIN_USERNAME/_PASSWORD (they are the server's, set at its first start)"
            )
        if not response.ok:
            raise AuthInitError(f"{method} {path} failed: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else {}


def _ensure_user(admin: _Admin, username: str, password: str) -> bool:
    """Create the worker user or reset its password; demote it if someone made it an admin. True if created."""
    found = admin.call("GET", "2.0/mlflow/users/get", params={"username": username}, missing_ok=True)
    if found is None:
        admin.call("POST", "2.0/mlflow/users/create", json={"username": username, "password": password})
        return True
    admin.call("PATCH", "2.0/mlflow/users/update-password", json={"username": username, "password": password})
    if found["user"].get("is_admin"):
        admin.call("PATCH", "2.0/mlflow/users/update-admin", json={"username": username, "is_admin": False})
    return False


def _ensure_experiment(admin: _Admin, name: str) -> str:
    found = admin.call("GET", "2.0/mlflow/experiments/get-by-name", params={"experiment_name": name}, missing_ok=True)
    if found is not None:
        return str(found["experiment"]["experiment_id"])
    return str(admin.call("POST", "2.0/mlflow/experiments/create", json={"name": name})["experiment_id"])


def _ensure_registered_model(admin: _Admin, name: str) -> None:
    if admin.call("GET", "2.0/mlflow/registered-models/get", params={"name": name}, missing_ok=True) is None:
        admin.call("POST", "2.0/mlflow/registered-models/create", json={"name": name})


def _grant(admin: _Admin, username: str, grant: Grant) -> None:
    body = {
        "username": username,
        "resource_type": grant.resource_type,
        "resource_id": grant.resource_id,
        "permission": WORKER_PERMISSION,
    }
    try:
        admin.call("POST", "3.0/mlflow/users/permissions/grant", json=body)
    except AuthInitError as error:
        if "RESOURCE_ALREADY_EXISTS" not in str(error):
            raise
        # Granted before, perhaps with another level since: there is no update call, so revoke and grant again.
        revoke = {k: body[k] for k in ("username", "resource_type", "resource_id")}
        admin.call("POST", "3.0/mlflow/users/permissions/revoke", json=revoke)
        admin.call("POST", "3.0/mlflow/users/permissions/grant", json=body)


def ensure_worker(tracking_uri: str | None = None, dataset_names: list[str] | None = None) -> Outcome:
    """Set up the worker login on the server (idempotent); ``dataset_names`` defaults to every spec."""
    logins = mlflow_logins()
    (admin_user, admin_password), (worker, worker_password) = logins.admin, logins.worker
    if not admin_password:
        raise AuthInitError("MLFLOW_AUTH_ADMIN_PASSWORD is not set: the admin login is needed to create the worker")
    if len(worker_password) < MIN_PASSWORD_LENGTH:
        raise AuthInitError(
            f"NIGHTLY_ML_MLFLOW_WORKER_PASSWORD must have at least {MIN_PASSWORD_LENGTH} characters "
            "(generate one with `openssl rand -hex 32`)"
        )
    if worker == admin_user:
        raise AuthInitError("the worker must be another user than the admin")
    uri = tracking_uri or settings().mlflow_tracking_uri
    if not uri.startswith(("http://", "https://")):
        raise AuthInitError(f"MLFLOW_TRACKING_URI must be the tracking server's http(s) address, not {uri}")
    specs = load_all_specs()
    if dataset_names is not None:
        specs = [spec for spec in specs if spec.name in set(dataset_names)]
    admin = _Admin(uri, admin_user, admin_password)
    try:
        outcome = Outcome(worker=worker, user_created=_ensure_user(admin, worker, worker_password))
        for spec in specs:
            experiment_id = _ensure_experiment(admin, spec.name)
            _ensure_registered_model(admin, spec.registered_model_name)
            for grant in (
                Grant(RESOURCE_EXPERIMENT, experiment_id, spec.name),
                Grant(RESOURCE_REGISTERED_MODEL, spec.registered_model_name, spec.registered_model_name),
            ):
                _grant(admin, worker, grant)
                outcome.grants.append(grant)
    except requests.exceptions.RequestException as error:
        raise AuthInitError(f"the MLflow server at {uri} is unreachable: {error}") from error
    return outcome


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        outcome = ensure_worker()
    except AuthInitError as error:
        log.error("mlflow-init: %s", error)
        return 1
    log.info("mlflow-init: user %s %s", outcome.worker, "created" if outcome.user_created else "updated")
    for grant in outcome.grants:
        log.info("mlflow-init: %s on %s %s", WORKER_PERMISSION, grant.resource_type, grant.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
