"""The built-in simulator: one interval's batch (with switchable drift and data faults) and its late labels."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from nightly_ml.etl.simulator_generators import (
    _S_BAD_DATA,
    _S_FAULTS,
    _S_TIME,
    _UNKNOWN_CATEGORY,
    BAD_DATA_SHARE,
    US_PER_DAY,
    US_PER_HOUR,
    WRONG_TYPE_VALUE,
    _Draw,
    _Effects,
    _effects,
    _epoch_us,
    _generate_churn,
    _generate_demand,
    _pick_rows,
    _rng,
    _source,
)
from nightly_ml.intervals import parse_utc
from nightly_ml.spec import Column, DatasetSpec

# --------------------------------------------------------------------------- batch


def _check_spec_fits(spec: DatasetSpec, draw: _Draw) -> None:
    missing = [f.name for f in spec.features if f.name not in draw.features]
    if missing:
        raise ValueError(
            f"the {_source(spec).generator!r} simulator cannot produce feature(s) {missing} of dataset {spec.name!r}; "
            f"it knows {sorted(draw.features)}"
        )


def _conform(column: Column, values: np.ndarray | pd.Series) -> pd.Series:
    """Coerce a generated column to the spec's type and bounds."""
    series = pd.Series(values)
    if column.type == "integer":
        array = np.asarray(series, dtype=np.int64)
        if column.min is not None or column.max is not None:
            array = np.clip(array, column.min, column.max).astype(np.int64)
        return pd.Series(array)
    if column.type == "float":
        array = np.asarray(series, dtype=np.float64)
        if column.min is not None or column.max is not None:
            array = np.clip(array, column.min, column.max)
        return pd.Series(array)
    if column.type == "boolean":
        return pd.Series(np.asarray(series, dtype=bool))
    if column.type == "category" and column.allowed is not None:
        used = set(series.unique())
        unknown = sorted(used - set(column.allowed))
        if unknown:
            raise ValueError(f"column {column.name!r}: simulator categories {unknown} are not in the spec's 'allowed'")
    return series.astype("str")


def _label_series(spec: DatasetSpec, label: np.ndarray, *, known: bool) -> pd.Series:
    kind = spec.label.type
    if kind == "float":
        values = np.clip(label.astype(np.float64), spec.label.min, spec.label.max)
        return pd.Series(values if known else np.full(len(label), np.nan))
    if kind == "boolean":
        return pd.Series(label.astype(bool)) if known else pd.Series(pd.NA, index=range(len(label)), dtype="boolean")
    return pd.Series(label.astype(np.int64)) if known else pd.Series(pd.NA, index=range(len(label)), dtype="Int64")


def _keys(spec: DatasetSpec, start: datetime, n: int) -> pd.Series:
    moment = parse_utc(start)
    if spec.key.type == "integer":
        # Minute of the interval start times 10^7, plus the row number: unique across nights.
        base = _epoch_us(moment) // 60_000_000 * 10_000_000
        return pd.Series(np.arange(n, dtype=np.int64) + base)
    prefix = f"{spec.name}-{moment:%Y%m%dT%H%M}-"
    return pd.Series([f"{prefix}{i:07d}" for i in range(n)], dtype="str")


def _clean_batch(spec: DatasetSpec, start: datetime, end: datetime, n: int) -> tuple[pd.DataFrame, _Effects]:
    """The batch before faults and bad data, with true labels."""
    source = _source(spec)
    start_us, end_us = _epoch_us(start), _epoch_us(end)
    if end_us <= start_us:
        raise ValueError(f"empty interval: start {start} is not before end {end}")
    effects = _effects(spec, start)
    event_us = np.sort(_rng(source, start, _S_TIME).integers(start_us, end_us, n, dtype=np.int64))

    if source.generator == "churn":
        draw = _generate_churn(spec, start, n, effects)
    else:
        draw = _generate_demand(spec, start, n, effects, event_us)
    _check_spec_fits(spec, draw)

    columns: dict[str, pd.Series] = {
        spec.key.name: _keys(spec, start, n),
        spec.event_time: pd.Series(event_us.astype("datetime64[us]")).dt.tz_localize("UTC"),
    }
    for column in spec.features:
        columns[column.name] = _conform(column, draw.features[column.name])
    columns[spec.label.name] = _label_series(spec, draw.label, known=True)
    return pd.DataFrame(columns), effects


