"""The model's view of the warehouse: the training frame of a window, feature and label columns, the time split."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.intervals import require_utc
from nightly_ml.spec import DatasetSpec

FETCH_ROWS = 20_000


class TrainingDataError(ValueError):
    """The training window cannot give a trustworthy model (too few rows, an empty side, one class)."""


# --------------------------------------------------------------------------- data


def training_window(
    spec: DatasetSpec, window_end: datetime, since: datetime | None = None
) -> tuple[datetime, datetime]:
    """``[window_end - window_days, window_end)``, starting no earlier than ``since`` when given (the start of a
    change, such as a performance decay: rows from before it teach the old relation)."""
    end = require_utc(window_end)
    start = end - timedelta(days=spec.training.window_days)
    if since is not None:
        start = max(start, require_utc(since))
        if start >= end:
            raise ValueError(f"{spec.name}: the training window's start {start.isoformat()} is not before its end")
    return start, end


def frame_columns(spec: DatasetSpec) -> list[str]:
    """The columns training reads: key, event time, features, label (the spec's input columns)."""
    return spec.input_columns


def coerce_frame(spec: DatasetSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Give rows straight from the database (Python objects, ``None`` for NULL) stable dtypes."""
    out = frame.copy()
    out[spec.event_time] = pd.to_datetime(out[spec.event_time], utc=True)
    if spec.label.name in out:
        out[spec.label.name] = pd.to_numeric(out[spec.label.name].astype(object), errors="raise")
    for column in spec.numeric_features:
        out[column.name] = pd.to_numeric(out[column.name].astype(object), errors="raise").astype("float64")
    return out


def load_training_frame(
    spec: DatasetSpec, window_end: datetime, url: str | None = None, *, since: datetime | None = None
) -> pd.DataFrame:
    """Labelled rows with event time in the training window (:func:`training_window`), streamed from the warehouse.

    Reads through a server-side cursor in blocks of ``FETCH_ROWS``, so the only full copy
    in memory is the resulting frame (which training needs anyway).
    """
    start, end = training_window(spec, window_end, since)
    columns = frame_columns(spec)
    statement = db.compose(
        "training_frame.sql",
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        warehouse=db.warehouse_table(spec),
        event_time=spec.event_time,
        label=spec.label.name,
        key=spec.key.name,
    )
    blocks: list[pd.DataFrame] = []
    with db.transaction(url) as conn, conn.cursor(name=f"training_{spec.name}") as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(statement, {"window_start": start, "window_end": end})
        while rows := cur.fetchmany(FETCH_ROWS):
            blocks.append(pd.DataFrame.from_records(rows, columns=columns))
    if not blocks:
        return coerce_frame(spec, pd.DataFrame({c: pd.Series(dtype=object) for c in columns}))
    return coerce_frame(spec, pd.concat(blocks, ignore_index=True))


def feature_frame(spec: DatasetSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The model's input: numeric features as float64, categories and booleans as strings (NaN = missing).

    Booleans become ``"true"``/``"false"`` so they one-hot encode like any category, whatever
    the source handed us (numpy bools, Python bools, pandas' nullable booleans).
    """
    out: dict[str, pd.Series] = {}
    for column in spec.features:
        values = frame[column.name].astype(object)
        if column.is_numeric:
            out[column.name] = pd.to_numeric(values, errors="raise").astype("float64")
        elif column.type == "boolean":
            out[column.name] = values.map(_bool_text).astype(object)
        else:
            out[column.name] = values.map(lambda v: np.nan if _is_missing(v) else str(v)).astype(object)
    return pd.DataFrame(out, index=frame.index)


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _bool_text(value: Any) -> Any:
    if _is_missing(value):
        return np.nan
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "t", "1", "yes"):
            return "true"
        if lowered in ("false", "f", "0", "no"):
            return "false"
        raise ValueError(f"not a boolean: {value!r}")
    return "true" if bool(value) else "false"


def label_values(spec: DatasetSpec, frame: pd.DataFrame) -> np.ndarray:
    """The label as int 0/1 (classification) or float (regression)."""
    values = pd.to_numeric(frame[spec.label.name].astype(object), errors="raise")
    if values.isna().any():
        raise TrainingDataError(f"{int(values.isna().sum())} row(s) have no label {spec.label.name!r}")
    if spec.task == "classification":
        return values.astype("int64").to_numpy()
    return values.astype("float64").to_numpy()


def _sorted_by_time(spec: DatasetSpec, frame: pd.DataFrame) -> pd.DataFrame:
    # mergesort is stable: ties keep their (key-ordered) position, so the order is reproducible.
    return frame.sort_values([spec.event_time, spec.key.name], kind="mergesort").reset_index(drop=True)


def holdout_start_of(spec: DatasetSpec, frame: pd.DataFrame, window_end: datetime | None = None) -> datetime:
    """Start of the holdout: ``holdout_days`` before the end of the newest *labelled* day in the frame.

    Labels arrive late, so the newest days of a window are often unlabelled: the holdout is
    the newest labelled data (capped at ``window_end``), not the window's last days.
    """
    times = pd.to_datetime(frame[spec.event_time], utc=True)
    end = times.max().floor("D") + pd.Timedelta(days=1) if len(times) else pd.Timestamp(require_utc(window_end))
    if window_end is not None:
        end = min(end, pd.Timestamp(require_utc(window_end)))
    return (end - pd.Timedelta(days=spec.training.holdout_days)).to_pydatetime()


def time_split(
    spec: DatasetSpec, frame: pd.DataFrame, window_end: datetime | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off the newest ``holdout_days`` of the window as the holdout; the rest trains.

    Without ``window_end`` the window ends at the newest event time in the frame.
    Raises :class:`TrainingDataError` when either side is empty, the training side has
    fewer than ``spec.training.min_rows`` rows, or (classification) it holds one class only.
    """
    if frame.empty:
        raise TrainingDataError(f"{spec.name}: the training window holds no labelled rows")
    times = pd.to_datetime(frame[spec.event_time], utc=True)
    holdout_start = pd.Timestamp(holdout_start_of(spec, frame, window_end))
    end = holdout_start + pd.Timedelta(days=spec.training.holdout_days)
    is_holdout = times >= holdout_start
    train = _sorted_by_time(spec, frame[~is_holdout])
    holdout = _sorted_by_time(spec, frame[is_holdout])
    where = f"holdout starts {holdout_start.isoformat()} ({spec.training.holdout_days} day(s) before {end.isoformat()})"
    if train.empty:
        raise TrainingDataError(f"{spec.name}: no labelled rows before the holdout; {where}")
    if holdout.empty:
        raise TrainingDataError(f"{spec.name}: no labelled rows in the holdout; {where}")
    if len(train) < spec.training.min_rows:
        raise TrainingDataError(
            f"{spec.name}: only {len(train)} labelled training row(s) before the holdout; "
            f"spec.training.min_rows requires at least {spec.training.min_rows} ({where})"
        )
    if spec.task == "classification":
        classes = sorted(set(label_values(spec, train).tolist()))
        if len(classes) < 2:
            raise TrainingDataError(
                f"{spec.name}: the training rows hold only label class {classes}; a classifier needs both 0 and 1"
            )
    return train, holdout
