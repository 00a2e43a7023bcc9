"""Batch scoring: stream an interval's warehouse rows through the champion and COPY predictions back.

The interval leaves PostgreSQL as one ``COPY (SELECT ...) TO STDOUT`` in CSV, which Arrow's
streaming CSV reader parses (in C++, typed: float64 features, text categories) into record
batches; ``chunk_rows`` rows at a time become the model's input frame, and each chunk's
predictions go back through one ``COPY ... FROM STDIN`` into the predictions table, written by
Arrow's CSV writer. Only one chunk is in memory at a time, so memory stays flat however large
the interval is, and no row is ever a Python tuple.

The writing connection holds one transaction that first deletes the interval's earlier
predictions: a re-run replaces them, and a failed run leaves the old ones in place. The reading
connection imports the writer's snapshot, so both see the same warehouse. The same transaction
records which version scored which load of the interval (``ops.scoring_runs``), so
:func:`score_version` leaves an interval alone that the wanted version already scored.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

from nightly_ml import db, partitions
from nightly_ml.config import settings
from nightly_ml.intervals import require_utc
from nightly_ml.modeling import evaluation
from nightly_ml.registry import access
from nightly_ml.spec import DatasetSpec

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 50_000
# Arrow parses the CSV stream in blocks of this many bytes (~10k rows of a 10-feature table); bigger blocks
# (4 MiB) raised the task's peak by ~60 MiB for no measurable speed.
READ_BLOCK_BYTES = 1 << 20
# Leading columns of every copied row, before the features: key, event time, interval start.
_KEY, _EVENT_TIME, _INTERVAL = "_key", "_event_time", "_interval_start"


@dataclass(frozen=True)
class ScoreResult:
    rows: int
    model_version: str | None
    skipped_reason: str | None = None
    # the interval already held this version's predictions of its current load: nothing was re-scored
    reused: bool = False

    @property
    def skipped(self) -> bool:
        return self.skipped_reason is not None


# --------------------------------------------------------------------------- the stream


class _CopyReader(io.RawIOBase):
    """A read-only file over a ``COPY ... TO STDOUT`` (one row per message) for Arrow's CSV reader."""

    def __init__(self, copy: psycopg.Copy) -> None:
        self._rows = iter(copy)
        self._buffer = bytearray()

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        wanted = len(target)
        while len(self._buffer) < wanted:
            row = next(self._rows, None)
            if row is None:
                break
            self._buffer += row
        n = min(wanted, len(self._buffer))
        target[:n] = self._buffer[:n]
        del self._buffer[:n]
        return n


def _column_types(spec: DatasetSpec) -> dict[str, pa.DataType]:
    types: dict[str, pa.DataType] = {_KEY: pa.string(), _EVENT_TIME: pa.string(), _INTERVAL: pa.string()}
    for column in spec.features:
        types[column.name] = pa.float64() if column.is_numeric else pa.string()
    return types


