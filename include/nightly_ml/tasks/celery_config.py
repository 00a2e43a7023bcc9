"""The Celery workers' configuration: Airflow's default, plus the tasks' libraries imported once per worker.

``[celery] celery_config_options = nightly_ml.tasks.celery_config.CELERY_CONFIG``. A Celery worker imports
its ``imports`` before it starts its pool; each task then runs in a process forked from a pool process, with
:mod:`nightly_ml.tasks.preload` already in memory.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG: dict[str, Any] = {
    **DEFAULT_CELERY_CONFIG,
    "imports": [*DEFAULT_CELERY_CONFIG.get("imports", ()), "nightly_ml.tasks.preload"],
}
