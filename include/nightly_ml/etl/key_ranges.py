"""Which stored intervals a batch's keys are looked up in: those whose key range meets the batch's.

A key must not be stored under another interval (the ``key_in_other_interval`` rule), so validation looked
every batch key up in every stored interval, and a night cost more the more history the warehouse held
(8.4M stored rows: a 1M-row validation took 2x as long). Keys often grow with time (a sequence, a
time-ordered id, the simulator's ``<dataset>-<interval>-<n>``): then another night's keys all lie outside
the batch's range, which two probes of a partition's primary key show, and its partition is not read.
Keys without order (random UUIDs) meet every range, and every partition is read, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.spec import DatasetSpec


@dataclass(frozen=True)
class KeyLookup:
    stored: sql.Composable  # what the batch's keys are joined to (a key and _interval_start per stored row)
    seen: list[int]  # the warehouse's partitions (oids) as they were when their key ranges were read
    read: list[str]  # the partitions the keys are looked up in
    skipped: list[str]  # partitions whose key range the batch's misses (or with no rows)


def key_lookup(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    staging: sql.Composable,
    typed_key: sql.Composable,
    start: datetime,
) -> KeyLookup:
    """The stored rows the keys of the batch in ``staging`` (typed by ``typed_key``) must be looked up in, for
    the interval starting at ``start``: every other interval's partition (within ``key_lookback_days``) and
    the DEFAULT one, less those whose key range the batch's does not meet. When none is left out, the
    warehouse table itself, so the planner sees the lookup as it always did."""
    warehouse = db.warehouse_table(spec)
    days = spec.validation.key_lookback_days
    lookback_start = None if days is None else start - timedelta(days=days)
    with conn.cursor() as cur:
        cur.execute(db.load_sql("validation_key_partitions.sql"), {"warehouse": warehouse.as_string(cur)})
        partitions = cur.fetchall()
        seen = [int(oid) for oid, *_ in partitions]
        candidates = [
            (schema, name)
            for _, schema, name, interval_start in partitions
            if interval_start is None
            or (interval_start != start and (lookback_start is None or interval_start >= lookback_start))
        ]
        meeting: set[tuple[str, str]] = set()
        if candidates:
            # the partitions with rows first (two probes each): an empty warehouse costs no scan of the batch
            cur.execute(
                sql.SQL("SELECT nspname, relname FROM ({}) AS r WHERE lo IS NOT NULL").format(_ranges(spec, candidates))
            )
            filled = [(schema, name) for schema, name in cur.fetchall()]
            if filled:
                cur.execute(db.load_sql("warehouse_columns.sql"), {"table": warehouse.as_string(cur)})
                collation = next(c for name, _, _, c in cur.fetchall() if name == spec.key.name)
                cur.execute(_meeting_statement(spec, staging, typed_key, filled, collation))
                meeting = {(schema, name) for schema, name in cur.fetchall()}
    read = [f"{s}.{n}" for s, n in candidates if (s, n) in meeting]
    skipped = [f"{s}.{n}" for s, n in candidates if (s, n) not in meeting]
    if not read:
        return KeyLookup(_no_rows(spec, warehouse), seen, read, skipped)
    if not skipped:
        return KeyLookup(warehouse, seen, read, skipped)
    key = sql.Identifier(spec.key.name)
    stored = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {key}, _interval_start FROM {partition}").format(key=key, partition=sql.Identifier(s, n))
        for s, n in candidates
        if (s, n) in meeting
    )
    return KeyLookup(sql.SQL("({})").format(stored), seen, read, skipped)


def _no_rows(spec: DatasetSpec, warehouse: sql.Composable) -> sql.Composable:
    return sql.SQL("(SELECT w.{key}, w._interval_start FROM {warehouse} AS w WHERE false)").format(
        key=sql.Identifier(spec.key.name), warehouse=warehouse
    )


def _meeting_statement(
    spec: DatasetSpec,
    staging: sql.Composable,
    typed_key: sql.Composable,
    candidates: list[tuple[str, str]],
    collation: str | None,
) -> sql.Composable:
    """(schema, name) of the candidates whose smallest and largest keys bound a range that meets the batch's,
    both ordered by the warehouse key's collation."""
    batch_key = sql.SQL("{} COLLATE {}").format(typed_key, sql.SQL(collation)) if collation else typed_key
    ranges = _ranges(spec, candidates)
    return db.compose("validation_key_ranges.sql", ranges=ranges, batch_key=batch_key, staging=staging)


def _ranges(spec: DatasetSpec, partitions: list[tuple[str, str]]) -> sql.Composable:
    """Each partition's smallest and largest key (``lo``, ``hi``; NULL without rows): two probes of its primary
    key, in the key's collation."""
    key = sql.Identifier(spec.key.name)
    return sql.SQL(" UNION ALL ").join(
        sql.SQL(
            "SELECT {schema} AS nspname, {name} AS relname, "
            "(SELECT {key} FROM {partition} ORDER BY {key} LIMIT 1) AS lo, "
            "(SELECT {key} FROM {partition} ORDER BY {key} DESC LIMIT 1) AS hi"
        ).format(schema=sql.Literal(s), name=sql.Literal(n), key=key, partition=sql.Identifier(s, n))
        for s, n in partitions
    )
