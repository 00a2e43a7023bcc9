"""The one place that reads the environment.

Everything is overridable by environment variables; nothing here touches the network or
a database. ``settings()`` is cached; tests call ``settings.cache_clear()`` after
changing the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    warehouse_url: str | None
    mlflow_tracking_uri: str
    data_dir: Path
    spec_dir: Path
    # Landing, archive and reports: a local folder or an fsspec URL (s3://bucket/prefix) shared by all
    # workers and the API server; ``nightly_ml.storage`` turns it into paths.
    storage_url: str
    alert_emails: tuple[str, ...]
    smtp_conn_id: str
    code_version: str
    task_retries: int
    retry_delay_seconds: float
    mlflow_ui_url: str | None = None
    # Where a browser reaches the plugin's reports app (links in mails and in task pages).
    reports_url: str = "http://localhost:8080/nightly-ml/reports"
    # Where a browser reaches the Airflow UI (links to runs and task logs in mails).
    airflow_url: str = "http://localhost:8080"
    # BLAS threads of the model while a batch is scored (0: the library's own count). Each chunk's matrix
    # products are small, and idle BLAS threads spin against the threads and the database sessions that
    # stream the rows (nightly_ml.modeling.scoring).
    scoring_blas_threads: int = 1

    def require_warehouse_url(self) -> str:
        if not self.warehouse_url:
            raise RuntimeError(
                "WAREHOUSE_URL is not set. Point it at a PostgreSQL database, or start the embedded one "
                "with `make run` / `python -m nightly_ml.devtools.embedded start`."
            )
        return self.warehouse_url


def _code_version() -> str:
    head = PROJECT_ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_file = PROJECT_ROOT / ".git" / ref[5:]
            if ref_file.is_file():
                return ref_file.read_text().strip()[:12]
            return "unknown"
        return ref[:12]
    except OSError:
        return "unknown"


@cache
def settings() -> Settings:
    mask_connection_secrets()
    data_dir = Path(os.environ.get("NIGHTLY_ML_DATA_DIR", PROJECT_ROOT / "data")).resolve()
    default_mlflow = f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"
    return Settings(
        warehouse_url=os.environ.get("WAREHOUSE_URL") or None,
        mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or default_mlflow,
        data_dir=data_dir,
        storage_url=os.environ.get("NIGHTLY_ML_STORAGE_URL") or str(data_dir),
        spec_dir=Path(os.environ.get("NIGHTLY_ML_SPEC_DIR", PROJECT_ROOT / "include" / "specs")).resolve(),
        alert_emails=tuple(e.strip() for e in os.environ.get("ALERT_EMAILS", "").split(",") if e.strip()),
        smtp_conn_id=os.environ.get("ALERT_SMTP_CONN_ID", "smtp_alerts"),
        code_version=os.environ.get("NIGHTLY_ML_CODE_VERSION") or _code_version(),
        # At least one retry, always: the DAG policy tests enforce it.
        task_retries=max(1, int(os.environ.get("NIGHTLY_ML_TASK_RETRIES", "2"))),
        retry_delay_seconds=float(os.environ.get("NIGHTLY_ML_RETRY_DELAY_SECONDS", "30")),
        mlflow_ui_url=(os.environ.get("NIGHTLY_ML_MLFLOW_UI_URL") or "").rstrip("/") or None,
        reports_url=os.environ.get("NIGHTLY_ML_REPORTS_URL") or "http://localhost:8080/nightly-ml/reports",
        airflow_url=(os.environ.get("NIGHTLY_ML_BASE_URL") or "http://localhost:8080").rstrip("/"),
        scoring_blas_threads=max(0, int(os.environ.get("NIGHTLY_ML_SCORING_BLAS_THREADS", "1"))),
    )


def source_database_url(variable: str) -> str | None:
    """The URL of a source database, from the variable its spec names (``source.url_env``)."""
    url = os.environ.get(variable) or None
    mask_secrets(*url_passwords(url))
    return url


GX_WAREHOUSE_URL_VARIABLE = "NIGHTLY_ML_GX_WAREHOUSE_URL"


def gx_connection_string(sqlalchemy_url: str) -> str:
    """The warehouse for Great Expectations, as the ``${VAR}`` template it requires.

    GX refuses literal connection strings and hostless (Unix-socket) URLs, but accepts a
    template resolved from the environment when it connects; its usage statistics stay off.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ[GX_WAREHOUSE_URL_VARIABLE] = sqlalchemy_url
    return "${" + GX_WAREHOUSE_URL_VARIABLE + "}"


def apply_library_defaults(defaults: dict[str, str]) -> None:
    """Defaults for libraries configured only through the environment (MLflow's HTTP retries); set values win."""
    for name, value in defaults.items():
        os.environ.setdefault(name, value)


# --------------------------------------------------------------------------- secrets out of task logs


def mask_secrets(*secrets: str | None) -> None:
    """Register secrets with Airflow's secrets masker: task logs then show ``***`` in their place.

    Inside a task this reaches the supervisor too (it writes the log); outside Airflow it only costs a set entry.
    """
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # the package used without Airflow
        return
    for secret in secrets:
        if secret:
            mask_secret(secret)


def url_passwords(url: str | None) -> tuple[str, ...]:
    """The password a URL carries, as written and percent-decoded (``user:pw@host`` or ``?password=``)."""
    if not url or "://" not in url:
        return ()
    parts = urlsplit(url)
    written = [parts.password or "", *parse_qs(parts.query).get("password", [])]
    return tuple({form for password in written if password for form in (password, unquote(password))})


def mask_connection_secrets() -> None:
    """The passwords the pipeline connects with (warehouse, MLflow) go to the masker when settings are built."""
    mask_secrets(
        *url_passwords(os.environ.get("WAREHOUSE_URL", "")),
        *url_passwords(os.environ.get("MLFLOW_TRACKING_URI", "")),
        os.environ.get("MLFLOW_TRACKING_PASSWORD", ""),
        os.environ.get("MLFLOW_TRACKING_TOKEN", ""),
    )


@dataclass(frozen=True)
class MlflowLogins:
    """(username, password) of the MLflow admin, used only by ``nightly_ml.registry.auth_init``, and of the
    pipeline's worker user it sets up (the workers log in with MLFLOW_TRACKING_USERNAME/_PASSWORD)."""

    admin: tuple[str, str]
    worker: tuple[str, str]


def mlflow_logins() -> MlflowLogins:
    admin_password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")
    worker_password = os.environ.get("NIGHTLY_ML_MLFLOW_WORKER_PASSWORD", "")
    mask_secrets(admin_password, worker_password)
    return MlflowLogins(
        admin=(os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME", "") or "admin", admin_password),
        worker=(os.environ.get("NIGHTLY_ML_MLFLOW_WORKER_USERNAME", "") or "nightly_ml_worker", worker_password),
    )


def hostname() -> str:
    """The host name Airflow records for a task (``[core] hostname_callable = nightly_ml.config.hostname``):
    ``NIGHTLY_ML_HOSTNAME`` when set — several workers on one machine, each with its own name — else the
    machine's fully qualified name, as Airflow's default does."""
    import socket

    return os.environ.get("NIGHTLY_ML_HOSTNAME", "") or socket.getfqdn()
