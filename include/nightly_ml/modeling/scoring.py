"""Batch scoring: stream an interval's warehouse rows through the champion and COPY predictions back.

Both ways the rows travel as Arrow batches over PostgreSQL's binary COPY, decoded and encoded in C++ by
the ADBC PostgreSQL driver (``adbc-driver-postgresql``): the interval leaves as a stream of typed record
batches (float64/int64 features, text categories, the key, event time and interval start in their own
types), ``chunk_rows`` rows at a time are scored (:mod:`nightly_ml.modeling.chunk_scores`: the model's
categorical branch once per distinct combination of categories), and the predictions go back as one
binary COPY into the table that becomes the interval's partition. No value is ever formatted or parsed
as text, no row is ever a Python tuple, and only one chunk is in memory at a time, so memory stays flat
however large the interval is. (Until session 7 both ways were CSV: Arrow's CSV reader and writer and
the server's CSV parser cost 2-2.5 s of CPU per 1M rows.)

The writing connection (psycopg) holds one transaction, under the predictions table's writer lock: it
exports its snapshot, which the reading connection imports, so both see the same warehouse. The
predictions stream into a fresh table on a third connection that commits it on its own (a table the
writing transaction made would be invisible to it); the writing transaction then deletes the interval's
earlier predictions and makes that table the interval's partition, so a re-run replaces them and a
failed run leaves the old ones in place (and the half-filled table, dropped by the next run or at once).
The same transaction records which version scored which load of the interval (``ops.scoring_runs``), so
:func:`score_version` leaves an interval alone that the wanted version already scored.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from threadpoolctl import threadpool_limits

from nightly_ml import db, partitions
from nightly_ml.config import settings
from nightly_ml.intervals import require_utc
from nightly_ml.modeling import chunk_scores, evaluation, moved_keys
from nightly_ml.registry import access
from nightly_ml.spec import DatasetSpec

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 50_000
# The size of the record batches the driver decodes the rows into (its default: 16 MiB). Up to four wait
# between the reading thread and the model, so they set the peak and how far it moved from run to run:
# 1M rows 104-128 MiB and 5M rows 135-140 MiB with 16 MiB batches, 74-76 and 79-81 MiB with 4 MiB, as fast.
READ_BATCH_BYTES = 4 * 2**20


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


def _predictions_schema(spec: DatasetSpec, source: pa.Schema) -> pa.Schema:
    """The predictions table's columns (dataset_tables.sql) the stream carries, as Arrow types: binary COPY
    converts nothing, so each is the column's own (the key, event time and interval start keep the
    warehouse's). The interval start only when the rows read carry it (several intervals)."""
    passed_back = [spec.key.name, spec.event_time, *(["_interval_start"] if "_interval_start" in source.names else [])]
    return pa.schema(
        [
            *(source.field(name).remove_metadata() for name in passed_back),
            pa.field("prediction", pa.float64()),
            pa.field("predicted_label", pa.int64()),
        ]
    )


def _predictions_table(spec: DatasetSpec, table: pa.Table, scores: np.ndarray, schema: pa.Schema) -> pa.Table:
    """One chunk's rows of the predictions table (its model name and version, and the interval start of a
    single interval, are the incoming table's defaults, scoring_incoming.sql)."""
    n = table.num_rows
    predicted = (
        pa.array((scores >= evaluation.DECISION_THRESHOLD).astype("int64"))
        if spec.task == "classification"
        else pa.nulls(n, pa.int64())
    )
    computed = {"prediction": pa.array(scores, pa.float64()), "predicted_label": predicted}
    return pa.Table.from_arrays(
        [computed[name] if name in computed else table.column(name) for name in schema.names], schema=schema
    )


def _identifier(qualified: Any) -> sql.Identifier:
    """A psycopg (3) identifier from the psycopg2 one :mod:`nightly_ml.db` names tables with."""
    return sql.Identifier(*qualified.strings)


def _connect(url: str | None) -> psycopg.Connection:
    conn = psycopg.connect(db.libpq_url(url or settings().require_warehouse_url()), application_name="nightly_ml")
    conn.execute("SET TIME ZONE 'UTC'")
    conn.commit()
    return conn


