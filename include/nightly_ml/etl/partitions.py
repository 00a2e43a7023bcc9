"""The warehouse's partitions: one per data interval, named after the interval's start (UTC).

A merge builds the interval's partition as a table of its own, then swaps it in: the old partition (a
re-run) is detached and dropped, rows of the interval in the DEFAULT partition are deleted, and the new
one is attached. Attaching takes a lock that lets readers go on; detaching (re-runs only) waits for them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.spec import DatasetSpec

MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1
BUILDING_SUFFIX = "_new"


@dataclass(frozen=True)
class PartitionNames:
    final: str
    building: str

    def table(self, name: str) -> sql.Identifier:
        return db.table("warehouse", name)


def partition_names(spec: DatasetSpec, start: datetime) -> PartitionNames:
    """``churn__20260105T000000Z`` (and ``…_new`` while it is built); a long table name is shortened with
    a hash of it, so every name fits PostgreSQL's 63 bytes."""
    stamp = f"__{start.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    room = MAX_IDENTIFIER - len(stamp) - len(BUILDING_SUFFIX)
    base = spec.warehouse_table
    if len(base.encode()) > room:
        digest = hashlib.sha1(base.encode(), usedforsecurity=False).hexdigest()[:8]
        base = base.encode()[: room - 9].decode(errors="ignore") + "_" + digest
    final = base + stamp
    return PartitionNames(final, final + BUILDING_SUFFIX)


def partition_exists(conn: psycopg2.extensions.connection, spec: DatasetSpec, name: str) -> bool:
    with conn.cursor() as cur:
        cur.execute(
            db.load_sql("warehouse_partition_exists.sql"),
            {"parent": db.warehouse_table(spec).as_string(conn), "child": db.table("warehouse", name).as_string(conn)},
        )
        return bool(cur.fetchone()[0])


def swap_in(conn: psycopg2.extensions.connection, spec: DatasetSpec, start: datetime, names: PartitionNames) -> None:
    """Replace the interval's stored rows with the partition built under ``names.building``."""
    remove_interval(conn, spec, start, names)
    with conn.cursor() as cur:
        cur.execute(
            db.compose(
                "warehouse_partition_attach.sql",
                warehouse=db.warehouse_table(spec),
                building=names.table(names.building),
                final_name=names.final,
                final=names.table(names.final),
            ),
            {"start": start},
        )


def remove_interval(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, start: datetime, names: PartitionNames | None = None
) -> None:
    """Remove an interval's rows from the warehouse: drop its partition, delete its rows from DEFAULT."""
    names = names or partition_names(spec, start)
    with conn.cursor() as cur:
        if partition_exists(conn, spec, names.final):
            cur.execute(
                db.compose(
                    "warehouse_partition_drop.sql", warehouse=db.warehouse_table(spec), final=names.table(names.final)
                )
            )
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE _interval_start = %(start)s").format(
                db.table("warehouse", db.default_partition_name(spec))
            ),
            {"start": start},
        )
