"""The distributed topology of ``docker-compose.yml``, as commands: one source for compose and the native test.

Airflow's own engine scales the work out: an API server (UI, REST API v2, the execution API the workers
call), a scheduler, a DAG processor, a triggerer and any number of Celery workers fed through Redis. Every
Airflow service of ``docker-compose.yml`` runs ``airflow`` with the arguments below (the image's entry
point is ``airflow``), and ``tests/e2e/test_celery_topology.py`` starts the same commands natively, with
two workers; ``tests/unit/test_compose.py`` checks that both agree.

Log servers are skipped everywhere: every Airflow service writes its task logs to one shared log folder
(compose's ``airflow-logs`` volume), from which the API server reads them, so no worker needs to listen on
a port (Airflow's log servers bind every interface). On Kubernetes, remote logging does the same.
"""

from __future__ import annotations

from collections.abc import Mapping

AIRFLOW_SERVICES: Mapping[str, tuple[str, ...]] = {
    "airflow-apiserver": ("api-server",),
    "airflow-scheduler": ("scheduler", "--skip-serve-logs"),
    "airflow-dag-processor": ("dag-processor",),
    "airflow-triggerer": ("triggerer", "--skip-serve-logs"),
    "airflow-worker": ("celery", "worker", "--skip-serve-logs"),
}
WORKER_SERVICE = "airflow-worker"
# Compose names each worker after its container (Celery's default ``celery@<hostname>``); several workers on
# one machine need a node name each: the one option the native run adds to a compose command.
NATIVE_ONLY_OPTIONS = ("--celery-hostname",)

# Settings every Airflow service of the topology shares (the rest — addresses, secrets, databases — comes
# from the deployment: compose's environment, or the native test's).
CELERY_SETTINGS: Mapping[str, str] = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
    # each worker imports the tasks' libraries once, before its pool forks (nightly_ml/tasks/preload.py)
    "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "nightly_ml.tasks.celery_config.CELERY_CONFIG",
    # every queued Asset event reaches a run (Airflow 3.3 loses the newest one: tasks/asset_manager.py)
    "AIRFLOW__CORE__ASSET_MANAGER_CLASS": "nightly_ml.tasks.asset_manager.NewestEventAssetManager",
}


def airflow_command(airflow: str, service: str, *, worker_name: str | None = None) -> list[str]:
    """The command of one Airflow service (``airflow`` is the executable's path)."""
    command = [airflow, *AIRFLOW_SERVICES[service]]
    if worker_name is not None:
        if service != WORKER_SERVICE:
            raise ValueError(f"only {WORKER_SERVICE} takes a worker name, not {service}")
        command += ["--celery-hostname", f"{worker_name}@%h"]
    return command
