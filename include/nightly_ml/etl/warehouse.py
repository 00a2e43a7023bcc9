"""Merge: move an interval's good rows from staging into the warehouse, in one transaction.

The interval's rows are replaced as a whole: the batch becomes a new partition of the warehouse, built and
indexed on its own and swapped in for the interval's old one (nightly_ml.partitions), so re-running
any interval leaves the warehouse as one run would. Labels
that arrived late for a row are kept across re-runs of the row's interval; late labels
themselves are upserted by key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db, partitions
from nightly_ml.errors import KeyElsewhere, StagingLost
from nightly_ml.etl.staging import StageResult, interval_tables
from nightly_ml.etl.typed_tables import (
    bad_rows_table,
    key_lookback,
    seen_partitions_table,
    typed_expression,
    typed_table,
    value_column,
)
from nightly_ml.intervals import partition_name
from nightly_ml.spec import DatasetSpec

MERGE_MAINTENANCE_MEMORY = "256MB"


@dataclass(frozen=True)
class MergeResult:
    rows_merged: int
    rows_deleted: int
    labels_in: int
    labels_applied: int
    checksum: str | None
    interval_rows: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require_staged_rows(spec: DatasetSpec, stage: StageResult, start: datetime, good_rows: int, bad_rows: int) -> None:
    """The typed staging table still held every row staged and validated: its good rows (those the new
    partition took) and its bad ones."""
    present = good_rows + bad_rows
    if present != stage.rows_staged:
        raise StagingLost(
            f"{spec.name} {partition_name(spec, start)}: the staging table {typed_table(stage)} holds {present} rows "
            f"but {stage.rows_staged} were staged and validated; they were lost (a database crash empties unlogged "
            "staging tables). Nothing was merged. Clear this ingest run from its `stage` task to load the "
            "interval again."
        )


def partition_columns(spec: DatasetSpec, parent_columns: list[tuple[str, str, bool, str | None]]) -> sql.Composable:
    """The select list of an interval's new partition (merge_interval.sql): every column of the warehouse
    table, in its order and cast to its type and collation (``parent_columns``: name, type, NOT NULL and
    collation, as warehouse_columns.sql reads them). An input column takes the batch's typed value (the label the
    one stored before when the batch has none), a column the spec no longer has stays NULL."""
    label_value = sql.Identifier(value_column(spec.label.name))
    inputs = set(spec.input_columns)
    meta = {
        "_interval_start": sql.SQL("%(start)s"),
        "_interval_end": sql.SQL("%(end)s"),
        "_label_interval_start": sql.SQL("CASE WHEN v.{} IS NULL THEN k._label_start END").format(label_value),
        "_row_hash": sql.SQL("v._row_hash"),
    }

    def value(name: str) -> sql.Composable:
        if name == spec.label.name:
            return sql.SQL("COALESCE(v.{}, k._label)").format(label_value)
        if name in inputs:
            return sql.SQL("v.{}").format(sql.Identifier(value_column(name)))
        return meta.get(name, sql.SQL("NULL"))

    def collate(collation: str | None) -> sql.Composable:
        return sql.SQL(" COLLATE {}").format(sql.SQL(collation)) if collation else sql.SQL("")

    return sql.SQL(", ").join(
        sql.SQL("CAST({} AS {}){} AS {}").format(
            value(name), sql.SQL(pg_type), collate(collation), sql.Identifier(name)
        )
        for name, pg_type, _, collation in parent_columns
    )


def autovacuum_analyzes(conn: psycopg2.extensions.connection) -> bool:
    """Whether autovacuum will analyze a new partition of the warehouse (it runs, and counts the rows changed)."""
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('autovacuum')::bool AND current_setting('track_counts')::bool")
        return bool(cur.fetchone()[0])


def analyzed_columns(conn: psycopg2.extensions.connection, spec: DatasetSpec) -> sql.Composable:
    """The columns the merge analyzes (merge_interval.sql): those the night's later statements filter and join
    on when autovacuum analyzes the rest soon after, else (autovacuum off) every column."""
    if not autovacuum_analyzes(conn):
        return sql.SQL("")
    names = (spec.key.name, "_interval_start", spec.event_time, spec.label.name, "_label_interval_start")
    return sql.SQL(" ({})").format(sql.SQL(", ").join(map(sql.Identifier, names)))


def unseen_partitions(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, stage: StageResult
) -> list[tuple[str, str]] | None:
    """(schema, table) of the warehouse partitions the batch's validation did not look its keys up in
    (merge_unseen_partitions.sql): attached or replaced since, and the default partition. ``None`` when
    validation left no list (a batch validated by an earlier version): then every partition counts."""
    seen = sql.Identifier("staging", seen_partitions_table(stage))
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (seen.as_string(cur),))
        if not cur.fetchone()[0]:
            return None
        table = db.warehouse_table(spec).as_string(cur)
        cur.execute(db.compose("merge_unseen_partitions.sql", seen=seen), {"table": table})
        return [(schema, name) for schema, name in cur.fetchall()]


def stored_since_validation(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, stage: StageResult
) -> sql.Composable:
    """The warehouse rows (key, interval) the merge must still look the batch's keys up in: those of
    :func:`unseen_partitions`, usually none but the (empty) default partition."""
    warehouse = db.warehouse_table(spec)
    key = sql.Identifier(spec.key.name)
    unseen = unseen_partitions(conn, spec, stage)
    if unseen is None:
        return warehouse
    if not unseen:
        return sql.SQL("(SELECT w.{key}, w._interval_start FROM {warehouse} AS w WHERE false)").format(
            key=key, warehouse=warehouse
        )
    return sql.SQL("({})").format(
        sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {key}, _interval_start FROM {partition}").format(
                key=key, partition=sql.Identifier(schema, name)
            )
            for schema, name in unseen
        )
    )


def merge_interval(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    stage: StageResult,
    start: datetime,
    end: datetime,
    run_id: str,
) -> MergeResult:
    """Replace the interval's rows with the batch's good rows. The caller commits.

    Raises :class:`~nightly_ml.errors.StagingLost` when the typed staging table no longer holds the rows that
    were staged and validated: staging tables are unlogged, and a database crash between validate and merge
    empties them; merging then would silently replace the interval with nothing."""
    partitions.lock_writer(conn, spec.warehouse_table)
    names = partitions.warehouse_partition(spec, start)
    with conn.cursor() as cur:
        cur.execute(db.load_sql("warehouse_columns.sql"), {"table": db.warehouse_table(spec).as_string(cur)})
        parent_columns = cur.fetchall()
    statement = db.compose(
        "merge_interval.sql",
        warehouse=db.warehouse_table(spec),
        building=db.table("warehouse", names.building),
        typed=sql.Identifier("staging", typed_table(stage)),
        bad=sql.Identifier("staging", bad_rows_table(stage)),
        bound_check=partitions.BOUND_CHECK,
        key=spec.key.name,
        key_value=value_column(spec.key.name),
        label=spec.label.name,
        event_time=spec.event_time,
        columns=partition_columns(spec, parent_columns),
        stored_since_validation=stored_since_validation(conn, spec, stage),
        key_lookback=key_lookback(spec, start),
        hash_values=sql.SQL(", ").join(
            sql.SQL("v.{}").format(sql.Identifier(value_column(c))) for c in spec.input_columns
        ),
        analyzed=analyzed_columns(conn, spec),
        not_null=sql.SQL(", ").join(
            sql.SQL("ALTER COLUMN {} SET NOT NULL").format(sql.Identifier(name))
            for name, _, not_null, _ in parent_columns
            if not_null
        ),
    )
    with conn.cursor() as cur:
        # The partition's indexes are sorted in memory (a million keys need more than the default 64MB).
        cur.execute("SELECT set_config('maintenance_work_mem', %s, true)", (MERGE_MAINTENANCE_MEMORY,))
        cur.execute(statement, {"start": start, "end": end})
        merged, checksum, deleted, elsewhere, bad_rows = cur.fetchone()
    _require_staged_rows(spec, stage, start, int(merged), int(bad_rows))
    if elsewhere:
        raise KeyElsewhere(
            f"{spec.name} {partition_name(spec, start)}: key(s) {', '.join(elsewhere)} of the batch were stored "
            "under another interval after this batch was validated (a run of that interval merged them "
            "meanwhile). Nothing was merged. Clear this ingest run from its `validate` task: validation will "
            "quarantine those rows."
        )
    partitions.swap_in(conn, start, names)
    labels_in, labels_applied = (
        apply_late_labels(conn, spec, stage, start, end, run_id) if stage.labels_table else (0, 0)
    )
    return MergeResult(int(merged), int(deleted), labels_in, labels_applied, checksum, int(merged))


def apply_late_labels(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    stage: StageResult,
    start: datetime,
    end: datetime,
    run_id: str = "",
) -> tuple[int, int]:
    """Upsert late labels by key onto earlier rows; unusable labels go to quarantine."""
    labels = sql.Identifier("staging", stage.labels_table or "")
    key_kind = "integer" if spec.key.type == "integer" else "string"
    label_value = typed_expression(spec.label.name, spec.label.type)
    range_checks = []
    if spec.label.min is not None:
        range_checks.append(sql.SQL("t.label_value >= {}").format(sql.Literal(spec.label.min)))
    if spec.label.max is not None:
        range_checks.append(sql.SQL("t.label_value <= {}").format(sql.Literal(spec.label.max)))
    statement = db.compose(
        "labels_apply.sql",
        labels=labels,
        warehouse=db.warehouse_table(spec),
        key=spec.key.name,
        label=spec.label.name,
        key_value=typed_expression(spec.key.name, key_kind),
        label_value=label_value,
        in_range=sql.SQL(" AND ").join(range_checks) if range_checks else sql.SQL("true"),
    )
    with conn.cursor() as cur:
        cur.execute(statement, {"dataset": spec.name, "start": start, "end": end, "run_id": run_id})
        labels_in, applied = cur.fetchone()
    return int(labels_in), int(applied)


def record_audit(
    conn: psycopg2.extensions.connection,
    *,
    spec: DatasetSpec,
    start: datetime,
    end: datetime,
    run_id: str,
    status: str,
    rows_in: int,
    rows_merged: int,
    rows_quarantined: int,
    labels_in: int = 0,
    labels_applied: int = 0,
    checksum: str | None = None,
    reason: str | None = None,
    files: list[dict[str, Any]] | None = None,
    data_docs_url: str | None = None,
    soft_failures: list[str] | None = None,
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            db.load_sql("audit_upsert.sql"),
            {
                "dataset": spec.name,
                "start": start,
                "end": end,
                "run_id": run_id,
                "status": status,
                "rows_in": rows_in,
                "rows_merged": rows_merged,
                "rows_quarantined": rows_quarantined,
                "labels_in": labels_in,
                "labels_applied": labels_applied,
                "checksum": checksum,
                "reason": reason,
                "files": json.dumps(files or []),
                "data_docs_url": data_docs_url,
                "soft_failures": json.dumps(soft_failures or []),
            },
        )


def drop_staging(conn: psycopg2.extensions.connection, stage_table: str) -> None:
    """Drop an interval's staging tables (safe to call twice)."""
    with conn.cursor() as cur:
        for name in interval_tables(stage_table):
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier("staging", name)))