def _chunks(batches: Iterator[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.Table]:
    """Re-cut Arrow's byte-sized record batches into tables of exactly ``chunk_rows`` rows (the last: fewer)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)


def feature_frame(spec: DatasetSpec, table: pa.Table) -> pd.DataFrame:
    """The model's input from a typed Arrow chunk, equal to :func:`frames.feature_frame` of the same rows:
    numeric features float64 (NaN = missing), categories and booleans ('true'/'false') as strings in
    object columns (NaN = missing)."""
    out: dict[str, Any] = {}
    for column in spec.features:
        values = table.column(column.name)
        if column.is_numeric:
            out[column.name] = values.to_numpy().astype("float64", copy=False)
        else:
            objects = values.to_numpy(zero_copy_only=False).astype(object)
            if values.null_count:
                objects[values.is_null().to_numpy(zero_copy_only=False)] = np.nan
            out[column.name] = pd.Series(objects, dtype=object)
    return pd.DataFrame(out)


def _predictions_csv(spec: DatasetSpec, table: pa.Table, scores: np.ndarray, name: str, version: str) -> bytes:
    """One chunk's rows for the predictions table's COPY, in :func:`_copy_columns` order."""
    n = table.num_rows
    columns = [table.column(_KEY), table.column(_EVENT_TIME), table.column(_INTERVAL), pa.array(scores, pa.float64())]
    if spec.task == "classification":
        columns.append(pa.array((scores >= evaluation.DECISION_THRESHOLD).astype("int64")))
    # pa.repeat fills the constant columns in C++: an object array of n Python strings cost 0.35 s per 1M rows
    # and column.
    columns += [pa.repeat(pa.scalar(name, pa.string()), n), pa.repeat(pa.scalar(version, pa.string()), n)]
    sink = io.BytesIO()
    names = [str(i) for i in range(len(columns))]
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    pa_csv.write_csv(pa.Table.from_arrays(columns, names=names), sink, options)
    return sink.getvalue()


def _copy_columns(spec: DatasetSpec) -> list[str]:
    scored = ["prediction", "predicted_label"] if spec.task == "classification" else ["prediction"]
    return [spec.key.name, spec.event_time, "_interval_start", *scored, "model_name", "model_version"]


def _identifier(qualified: Any) -> sql.Identifier:
    """A psycopg (3) identifier from the psycopg2 one :mod:`nightly_ml.db` names tables with."""
    return sql.Identifier(*qualified.strings)


def _connect(url: str | None) -> psycopg.Connection:
    conn = psycopg.connect(db.libpq_url(url or settings().require_warehouse_url()), application_name="nightly_ml")
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("SET extra_float_digits = 3")  # every float8 leaves as its exact shortest text
    conn.commit()
    return conn


def write_predictions(
    spec: DatasetSpec,
    model: Any,
    model_version: str,
    start: datetime,
    end: datetime,
    url: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> int:
    """Score the rows of the intervals starting in ``[start, end)`` with ``model``; returns the row count."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    start, end = require_utc(start), require_utc(end)
    if end <= start:
        raise ValueError(f"empty interval: start {start} is not before end {end}")
    model_version = str(model_version)
    warehouse, predictions = _identifier(db.warehouse_table(spec)), _identifier(db.predictions_table(spec))
    selected = [
        sql.SQL("CAST({} AS text)").format(sql.Identifier(c.name)) if c.type == "boolean" else sql.Identifier(c.name)
        for c in spec.features
    ]
    key_time = [sql.Identifier(c) for c in (spec.key.name, spec.event_time, "_interval_start")]
    select = partitions.compose(
        "scoring_rows.sql", columns=sql.SQL(", ").join([*key_time, *selected]), warehouse=warehouse
    )
    types = _column_types(spec)
    read_options = pa_csv.ReadOptions(column_names=list(types), skip_rows=1, block_size=READ_BLOCK_BYTES)
    convert_options = pa_csv.ConvertOptions(
        column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    bounds = {"start": start, "end": end}
    total = 0
    predictions_name = db.predictions_table_name(spec)
    incoming = f"{predictions_name}__incoming"
    writer = _connect(url)
    reader = _connect(url)
    try:
        with writer.transaction():
            partitions.lock_writer(writer, predictions_name)
            # The intervals' earlier predictions go with their partitions; a key they hold now that was
            # scored under another interval (a row re-delivered later) loses its old prediction.
            writer.execute(
                partitions.compose(
                    "scoring_clear_moved.sql", predictions=predictions, warehouse=warehouse, key=spec.key.name
                ),
                bounds,
            )
            partitions.remove_range(writer, predictions_name, start, end)
            writer.execute(
                partitions.compose("scoring_incoming.sql", incoming=partitions.table(incoming), predictions=predictions)
            )
            snapshot = writer.execute("SELECT pg_export_snapshot()").fetchone()[0]
            reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            reader.read_only = True
            copy_back = partitions.compose(
                "scoring_copy.sql",
                incoming=partitions.table(incoming),
                columns=sql.SQL(", ").join(sql.Identifier(c) for c in _copy_columns(spec)),
            )
            with reader.transaction(), reader.cursor() as source, writer.cursor() as target:
                source.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
                with source.copy(select, bounds) as rows, target.copy(copy_back) as sink:
                    stream = pa_csv.open_csv(
                        io.BufferedReader(_CopyReader(rows), READ_BLOCK_BYTES),
                        read_options=read_options,
                        convert_options=convert_options,
                    )
                    for chunk in _chunks(iter(stream), chunk_rows):
                        scores = evaluation.predict_scores(spec, model, feature_frame(spec, chunk))
                        scores = np.asarray(scores, dtype="float64")
                        sink.write(_predictions_csv(spec, chunk, scores, spec.registered_model_name, model_version))
                        total += chunk.num_rows
            partitions.attach_incoming(writer, predictions_name, incoming, "scoring_partition_ready.sql")
            writer.execute(
                sql.SQL(db.load_sql("scoring_record.sql")),
                {"dataset": spec.name, "start": start, "end": end, "model_version": model_version, "rows": total},
            )
    finally:
        reader.close()
        writer.close()
    log.info("%s: scored %d row(s) of [%s, %s) with version %s", spec.name, total, start, end, model_version)
    return total


def score_interval(
    spec: DatasetSpec,
    start: datetime,
    end: datetime,
    url: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ScoreResult:
    """Score one interval with the champion; skipped (with the reason) when there is none yet."""
    start, end = require_utc(start), require_utc(end)
    loaded = access.load_champion_model(spec)
    if loaded is None:
        reason = (
            f"no champion: registered model {spec.registered_model_name!r} has no version with alias "
            f"'{access.ALIAS_CHAMPION}' yet, so {spec.name} [{start}, {end}) was not scored; "
            "train and promote a model first"
        )
        log.warning(reason)
        return ScoreResult(rows=0, model_version=None, skipped_reason=reason)
    version, model = loaded
    rows = write_predictions(spec, model, version, start, end, url=url, chunk_rows=chunk_rows)
    return ScoreResult(rows=rows, model_version=version)


def already_scored(
    spec: DatasetSpec, version: str, start: datetime, end: datetime, url: str | None = None
) -> int | None:
    """The row count when ``version`` already scored the interval's current load completely, else ``None``."""
    query = db.compose("scoring_state.sql", predictions=db.predictions_table(spec))
    params = {"dataset": spec.name, "start": require_utc(start), "end": require_utc(end), "model_version": str(version)}
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone()
    return None if row is None else int(row[0])


def score_version(
    spec: DatasetSpec,
    version: str,
    start: datetime,
    end: datetime,
    url: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ScoreResult:
    """Score one interval with a given registered version (the champion of the interval's night), unless that
    version already scored the interval's current load: then nothing is loaded or written (``reused``)."""
    start, end = require_utc(start), require_utc(end)
    version = str(version)
    done = already_scored(spec, version, start, end, url)
    if done is not None:
        log.info(
            "%s: [%s, %s) already scored by version %s (%d rows); not re-scored", spec.name, start, end, version, done
        )
        return ScoreResult(rows=done, model_version=version, reused=True)
    model = access.load_model(spec, version)
    rows = write_predictions(spec, model, version, start, end, url=url, chunk_rows=chunk_rows)
    return ScoreResult(rows=rows, model_version=version)


def scored_versions(spec: DatasetSpec, start: datetime, end: datetime, url: str | None = None) -> dict[str, int]:
    """The model versions the interval's stored predictions came from, with their row counts, most rows first."""
    query = db.compose("scoring_versions.sql", predictions=db.predictions_table(spec))
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(query, {"start": require_utc(start), "end": require_utc(end)})
        return {str(version): int(rows) for version, rows in cur.fetchall()}