def _set_missing(frame: pd.DataFrame, name: str, rows: np.ndarray) -> None:
    if len(rows) == 0:
        return
    column = frame[name]
    if column.dtype == np.int64:
        column = column.astype("Int64")
    elif column.dtype == bool:
        column = column.astype("boolean")
    column = column.copy()
    # Each dtype has its own missing marker; object columns take None.
    column.iloc[rows] = None if column.dtype == object else np.nan if column.dtype.kind == "f" else pd.NA
    frame[name] = column


def _out_of_range_value(column: Column, above: bool) -> float:
    """A whole number clearly beyond the column's max (``above``) or min, e.g. 500 -> 5001."""
    if column.max is not None and (above or column.min is None):
        return float(np.ceil(column.max + max(abs(column.max), 1.0) * 9 + 1))
    low = column.min if column.min is not None else 0.0
    return float(np.floor(low - max(abs(low), 1.0) * 9 - 1))


def _set_out_of_range(frame: pd.DataFrame, column: Column, rows: np.ndarray, rng: np.random.Generator) -> None:
    if len(rows) == 0:
        return
    above = rng.random(len(rows)) < 0.5
    values = np.where(above, _out_of_range_value(column, True), _out_of_range_value(column, False))
    series = frame[column.name].copy()
    if series.dtype.kind == "f":
        series.iloc[rows] = values
    else:
        series.iloc[rows] = values.astype(np.int64)
    frame[column.name] = series


def _spread_over(
    rng: np.random.Generator, rows: np.ndarray, columns: list[Column], apply: Callable[[Column, np.ndarray], None]
) -> None:
    """Hit each row in ``rows`` in one randomly chosen column of ``columns``."""
    if len(rows) == 0 or not columns:
        return
    choice = rng.integers(0, len(columns), len(rows))
    for i, column in enumerate(columns):
        apply(column, rows[choice == i])


def _ranged(spec: DatasetSpec) -> list[Column]:
    return [f for f in spec.numeric_features if f.min is not None or f.max is not None]