def _adbc_connect(url: str | None) -> Any:
    import adbc_driver_postgresql.dbapi as adbc

    conn = adbc.connect(db.libpq_url(url or settings().require_warehouse_url()), autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SET application_name = 'nightly_ml'")
    return conn


_END = object()


def _blas_threads(limit: int) -> AbstractContextManager[Any]:
    """The model's BLAS thread pools held to ``limit`` threads (0: left alone). OpenMP pools (tree ensembles)
    are left alone: they help those models even here (HistGradientBoosting 3.1 s with them, 3.8 s without)."""
    return threadpool_limits(limits=limit, user_api="blas") if limit else nullcontext()


def _read_ahead(batches: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """``batches``, fetched ahead by a thread (ADBC decodes the COPY stream while the model predicts); at
    most ``depth`` batches wait. Closing it early stops the thread."""
    inbox: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failed: list[BaseException] = []

    def fetch() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    break
                inbox.put(batch)
        except BaseException as error:  # noqa: BLE001 - re-raised by the reading thread below
            failed.append(error)
        finally:
            inbox.put(_END)

    fetcher = threading.Thread(target=fetch, name="nightly_ml-rows-fetch", daemon=True)
    fetcher.start()
    try:
        while (batch := inbox.get()) is not _END:
            yield batch
        if failed:
            raise failed[0]
    finally:
        stop.set()
        while fetcher.is_alive():  # a put blocked on a full queue needs room to finish
            with suppress(queue.Empty):
                inbox.get(timeout=0.05)
        fetcher.join()


class _Sender:
    """Record batches handed to ``send`` (which reads them as one stream) on a thread of its own: at most
    ``depth`` wait. :meth:`put` raises the thread's error once it has one; :meth:`finish` ends the stream,
    waits for ``send`` and returns its error, if any."""

    def __init__(self, schema: pa.Schema, send: Any, depth: int = 2) -> None:
        self._queue: queue.Queue[pa.RecordBatch | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(schema, send), name="nightly_ml-send", daemon=True)
        self._thread.start()

    def _stream(self) -> Iterator[pa.RecordBatch]:
        while (batch := self._queue.get()) is not None:
            yield batch

    def _run(self, schema: pa.Schema, send: Any) -> None:
        try:
            send(pa.RecordBatchReader.from_batches(schema, self._stream()))
        except BaseException as error:  # noqa: BLE001 - handed to the caller by put() and finish()
            self._error = error
            while self._queue.get() is not None:  # never leave the caller blocked on a full queue
                pass

    def put(self, batch: pa.RecordBatch) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def finish(self) -> BaseException | None:
        self._queue.put(None)
        self._thread.join()
        return self._error


def _stream_predictions(
    spec: DatasetSpec,
    model: Any,
    model_version: str,
    url: str | None,
    snapshot: str,
    select: str,
    incoming: str,
    predictions: sql.Identifier,
    chunk_rows: int,
    bound: datetime | None,
) -> tuple[int, list[datetime]]:
    """Read ``select`` in the writer's ``snapshot``, predict chunk by chunk and COPY the predictions into
    the table ``incoming`` (made afresh like ``predictions``, checking ``bound`` if the rows have one interval,
    and committed, for the writer to attach); the row count and the intervals the rows came from (noted on
    the way: no scan of the table after). On failure the half-filled table is dropped."""
    total = 0
    starts: set[datetime] = set()
    scorer = chunk_scores.scorer(spec, model)
    reader, sink = _adbc_connect(url), _adbc_connect(url)
    try:
        with reader.cursor() as source, sink.cursor() as target:
            incoming_table = {
                "incoming": partitions.table(incoming),
                "bound_check": partitions.bound_check(bound),
                "interval_default": partitions.interval_default(bound),
                "model_name": sql.Literal(spec.registered_model_name),
                "model_version": sql.Literal(model_version),
            }
            partitions.execute(target, "scoring_incoming.sql", predictions=predictions, **incoming_table)
            source.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            source.execute(f"SET TRANSACTION SNAPSHOT {sql.Literal(snapshot).as_string(None)}")
            source.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(READ_BATCH_BYTES)})
            source.execute(select)
            rows = source.fetch_record_batch()
            schema = _predictions_schema(spec, rows.schema)

            # The rows are read ahead and the predictions sent on threads of their own, so that decoding and
            # sending (and the server's two COPYs) overlap the model's work; two batches in flight each way.
            sender = _Sender(
                schema,
                lambda stream: target.adbc_ingest(incoming, stream, mode="append", db_schema_name=partitions.SCHEMA),
            )
            try:
                with closing(_read_ahead(rows)) as batches, _blas_threads(settings().scoring_blas_threads):
                    for chunk in _chunks(batches, chunk_rows):
                        scores = chunk_scores.scores(scorer, chunk)
                        for batch in _predictions_table(spec, chunk, scores, schema).to_batches():
                            sender.put(batch)
                        total += chunk.num_rows
                        if bound is None:
                            starts.update(pc.unique(chunk.column("_interval_start")).to_pylist())
            except BaseException:
                sender.finish()
                partitions.execute(target, "partition_incoming_drop.sql", incoming=partitions.table(incoming))
                raise
            if (error := sender.finish()) is not None:
                partitions.execute(target, "partition_incoming_drop.sql", incoming=partitions.table(incoming))
                raise error
            source.execute("COMMIT")
    finally:
        reader.close()
        sink.close()
    if bound is not None and total:
        starts.add(bound)  # every row is of it: the stream does not carry it
    return total, sorted(starts)


