"""End-to-end fixtures: one migrated Airflow metadata database per test session (SQLite, private home)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

AIRFLOW = str(Path(sys.executable).parent / "airflow")


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
