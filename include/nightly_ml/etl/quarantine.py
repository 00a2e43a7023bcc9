"""Quarantine: failing rows and unreadable lines go to ``ops.quarantine`` with the rule they broke."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.etl.rules import Rule
from nightly_ml.etl.staging import BadLine, StageResult
from nightly_ml.etl.typed_tables import bad_rows_table
from nightly_ml.spec import DatasetSpec


def quarantine_broken_rows(
    cur: psycopg2.extensions.cursor,
    stage: StageResult,
    rules: list[Rule],
    context: dict[str, Any],
) -> None:
    """One quarantine record per bad row and rule it broke (``_broken`` holds positions in ``rules``)."""
    cur.execute(
        db.compose(
            "quarantine_rows.sql",
            staging=sql.Identifier("staging", stage.rows_table),
            bad=sql.Identifier("staging", bad_rows_table(stage)),
        ),
        {**context, "rules": [r.label for r in rules], "details": [r.description for r in rules]},
    )


def quarantine_bad_lines(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    start: datetime,
    end: datetime,
    run_id: str,
    bad_lines: list[BadLine],
) -> None:
    """Replace this run's quarantine of the interval with the lines the loader could not read."""
    context = {"dataset": spec.name, "start": start, "end": end, "run_id": run_id}
    with conn.cursor() as cur:
        cur.execute(db.load_sql("quarantine_clear.sql"), context)
        _insert_bad_lines(cur, bad_lines, context)


def _insert_bad_lines(cur: psycopg2.extensions.cursor, bad_lines: list[BadLine], context: dict[str, Any]) -> None:
    from psycopg2.extras import execute_batch

    execute_batch(
        cur,
        db.load_sql("quarantine_line.sql"),
        [
            {
                **context,
                "source_file": line.source_file,
                "line_number": line.line_number,
                "rule": line.rule,
                "detail": line.detail,
                "raw_line": line.raw_line,
            }
            for line in bad_lines
        ],
        page_size=1000,
    )


def quarantine_summary(conn: psycopg2.extensions.connection, spec: DatasetSpec, start: datetime) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute(db.load_sql("quarantine_summary.sql"), {"dataset": spec.name, "start": start})
        return {rule: int(count) for rule, count in cur.fetchall()}


def quarantined_rows(conn: psycopg2.extensions.connection, spec: DatasetSpec, start: datetime) -> int:
    """Distinct input rows of the interval in quarantine (a row that broke several rules counts once)."""
    with conn.cursor() as cur:
        cur.execute(db.load_sql("quarantine_row_count.sql"), {"dataset": spec.name, "start": start})
        return int(cur.fetchone()[0])