def _rows_select(spec: DatasetSpec, start: datetime, end: datetime, one_interval: bool) -> str:
    """The rows to score: the key and event time (passed back with the scores), the interval start unless the
    rows are of one interval (then it is the incoming table's default: a timestamp fewer to send, decode, encode
    and receive per row, 1M rows 1.52-1.57 s -> 1.36-1.48 s), and the features in their own types (booleans
    too: a byte each, where a cast to text cost the server a string per row)."""
    passed_back = [spec.key.name, spec.event_time, *([] if one_interval else ["_interval_start"])]
    features = [sql.Identifier(c.name) for c in spec.features]
    # ADBC streams a query as a binary COPY only when it has no parameters (with parameters it buffers the
    # whole result: 400 MiB at 1M rows), and COPY takes none: the bounds are literals, quoted by psycopg.
    return partitions.statement(
        "scoring_rows.sql",
        columns=sql.SQL(", ").join([*(sql.Identifier(c) for c in passed_back), *features]),
        warehouse=_identifier(db.warehouse_table(spec)),
        start=sql.Literal(start),
        end=sql.Literal(end),
    )


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
    predictions = _identifier(db.predictions_table(spec))
    predictions_name = db.predictions_table_name(spec)
    incoming = f"{predictions_name}__incoming"
    writer = _connect(url)
    try:
        with writer.transaction():
            partitions.lock_writer(writer, predictions_name)
            # The load the record names is read before the rows' snapshot is taken: a merge committing in
            # between makes the record name an older load than the one scored (so it is scored again and its
            # partition read for moved keys), never a newer one.
            load = writer.execute(db.load_sql("scoring_load.sql"), {"dataset": spec.name, "start": start}).fetchone()
            bound = start if partitions.only_interval(writer, spec.warehouse_table, start, end) else None
            select = _rows_select(spec, start, end, one_interval=bound is not None)
            snapshot = writer.execute("SELECT pg_export_snapshot()").fetchone()[0]
            streamed = (spec, model, model_version, url, snapshot, select, incoming, predictions, chunk_rows, bound)
            total, starts = _stream_predictions(*streamed)
            # The intervals' earlier predictions go with their partitions; a key they hold now that was
            # scored under another interval (a row re-delivered later) loses its old prediction.
            moved = moved_keys.clear_moved_predictions(writer, spec, start, end)
            partitions.remove_range(writer, predictions_name, start, end)
            partitions.attach_incoming(writer, predictions_name, incoming, starts, "scoring_partition_ready.sql")
            writer.execute(
                sql.SQL(db.load_sql("scoring_record.sql")),
                {"dataset": spec.name, "start": start, "end": end, "model_version": model_version, "rows": total}
                | {"load_finished_at": load[0] if load else None},
            )
    finally:
        writer.close()
    log.info(
        "%s: scored %d row(s) of [%s, %s) with version %s; %d earlier prediction(s) of keys that moved here "
        "removed from %d partition(s) that could hold them",
        spec.name,
        total,
        start,
        end,
        model_version,
        moved.removed,
        len(moved.partitions_read),
    )
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
