"""Batch scoring: stream an interval's warehouse rows through the champion and COPY predictions back.

Rows come from a server-side cursor ``chunk_rows`` at a time and each chunk's predictions
go straight back with ``COPY ... FROM STDIN``, so memory stays flat however large the
interval is. Everything happens in one transaction that first deletes the interval's earlier
predictions: a re-run replaces them, and a failed run leaves the old ones in place. The same transaction
records which version scored which load of the interval (``ops.scoring_runs``), so :func:`score_version`
leaves an interval alone that the wanted version already scored.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.intervals import require_utc
from nightly_ml.modeling import evaluation, frames
from nightly_ml.registry import access
from nightly_ml.spec import DatasetSpec

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 50_000
# Leading columns of every fetched row, before the features.


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


def _chunk_csv(spec: DatasetSpec, rows: list[tuple[Any, ...]], scores: list[float]) -> io.StringIO:
    """CSV for COPY into the temporary ``scored`` table: key (quoted: an empty key is not NULL), score, label."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    keys = [row[0] for row in rows]
    if spec.task == "classification":
        labels = [int(score >= evaluation.DECISION_THRESHOLD) for score in scores]
        writer.writerows(zip(keys, scores, labels, strict=True))
    else:
        writer.writerows(zip(keys, scores, strict=True))
    buffer.seek(0)
    return buffer


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
    features = [f.name for f in spec.features]
    select = db.compose(
        "scoring_rows.sql",
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in (spec.key.name, *features)),
        warehouse=db.warehouse_table(spec),
    )
    clear = db.compose(
        "scoring_clear.sql",
        predictions=db.predictions_table(spec),
        warehouse=db.warehouse_table(spec),
        key=spec.key.name,
    )
    scored_columns = ["prediction", "predicted_label"] if spec.task == "classification" else ["prediction"]
    copy = sql.SQL("COPY scored ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in (spec.key.name, *scored_columns))
    )
    identifiers = {"key": spec.key.name, "predictions": db.predictions_table(spec)}
    bounds = {"start": start, "end": end}
    total = 0
    with db.transaction(url) as conn:
        with conn.cursor() as cur:
            cur.execute(db.compose("scoring_copy.sql", key_type=sql.SQL(db.key_pg_type(spec)), **identifiers))
        copy_statement = copy.as_string(conn)
        with conn.cursor(name=f"scoring_{spec.name}") as reader, conn.cursor() as writer:
            reader.itersize = chunk_rows
            reader.execute(select, bounds)
            while rows := reader.fetchmany(chunk_rows):
                frame = pd.DataFrame.from_records([row[1:] for row in rows], columns=features)
                scores = evaluation.predict_scores(spec, model, frames.feature_frame(spec, frame)).tolist()
                writer.copy_expert(copy_statement, _chunk_csv(spec, rows, scores))
                total += len(rows)
        with conn.cursor() as cur:
            cur.execute(clear, bounds)
            cur.execute(
                db.compose(
                    "scoring_publish.sql", event_time=spec.event_time, warehouse=db.warehouse_table(spec), **identifiers
                ),
                {"model_name": spec.registered_model_name, "model_version": model_version},
            )
            cur.execute(
                db.load_sql("scoring_record.sql"),
                {"dataset": spec.name, "start": start, "end": end, "model_version": model_version, "rows": total},
            )
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
