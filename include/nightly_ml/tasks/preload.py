"""What a worker imports once, before it forks any task: the heavy libraries the tasks use.

Airflow runs each task in a process forked from its worker, so whatever the worker imported is there for
free; what it did not, every task imports again (Great Expectations alone takes ~6 s, MLflow and
scikit-learn a few more). The scheduler's LocalExecutor starts its workers from a ``forkserver`` that
imports this module (``[scheduler] mp_start_method = forkserver``, ``mp_forkserver_preload =
nightly_ml.tasks.preload``); a Celery worker imports it before it starts its pool (``imports`` of
:data:`nightly_ml.tasks.celery_config.CELERY_CONFIG`). Airflow's own Celery worker does the same for numpy.

Only imports: nothing here connects, reads settings or starts a thread.
"""

from __future__ import annotations

import adbc_driver_postgresql.dbapi  # noqa: F401
import great_expectations  # noqa: F401
import great_expectations.expectations  # noqa: F401
import mlflow  # noqa: F401
import mlflow.sklearn  # noqa: F401
import pandas  # noqa: F401
import pyarrow  # noqa: F401
import pyarrow.csv  # noqa: F401
import scipy.stats  # noqa: F401
import sklearn.ensemble  # noqa: F401
import sklearn.linear_model  # noqa: F401

import nightly_ml.tasks.ingest  # noqa: F401
import nightly_ml.tasks.monitor  # noqa: F401
import nightly_ml.tasks.retrain  # noqa: F401
import nightly_ml.tasks.score  # noqa: F401
