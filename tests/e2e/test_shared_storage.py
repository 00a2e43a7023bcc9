"""Full nights with the storage root on a real S3-compatible server: workers keep nothing on their disk.

Four simulated nights of a light demand spec run through the real DAGs (``dag.test()``, the runner
``make run`` uses: ingest → score → monitor → retrain → promote) with ``NIGHTLY_ML_STORAGE_URL`` on a
bucket of a moto server started by the tests and the worker's data folder empty. Afterwards the
bucket holds each night's archived input, Data Docs and drift reports; the worker's data folder
holds nothing; and the plugin's reports app serves the night's reports from the bucket.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from nightly_ml.devtools.scratch import specs_from

pytestmark = pytest.mark.e2e

DATASET = "demand_s3"
FIRST_NIGHT = date(2025, 9, 1)
NIGHTS = 4


@dataclass
class S3Nights:
    bucket: str
    worker_dir: Path
    outcomes: list[Any]
    env: dict[str, str]


def _light_spec(spec_dir: Path) -> None:
    from nightly_ml.config import PROJECT_ROOT

    raw = yaml.safe_load((PROJECT_ROOT / "include" / "specs" / "demand.yaml").read_text())
    raw["name"] = DATASET
    raw["start_date"] = FIRST_NIGHT.isoformat()
    raw["source"].update(rows_per_interval=300, label_delay_days=0)
    raw["validation"]["min_rows"] = 50
    raw["drift"]["min_labelled_rows"] = 50
    raw["training"].update(
        window_days=2,
        holdout_days=1,
        min_rows=100,
        cv_folds=2,
        schedule=None,
        candidates=[{"name": "ridge", "estimator": "ridge", "search": {"alpha": [1.0]}}],
    )
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / f"{DATASET}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="module")
def s3_nights(
    s3_server: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    airflow_db: Path,
    warehouse_url: str,
    mlflow_server: str,
) -> Iterator[S3Nights]:
    import s3fs

    from nightly_ml.config import settings
    from nightly_ml.devtools import replay
    from nightly_ml.spec import load_spec

    bucket = f"nightly-ml-{uuid.uuid4().hex[:12]}"
    worker_dir = tmp_path_factory.mktemp("worker") / "data"
    spec_dir = tmp_path_factory.mktemp("s3_specs")
    _light_spec(spec_dir)
    env = {**s3_server, "NIGHTLY_ML_STORAGE_URL": f"s3://{bucket}/nightly", "NIGHTLY_ML_DATA_DIR": str(worker_dir)}
    with pytest.MonkeyPatch.context() as patch, specs_from(spec_dir):
        for name, value in env.items():
            patch.setenv(name, value)
        settings.cache_clear()
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
        spec = load_spec(DATASET)
        bag = replay.load_dag_bag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        first = datetime.combine(FIRST_NIGHT, datetime.min.time(), tzinfo=spec.zone)
        last = first + timedelta(days=NIGHTS - 1)
        outcomes = [
            replay.play_interval(bag, spec, interval) for interval in replay.intervals_between(spec, first, last)
        ]
        yield S3Nights(bucket, worker_dir, outcomes, env)
    settings.cache_clear()


def _objects(nights: S3Nights) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(
        skip_instance_cache=True,
        key=nights.env["AWS_ACCESS_KEY_ID"],
        secret=nights.env["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=nights.env["AWS_ENDPOINT_URL"],
    )
    prefix = f"{nights.bucket}/nightly/"
    return sorted(path.removeprefix(prefix) for path in fs.find(prefix))


def test_every_night_runs_through_the_chain(s3_nights: S3Nights) -> None:
    outcomes = {o.label: o for o in s3_nights.outcomes}
    assert len(outcomes) == NIGHTS
    assert all(o.ingest == "success" for o in outcomes.values()), outcomes
    trained = [o.label for o in s3_nights.outcomes if " promoted " in o.retrain]
    assert trained, s3_nights.outcomes  # a bootstrap champion, once two days are labelled
    for night in _after_the_first_champion(s3_nights):
        assert night.score == "success" and night.monitor in (
            "success",
            "no_action",
            "alert_drift",
            "trigger_retrain",
        ), night


def _after_the_first_champion(nights: S3Nights) -> list[Any]:
    first = next(i for i, o in enumerate(nights.outcomes) if " promoted " in o.retrain)
    return nights.outcomes[first + 1 :]


def test_the_bucket_holds_the_nights_files(s3_nights: S3Nights) -> None:
    objects = _objects(s3_nights)
    days = [o.label for o in s3_nights.outcomes]
    for day in days:
        assert f"archive/{DATASET}/ds={day}/part-0.csv" in objects, objects
        assert f"reports/data_docs/{DATASET}/ds={day}/index.html" in objects, objects
    for day in [o.label for o in _after_the_first_champion(s3_nights)]:  # scored and monitored with a champion
        assert f"reports/{DATASET}/drift_{day}.html" in objects, objects
        assert any(o.startswith(f"reports/{DATASET}/runs/drift_{day}__") for o in objects), objects
    # nothing is left waiting in landing once it is safely in the warehouse
    assert not [o for o in objects if o.startswith("landing/")], objects


def test_the_worker_keeps_nothing_on_its_disk(s3_nights: S3Nights) -> None:
    left = sorted(
        p.relative_to(s3_nights.worker_dir).as_posix() for p in s3_nights.worker_dir.rglob("*") if p.is_file()
    )
    assert left == [], left


def test_the_reports_app_serves_the_nights_reports_from_the_bucket(s3_nights: S3Nights) -> None:
    import sys

    from airflow import plugins_manager
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from nightly_ml.config import settings

    plugins_manager.ensure_plugins_loaded()
    plugin = sys.modules["nightly_ml_plugin"]
    last_day = s3_nights.outcomes[-1].label
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_nights.env.items():
            patch.setenv(name, value)
        settings.cache_clear()
        app = plugin.build_app()
        [login] = app.router.dependencies
        app.dependency_overrides[login.dependency] = lambda: None
        root = FastAPI()
        root.mount("/nightly-ml", app)
        client = TestClient(root)

        drift = client.get(f"/nightly-ml/reports/{DATASET}/drift_{last_day}.html")
        docs = client.get(f"/nightly-ml/reports/data_docs/{DATASET}/ds={last_day}/")
        index = client.get("/nightly-ml/index.json")
        outside = client.get("/nightly-ml/reports/../archive/" + DATASET)
    settings.cache_clear()

    assert drift.status_code == 200 and DATASET in drift.text and "drift" in drift.text.lower()
    assert docs.status_code == 200 and ("Data Docs" in docs.text or "Expectation" in docs.text)
    listed = {(r["kind"], r["label"]) for r in index.json() if r["dataset"] == DATASET}
    assert ("drift", last_day) in listed and ("validation", last_day) in listed, listed
    assert outside.status_code == 404
