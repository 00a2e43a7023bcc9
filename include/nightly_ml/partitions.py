"""The partitions of a dataset's warehouse and predictions tables: one per data interval, named after the
interval's start (UTC).

A writer builds the interval's partition as a table of its own and indexes it in bulk (far cheaper than
maintaining the indexes row by row), then swaps it in: the old partition (a re-run) is detached and
dropped, rows of the interval in the DEFAULT partition are deleted, and the new one is attached.
Attaching takes a lock that lets readers go on; detaching (re-runs only) waits for them and holds new
ones until the transaction ends.

The statements are plain strings (quoted with psycopg 3's ``sql``), so the merge (psycopg2) and scoring
(psycopg 3) connections both run them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql

from nightly_ml import db
from nightly_ml.spec import DatasetSpec

MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1
BUILDING_SUFFIX = "_new"
# A CHECK of a partition-to-be's bound, made while it is built: attaching proves its rows by it instead of a scan.
BOUND_CHECK = "interval_bound"
SCHEMA = "warehouse"


@dataclass(frozen=True)
class PartitionNames:
    parent: str
    final: str
    building: str


def partition_names(parent: str, start: datetime) -> PartitionNames:
    """``churn__20260105T000000Z`` (and ``…_new`` while it is built); a long table name is shortened with
    a hash of it, so every name fits PostgreSQL's 63 bytes."""
    stamp = f"__{start.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    room = MAX_IDENTIFIER - len(stamp) - len(BUILDING_SUFFIX)
    base = parent
    if len(base.encode()) > room:
        digest = hashlib.sha1(base.encode(), usedforsecurity=False).hexdigest()[:8]
        base = base.encode()[: room - 9].decode(errors="ignore") + "_" + digest
    final = base + stamp
    return PartitionNames(parent, final, final + BUILDING_SUFFIX)


def warehouse_partition(spec: DatasetSpec, start: datetime) -> PartitionNames:
    return partition_names(spec.warehouse_table, start)


def table(name: str) -> sql.Identifier:
    return sql.Identifier(SCHEMA, name)


def compose(file: str, **identifiers: sql.Composable | str) -> sql.Composed:
    """A ``.sql`` file with its ``{placeholders}`` filled, for psycopg 3 (strings become quoted identifiers)."""
    parts = {k: v if isinstance(v, sql.Composable) else sql.Identifier(v) for k, v in identifiers.items()}
    return sql.SQL(db.load_sql(file)).format(**parts)


def statement(file: str, **identifiers: sql.Composable | str) -> str:
    """:func:`compose` as plain text, which both drivers run."""
    return compose(file, **identifiers).as_string(None)


def execute(cur: Any, file: str, params: dict[str, Any] | None = None, **identifiers: sql.Composable | str) -> None:
    """Run each statement of a ``.sql`` file in turn (psycopg 3 sends one statement per call with parameters)."""
    for part in statement(file, **identifiers).split(";\n"):
        if part.strip():
            cur.execute(part, params)


def lock_writer(conn: Any, parent: str) -> None:
    """Become the only writer of ``parent``'s partitions until this transaction ends (see the .sql file)."""
    with conn.cursor() as cur:
        cur.execute(db.load_sql("partition_writer_lock.sql"), {"parent": parent})


def partitions_in(conn: Any, parent: str, start: datetime, end: datetime) -> list[tuple[str, datetime]]:
    """(name, interval start) of the parent's partitions for intervals starting in ``[start, end)``."""
    with conn.cursor() as cur:
        cur.execute(
            db.load_sql("partitions_in_range.sql"),
            {"parent": table(parent).as_string(None), "start": start, "end": end},
        )
        return [(name, bound) for name, bound in cur.fetchall()]


