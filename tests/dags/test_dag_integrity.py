"""DAG integrity and policy: every DAG file imports cleanly, fast and light, and follows the house rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = ("pandas", "sklearn", "mlflow", "great_expectations", "scipy", "matplotlib", "pyarrow")


@pytest.fixture(scope="module")
def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_dag_files_exist() -> None:
    assert DAG_FILES, "no DAG files found"


def test_no_import_errors(dag_bag) -> None:
    assert dag_bag.import_errors == {}


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_no_heavy_modules(dag_file: Path) -> None:
    """Importing a DAG file must not pull in heavy libraries (they belong inside tasks)."""
    probe = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]; print('HEAVY=' + ','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(dag_file)], capture_output=True, text=True, check=True)
    # Airflow may log warnings to stdout too: read only the probe's own line.
    heavy = [line.removeprefix("HEAVY=") for line in result.stdout.splitlines() if line.startswith("HEAVY=")]
    assert heavy == [""], f"heavy imports: {result.stdout}"


def test_every_spec_has_its_dags(dag_bag) -> None:
    from nightly_ml.spec import load_all_specs

    for spec in load_all_specs():
        assert f"ingest__{spec.name}" in dag_bag.dags


def test_dags_follow_policy(dag_bag) -> None:
    assert dag_bag.dags
    for dag_id, dag in dag_bag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"
        assert dag.start_date is not None and dag.start_date.tzinfo is not None, f"{dag_id}: naive start_date"
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            assert task.retries >= 1, f"{where} has no retries"
            assert task.execution_timeout is not None, f"{where} has no execution_timeout"
            assert task.on_failure_callback, f"{where} has no failure alert callback"


def test_ingest_updates_the_warehouse_asset_only_from_merge(dag_bag) -> None:
    from nightly_ml.spec import load_all_specs
    from nightly_ml.tasks.common import warehouse_asset

    for spec in load_all_specs():
        dag = dag_bag.dags[f"ingest__{spec.name}"]
        producers = [t.task_id for t in dag.tasks if warehouse_asset(spec.name) in t.outlets]
        assert producers == ["merge"]