def _move_outside(
    frame: pd.DataFrame, spec: DatasetSpec, rows: np.ndarray, start: datetime, rng: np.random.Generator
) -> None:
    """Move the rows' event_time into the day before the interval."""
    if len(rows) == 0:
        return
    moved_us = _epoch_us(start) - US_PER_DAY + rng.integers(0, US_PER_DAY, len(rows), dtype=np.int64)
    times = frame[spec.event_time].copy()
    times.iloc[rows] = pd.Series(moved_us.astype("datetime64[us]")).dt.tz_localize("UTC").to_numpy()
    frame[spec.event_time] = times
    # Calendar features follow the (wrong) timestamp so the only fault is the interval.
    if _source(spec).generator == "demand":
        calendar = {"hour": (moved_us // US_PER_HOUR) % 24, "day_of_week": (moved_us // US_PER_DAY + 3) % 7}
        for name, values in calendar.items():
            if name in frame:
                column = frame[name].copy()
                column.iloc[rows] = values
                frame[name] = column


def _apply_faults(frame: pd.DataFrame, spec: DatasetSpec, start: datetime) -> None:
    faults = _source(spec).faults
    n = len(frame)
    # One stream per fault, so changing one fault's rate never moves another fault's rows.
    rngs = [_rng(_source(spec), start, _S_FAULTS + i) for i in range(6)]
    outside = _pick_rows(rngs[0], n, faults.outside_interval)
    out_of_range = _pick_rows(rngs[1], n, faults.out_of_range)
    unknown = _pick_rows(rngs[2], n, faults.unknown_category)
    wrong_type = _pick_rows(rngs[3], n, faults.wrong_type)
    nulls = _pick_rows(rngs[4], n, faults.nulls)
    duplicates = _pick_rows(rngs[5], n, faults.duplicate_keys)

    _move_outside(frame, spec, outside, start, rngs[0])
    _spread_over(rngs[1], out_of_range, _ranged(spec), lambda c, r: _set_out_of_range(frame, c, r, rngs[1]))

    def set_unknown(column: Column, rows: np.ndarray) -> None:
        if len(rows):
            value = _UNKNOWN_CATEGORY.get(column.name, f"unknown_{column.name}")
            series = frame[column.name].copy()
            series.iloc[rows] = value
            frame[column.name] = series

    categories = [f for f in spec.features if f.type == "category"]
    _spread_over(rngs[2], unknown, categories, set_unknown)

    def set_wrong_type(column: Column, rows: np.ndarray) -> None:
        if len(rows):
            series = frame[column.name].astype(object)
            series.iloc[rows] = WRONG_TYPE_VALUE
            frame[column.name] = series

    _spread_over(rngs[3], wrong_type, spec.numeric_features, set_wrong_type)
    _spread_over(rngs[4], nulls, list(spec.features), lambda c, r: _set_missing(frame, c.name, r))

    if len(duplicates):
        keys = frame[spec.key.name].to_numpy(copy=True)
        others = np.setdiff1d(np.arange(n), duplicates, assume_unique=True)
        pool = others if len(others) else np.arange(n)
        keys[duplicates] = keys[rngs[5].choice(pool, size=len(duplicates))]
        frame[spec.key.name] = pd.Series(keys, dtype=frame[spec.key.name].dtype)


def _apply_bad_data(frame: pd.DataFrame, spec: DatasetSpec, start: datetime) -> None:
    """Corrupt BAD_DATA_SHARE of rows: a null in a required feature and an out-of-range value."""
    rng = _rng(_source(spec), start, _S_BAD_DATA)
    rows = _pick_rows(rng, len(frame), BAD_DATA_SHARE)
    ranged = _ranged(spec)
    _spread_over(rng, rows, ranged, lambda c, r: _set_out_of_range(frame, c, r, rng))
    required = [f for f in spec.features if not f.nullable] or list(spec.features)
    # Nulls go to columns without ranges where possible so both defects stay visible.
    unranged = [f for f in required if f not in ranged] or required
    _spread_over(rng, rows, unranged, lambda c, r: _set_missing(frame, c.name, r))


def _batch_with_labels(spec: DatasetSpec, start: datetime, end: datetime, rows: int | None) -> pd.DataFrame:
    n = _source(spec).rows_per_interval if rows is None else int(rows)
    if n < 0:
        raise ValueError(f"rows must not be negative, got {n}")
    frame, effects = _clean_batch(spec, start, end, n)
    if effects.bad_data:
        _apply_bad_data(frame, spec, start)
    _apply_faults(frame, spec, start)
    return frame[spec.input_columns]


def generate_batch(spec: DatasetSpec, start: datetime, end: datetime, *, rows: int | None = None) -> pd.DataFrame:
    """One interval's batch [start, end) with columns ``spec.input_columns``.

    With ``label_delay_days > 0`` the label column is all missing: labels arrive later via
    :func:`generate_labels`.
    """
    frame = _batch_with_labels(spec, start, end, rows)
    if _source(spec).label_delay_days > 0:
        frame[spec.label.name] = _label_series(spec, np.zeros(len(frame)), known=False)
    return frame


def generate_labels(spec: DatasetSpec, start: datetime, end: datetime, *, rows: int | None = None) -> pd.DataFrame:
    """Labels arriving during [start, end): the true labels of the batch ``label_delay_days`` earlier.

    Columns are ``[spec.key.name, spec.label.name]``; empty when labels are not delayed.
    Labels are keyed by the true row keys (the label system is not affected by the
    snapshot's data faults), so duplicate-key faults never duplicate a label.
    """
    delay = _source(spec).label_delay_days
    key, label = spec.key.name, spec.label.name
    if delay == 0:
        empty = _clean_batch(spec, start, end, 0)[0]
        return empty[[key, label]]
    shift = timedelta(days=delay)
    n = _source(spec).rows_per_interval if rows is None else int(rows)
    frame, _ = _clean_batch(spec, start - shift, end - shift, n)
    return frame[[key, label]].reset_index(drop=True)
