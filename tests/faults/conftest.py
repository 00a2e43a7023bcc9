"""Fixtures of the fault tests: light specs in a private spec directory, one clean run to compare with, and
Airflow's metadata database for the tests that run real DAGs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fault_support as support
from fault_support import ROWS, FaultWorld

FILE_DATASETS = [
    "faults_control",
    "faults_kill_copy",
    "faults_kill_merge",
    "faults_race",
    "faults_restart",
    "faults_crash",
]
SIMULATED_DATASETS = ["faults_mlflow", "faults_promo"]


@pytest.fixture(scope="session")
def fault_world(warehouse_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:

    root = tmp_path_factory.mktemp("faults")
    spec_dir, landing = root / "specs", root / "landing"
    support.write_specs(spec_dir, landing, FILE_DATASETS, SIMULATED_DATASETS)
    # The spec directory is switched per test (fault_specs), never for the rest of the session: the test
    # files collected after these ones read the real specs.
    yield FaultWorld(spec_dir, landing, warehouse_url)


@pytest.fixture(autouse=True)
def fault_specs(fault_world: FaultWorld) -> Iterator[Path]:
    from nightly_ml.devtools.scratch import specs_from

    with specs_from(fault_world.spec_dir):
        yield fault_world.spec_dir


@pytest.fixture(scope="session")
def clean_run(fault_world: FaultWorld) -> dict[str, Any]:
    """What one clean, undisturbed run of the interval leaves (dataset ``faults_control``)."""
    from nightly_ml.devtools.scratch import specs_from

    with specs_from(fault_world.spec_dir):
        return _clean_run(fault_world)


def _clean_run(fault_world: FaultWorld) -> dict[str, Any]:
    support.write_input("faults_control", ROWS)
    support.run_ingest("faults_control", "clean")
    state = support.warehouse_state(fault_world.warehouse_url, "faults_control")
    assert state["rows"] > 0 and state["quarantine"], state
    return state


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    home = Path(os.environ["AIRFLOW_HOME"])
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return home
