"""Where reports live and how a browser reaches them: the one owner of the reports layout and the XCom keys.

Every writer (validation's Data Docs, the drift report, the backtest report) asks here for its
path, and the Airflow plugin serves the same tree. Links that leave the machine (alert mails,
task links) are ``http`` URLs of the plugin's reports app, never a worker's file path.

    <reports>/data_docs/<dataset>/ds=<local day>/index.html     Great Expectations Data Docs
    <reports>/<dataset>/drift_<local day>.html                   drift report of an interval
    <reports>/<dataset>/runs/drift_<day>__<run id>.html          the same report as one run wrote it (kept)
    <reports>/<dataset>/backtest_<first>_<last>.html (+ .json)   backtest report
"""

from __future__ import annotations

import re
from datetime import date, datetime
from urllib.parse import quote

from nightly_ml import storage
from nightly_ml.config import settings
from nightly_ml.intervals import local, partition_name
from nightly_ml.spec import DatasetSpec
from nightly_ml.storage import StoragePath

# XCom keys the tasks push and the plugin's task links read.
XCOM_DATA_DOCS_URL = "data_docs_url"
XCOM_DRIFT_REPORT_URL = "drift_report_url"
XCOM_MLFLOW_RUN_URL = "mlflow_run_url"
XCOM_BACKTEST_REPORT_URL = "backtest_report_url"

# The plugin's reports app, under the Airflow API server.
APP_PREFIX = "/nightly-ml"
REPORTS_PATH = f"{APP_PREFIX}/reports"


def reports_root() -> StoragePath:
    return storage.reports_root()


def data_docs_dir(spec: DatasetSpec, start: datetime) -> StoragePath:
    return reports_root() / "data_docs" / spec.name / partition_name(spec, start)


def data_docs_index(spec: DatasetSpec, start: datetime) -> StoragePath:
    return data_docs_dir(spec, start) / "index.html"


def drift_report_path(spec: DatasetSpec, interval_start: datetime) -> StoragePath:
    """The drift report of an interval, named by its local day (a re-run replaces it; history is in ops.*)."""
    if interval_start.tzinfo is None:
        raise ValueError("interval_start must be timezone-aware")
    return reports_root() / spec.name / f"drift_{local(spec, interval_start):%Y-%m-%d}.html"


def drift_run_report_path(interval_report: StoragePath, run_id: str) -> StoragePath:
    """One run's own copy of an interval's drift report, beside it under ``runs/``: a later run replaces the
    interval's report but never this one, so the report an old decision rested on stays readable."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._") or "run"
    return interval_report.parent / "runs" / f"{interval_report.stem}__{safe}{interval_report.suffix}"


def backtest_report_path(spec: DatasetSpec, first: date, last: date, suffix: str = ".html") -> StoragePath:
    return reports_root() / spec.name / f"backtest_{first:%Y-%m-%d}_{last:%Y-%m-%d}{suffix}"


def airflow_dag_url(dag_id: str) -> str:
    """The DAG's page in the Airflow UI (``NIGHTLY_ML_BASE_URL``)."""
    return f"{settings().airflow_url}/dags/{quote(dag_id, safe='')}"


def airflow_run_url(dag_id: str, run_id: str) -> str:
    return f"{airflow_dag_url(dag_id)}/runs/{quote(run_id, safe='')}"


def airflow_task_url(dag_id: str, run_id: str, task_id: str) -> str:
    """The task instance's page (its log is one click away)."""
    return f"{airflow_run_url(dag_id, run_id)}/tasks/{quote(task_id, safe='')}"


def public_url(path: StoragePath | str) -> str | None:
    """The http address of a report file as a person opens it (``NIGHTLY_ML_REPORTS_URL``), or None
    for a file outside the reports tree."""
    relative = storage.relative_to_root(storage.as_path(path) if isinstance(path, str) else path)
    if relative is None:
        return None
    return f"{settings().reports_url.rstrip('/')}/{quote(relative, safe='/=')}"
