"""Imported once by the bench's fork server (scripts.benchkit.children): what the measured children import, so
each fresh child forks with it loaded instead of importing it again (~10 s a child under ``spawn``).

What an Airflow worker imports (``nightly_ml.tasks.preload``: GX, MLflow, scikit-learn, pandas, Arrow), so a
measured task forks with what a task forks with in production; plus what only the bench's children use.

Only imports: nothing here connects, reads settings or starts a thread pool."""

from __future__ import annotations

import contextlib

import psycopg2.extensions  # noqa: F401
import pyarrow.parquet  # noqa: F401

import nightly_ml.etl.simulator  # noqa: F401
import nightly_ml.modeling.evaluation  # noqa: F401
import nightly_ml.modeling.frames  # noqa: F401
import nightly_ml.modeling.scoring  # noqa: F401
import nightly_ml.monitoring.aggregates  # noqa: F401
import nightly_ml.monitoring.checks  # noqa: F401
import nightly_ml.monitoring.drift  # noqa: F401
import nightly_ml.monitoring.statistics  # noqa: F401
import nightly_ml.spec  # noqa: F401
import nightly_ml.tasks.preload  # noqa: F401
import scripts.benchkit.children  # noqa: F401

# nightly_ml.config.settings() registers the connection passwords with Airflow's secrets masker: Airflow's
# import (seconds) happens on the first settings() of a process.
with contextlib.suppress(ImportError):
    import airflow.sdk.execution_time.task_runner  # noqa: F401
    import airflow.sdk.log  # noqa: F401
