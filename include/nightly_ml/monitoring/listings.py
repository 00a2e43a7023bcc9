"""The newest intervals a table partitioned by interval holds rows of: the loaded ones monitoring pools, the
scored ones prediction drift compares (monitoring_newest_intervals.sql)."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.spec import DatasetSpec


def loaded_intervals(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, since: datetime, until: datetime, limit: int
) -> list[datetime]:
    """The newest (at most ``limit``) intervals in ``[since, until]`` the warehouse holds rows of, newest first."""
    # an interval is named by its start: "at most until" is "before until's next microsecond"
    return _newest_intervals(conn, spec.warehouse_table, since, until + timedelta(microseconds=1), None, limit)


def scored_intervals(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, before: datetime, model_version: str | None, limit: int
) -> list[datetime]:
    """The newest (at most ``limit``) intervals before ``before`` scored by ``model_version`` (any when ``None``)."""
    if limit <= 0:
        return []
    return _newest_intervals(conn, db.predictions_table_name(spec), None, before, model_version, limit)


def _newest_intervals(
    conn: psycopg2.extensions.connection,
    table: str,
    since: datetime | None,
    until: datetime,
    version: str | None,
    limit: int,
) -> list[datetime]:
    """The newest intervals in ``[since, until)`` the warehouse table ``table`` holds rows of (the predictions
    table: rows by model ``version``, every version when ``None``), newest first."""
    by_version = sql.SQL(" AND r.model_version = %(model_version)s")
    statement = db.compose(
        "monitoring_newest_intervals.sql",
        table=db.table("warehouse", table),
        default_partition=db.table("warehouse", db.default_partition_name(table)),
        row_filter=by_version if version is not None else sql.SQL(""),
    )
    params = {"since": since, "until": until, "model_version": version, "limit": limit}
    with conn.cursor() as cur:
        cur.execute(statement, {**params, "table_name": db.table("warehouse", table).as_string(cur)})
        return [row[0] for row in cur.fetchall()]
