"""Fixtures of the fault tests: light specs in a private spec directory, one clean run to compare with, and
Airflow's metadata database for the tests that run real DAGs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fault_support as support

FILE_DATASETS = [
    "faults_control",
    "faults_kill_copy",
    "faults_kill_merge",
    "faults_race",
    "faults_restart",
    "faults_crash",
]
SIMULATED_DATASETS = ["faults_mlflow", "faults_promo"]
ROWS = 10_000  # ~1 MiB of CSV


@dataclass(frozen=True)
class FaultWorld:
    spec_dir: Path
    landing: Path
    warehouse_url: str


@pytest.fixture(scope="session")
def fault_world(warehouse_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    from nightly_ml.devtools.scratch import specs_from

    root = tmp_path_factory.mktemp("faults")
    spec_dir, landing = root / "specs", root / "landing"
    support.write_specs(spec_dir, landing, FILE_DATASETS, SIMULATED_DATASETS)
    with specs_from(spec_dir):
        yield FaultWorld(spec_dir, landing, warehouse_url)


@pytest.fixture(scope="session")
def clean_run(fault_world: FaultWorld) -> dict[str, Any]:
    """What one clean, undisturbed run of the interval leaves (dataset ``faults_control``)."""
    support.write_input("faults_control", ROWS)
    support.run_ingest("faults_control", "clean")
    state = support.warehouse_state(fault_world.warehouse_url, "faults_control")
    assert state["rows"] > 0 and state["quarantine"], state
    return state


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    """The parts of a state that must equal the clean run's, whichever run wrote them."""
    [(status, _run, rows_in, merged, quarantined, checksum)] = state["audit"]
    return {
        "rows": state["rows"],
        "distinct_keys": state["distinct_keys"],
        "checksum": state["checksum"],
        "rows_elsewhere": state["rows_elsewhere"],
        "audit": (status, rows_in, merged, quarantined, checksum),
        "quarantined": sorted((count, distinct) for _run, count, distinct in state["quarantine"]),
        "staging_tables": state["staging_tables"],
    }


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    home = Path(os.environ["AIRFLOW_HOME"])
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return home


def dag_of(dag_file: str, dag_id: str) -> Any:
    """Parse one DAG file now (default args follow the environment as it is now) and return one DAG."""
    from airflow.dag_processing.dagbag import DagBag

    from nightly_ml.config import PROJECT_ROOT, settings

    settings.cache_clear()
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / dag_file))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[dag_id]