def only_interval(conn: Any, parent: str, start: datetime, end: datetime) -> bool:
    """Whether every row of ``parent`` in the intervals starting in ``[start, end)`` is of the interval starting
    at ``start``: its partition is the only one in the range and DEFAULT holds none of the range's rows."""
    if [bound for _, bound in partitions_in(conn, parent, start, end)] != [start]:
        return False
    with conn.cursor() as cur:
        cur.execute(
            statement("partition_default_rows.sql", default_partition=table(db.default_partition_name(parent))),
            {"start": start, "end": end},
        )
        return not cur.fetchone()[0]


def bound_check(start: datetime | None) -> sql.Composable:
    """A table element that checks every row is of the interval starting at ``start`` (nothing for ``None``)."""
    if start is None:
        return sql.SQL("")
    return sql.SQL(", CONSTRAINT {} CHECK (_interval_start = {})").format(
        sql.Identifier(BOUND_CHECK), sql.Literal(start)
    )


def interval_default(start: datetime | None) -> sql.Composable:
    """An ALTER TABLE action (after others) making ``start`` the interval start's default (nothing for ``None``):
    rows of one interval need not carry it."""
    if start is None:
        return sql.SQL("")
    return sql.SQL(", ALTER COLUMN _interval_start SET DEFAULT {}").format(sql.Literal(start))


def swap_in(conn: Any, start: datetime, names: PartitionNames) -> None:
    """Replace the interval's stored rows with the partition built (and indexed) under ``names.building``."""
    remove_interval(conn, names.parent, start)
    with conn.cursor() as cur:
        execute(
            cur,
            "partition_attach.sql",
            bound=sql.Literal(start),  # a partition bound is part of the DDL, never a server-side parameter
            parent=table(names.parent),
            building=table(names.building),
            final_name=names.final,
            final=table(names.final),
            bound_check=BOUND_CHECK,
        )


def remove_interval(conn: Any, parent: str, start: datetime) -> None:
    """Remove one interval's rows from a partitioned table."""
    remove_range(conn, parent, start, start + timedelta(microseconds=1))


def remove_range(conn: Any, parent: str, start: datetime, end: datetime) -> None:
    """Remove the rows of the intervals starting in ``[start, end)``: drop their partitions, delete their
    rows from DEFAULT."""
    doomed = partitions_in(conn, parent, start, end)
    with conn.cursor() as cur:
        for name, _ in doomed:
            execute(cur, "partition_drop.sql", parent=table(parent), partition=table(name))
        execute(
            cur,
            "partition_default_delete.sql",
            {"start": start, "end": end},
            default_partition=table(db.default_partition_name(parent)),
        )


def remove_warehouse_interval(conn: Any, spec: DatasetSpec, start: datetime) -> None:
    """Remove an interval from the warehouse (the bench resets its interval between runs this way)."""
    remove_interval(conn, spec.warehouse_table, start)


def attach_incoming(
    conn: Any,
    parent: str,
    incoming: str,
    starts: list[datetime],
    ready_statement: str,
    **identifiers: sql.Composable | str,
) -> None:
    """Make partitions of ``parent`` out of the rows of the table ``incoming`` (dropped after): one per
    interval in ``starts`` (every interval whose rows it holds, as its writer noted them), made ready
    (indexes, statistics) by ``ready_statement`` (a .sql file with a ``{building}`` placeholder and
    ``identifiers``), each swapped in. One interval (a night) renames the table instead of copying it."""
    with conn.cursor() as cur:
        for start in starts:
            names = partition_names(parent, start)
            if len(starts) == 1:
                execute(cur, "partition_rename.sql", table=table(incoming), name=names.building)
            else:
                execute(
                    cur,
                    "partition_from_incoming.sql",
                    {"start": start},
                    building=table(names.building),
                    parent=table(parent),
                    incoming=table(incoming),
                )
            execute(cur, ready_statement, building=table(names.building), **identifiers)
            swap_in(conn, start, names)
        if len(starts) != 1:
            execute(cur, "partition_incoming_drop.sql", incoming=table(incoming))
