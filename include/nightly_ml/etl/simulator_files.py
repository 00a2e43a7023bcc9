"""Writing a simulated batch as the files a source would drop (CSV with optional malformed lines, or Parquet)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from nightly_ml import storage
from nightly_ml.etl.simulator import generate_batch, generate_labels
from nightly_ml.etl.simulator_generators import CHURN_NEW_REGION, DEMAND_NEW_ZONE, _pick_rows, scenario_intensity

# --------------------------------------------------------------------------- files


def _format_plain(value: object) -> str | None:
    """Text for one cell of an object column (mixed types after faults)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None
        return np.format_float_positional(value, trim="-")
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def _object_as_text(series: pd.Series) -> pa.Array:
    """An object column (numbers mixed with "n/a" after wrong_type faults) as text.

    Numbers go through Arrow's cast, which formats like the CSV writer; a per-cell Python
    loop would take seconds on a million rows.
    """
    values = series.to_numpy(dtype=object)
    is_text = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
    rest = series.where(~is_text)
    if rest.map(type).isin([int, float, np.int64, np.float64, type(None), type(pd.NA)]).all():
        numbers = pa.array(pd.to_numeric(rest, errors="coerce"), from_pandas=True)
        text = pa.array(np.where(is_text, values, None), type=pa.string())
        return pa_compute.if_else(pa.array(is_text), text, pa_compute.cast(numbers, pa.string()))
    return pa.array([_format_plain(v) for v in values], type=pa.string())


def _iso_timestamps(series: pd.Series) -> pa.Array:
    utc = series.dt.tz_convert("UTC") if series.dt.tz is not None else series
    raw = utc.to_numpy(dtype="datetime64[us]")
    text = np.datetime_as_string(raw, unit="us")
    missing = pd.isna(series).to_numpy()
    arrow = pa.array(text, type=pa.string(), mask=missing if missing.any() else None)
    offset = "+00:00" if series.dt.tz is not None else ""
    return pa_compute.binary_join_element_wise(arrow, pa.scalar(offset), "")


def _csv_table(frame: pd.DataFrame) -> pa.Table:
    arrays: dict[str, pa.Array] = {}
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.DatetimeTZDtype) or series.dtype.kind == "M":
            arrays[name] = _iso_timestamps(series)
        elif series.dtype == object:
            arrays[name] = _object_as_text(series)
        else:
            arrays[name] = pa.array(series, from_pandas=True)
    return pa.table(arrays)


def _inject_malformed(body: bytes, rate: float, seed: int) -> bytes:
    lines = body.split(b"\n")
    trailing = lines[-1] == b""
    data = lines[:-1] if trailing else lines
    rows = _pick_rows(np.random.default_rng(seed), len(data), rate)
    for i in rows:
        data[i] += b",extra,fields"
    return b"\n".join(data) + (b"\n" if trailing else b"")


def _write_csv(frame: pd.DataFrame, handle: io.BufferedWriter, malformed_line_rate: float, seed: int) -> None:
    table = _csv_table(frame)
    buffer = io.BytesIO()
    try:
        # Unquoted output is the common case; fall back to quoting if a value needs it.
        pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
    except pa.ArrowInvalid:
        buffer = io.BytesIO()
        pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
    body = buffer.getvalue()
    if malformed_line_rate > 0:
        body = _inject_malformed(body, malformed_line_rate, seed)
    handle.write((",".join(frame.columns) + "\n").encode("utf-8"))
    handle.write(body)


def _write_parquet(frame: pd.DataFrame, path: Path | IO[bytes]) -> None:
    # Columns mixing numbers and "n/a" (wrong_type faults) have no Parquet type: store text.
    mixed = [name for name in frame.columns if frame[name].dtype == object]
    if mixed:
        frame = frame.copy()
        for name in mixed:
            frame[name] = _object_as_text(frame[name]).to_pandas().set_axis(frame.index)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = []
    for field in table.schema:
        if pa.types.is_timestamp(field.type):
            field = field.with_type(pa.timestamp("us", tz="UTC" if field.type.tz else None))
        elif pa.types.is_large_string(field.type):
            # pandas' str dtype maps to large_string; plain string is what most readers expect.
            field = field.with_type(pa.string())
        fields.append(field)
    pq.write_table(table.cast(pa.schema(fields, metadata=table.schema.metadata)), path)


def write_batch(
    frame: pd.DataFrame,
    path: storage.StoragePath,
    *,
    fmt: Literal["csv", "parquet"] = "csv",
    malformed_line_rate: float = 0.0,
    seed: int = 0,
) -> storage.StoragePath:
    """Write a batch to ``path`` atomically (a reader never sees half a file).

    CSV: UTF-8, header, ISO-8601 timestamps with offset, true/false, empty for missing.
    ``malformed_line_rate`` of the data lines get extra fields appended (CSV only).
    Parquet: timestamps as ``timestamp[us, tz=UTC]``.
    """
    if not 0.0 <= malformed_line_rate <= 1.0:
        raise ValueError(f"malformed_line_rate must be in [0, 1], got {malformed_line_rate}")
    if fmt == "csv":
        return storage.write_whole(path, lambda handle: _write_csv(frame, handle, malformed_line_rate, seed))
    if fmt == "parquet":
        return storage.write_whole(path, lambda handle: _write_parquet(frame, handle))
    raise ValueError(f"unknown format {fmt!r}; use 'csv' or 'parquet'")


__all__ = [
    "CHURN_NEW_REGION",
    "DEMAND_NEW_ZONE",
    "generate_batch",
    "generate_labels",
    "scenario_intensity",
    "write_batch",
]
