"""The typed copy of a staging table, materialised once: text columns parsed by pattern into typed columns."""

from __future__ import annotations

from datetime import datetime

import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.etl.staging import BAD_ROWS_SUFFIX, TYPED_SUFFIX, StageResult
from nightly_ml.spec import DatasetSpec

# Integral floats ("12.0", as a CSV writer turns an integer column with gaps into) are integers.
INTEGER_PATTERN = r"^\s*[+-]?[0-9]{1,18}(\.0*)?\s*$"
FLOAT_PATTERN = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,2})?\s*$"
BOOLEAN_PATTERN = r"^\s*([Tt]([Rr][Uu][Ee])?|[Ff]([Aa][Ll][Ss][Ee])?|0|1|[Yy]([Ee][Ss])?|[Nn][Oo]?)\s*$"
TIMESTAMP_PATTERN = (
    r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?"
    r"\s*(Z|[+-][0-9]{2}(:?[0-9]{2})?)?\s*$"
)
TYPE_PATTERNS = {"integer": INTEGER_PATTERN, "float": FLOAT_PATTERN, "boolean": BOOLEAN_PATTERN}
PG_CASTS = {"integer": "numeric::bigint", "float": "double precision", "boolean": "boolean"}


def typed_table(stage: StageResult) -> str:
    return f"{stage.rows_table}{TYPED_SUFFIX}"


def bad_rows_table(stage: StageResult) -> str:
    return f"{stage.rows_table}{BAD_ROWS_SUFFIX}"


def value_column(name: str) -> str:
    return f"{name}__value"


def typed_expression(name: str, kind: str) -> sql.Composable:
    raw = sql.Identifier(name)
    if kind in TYPE_PATTERNS:
        return sql.SQL("CASE WHEN {raw} ~ {pattern} THEN trim({raw})::{cast} END").format(
            raw=raw, pattern=sql.Literal(TYPE_PATTERNS[kind]), cast=sql.SQL(PG_CASTS[kind])
        )
    return raw


def create_typed_table(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, stage: StageResult, start: datetime, end: datetime
) -> None:
    """A typed copy of the staging table: a ``<column>__value`` beside each raw column.

    Timestamps without an offset are wall-clock times of the spec's zone (for this transaction).
    """
    with conn.cursor() as cur:
        cur.execute("SELECT set_config('TimeZone', %(zone)s, true)", {"zone": spec.timezone})
    items: list[sql.Composable] = [sql.SQL("s.*")]
    key_kind = "integer" if spec.key.type == "integer" else "string"
    items.append(
        sql.SQL("{} AS {}").format(
            typed_expression(spec.key.name, key_kind), sql.Identifier(value_column(spec.key.name))
        )
    )
    items.append(
        sql.SQL("ops.try_timestamptz(CASE WHEN {raw} ~ {pattern} THEN {raw} END) AS {alias}").format(
            raw=sql.Identifier(spec.event_time),
            pattern=sql.Literal(TIMESTAMP_PATTERN),
            alias=sql.Identifier(value_column(spec.event_time)),
        )
    )
    for feature in spec.features:
        items.append(
            sql.SQL("{} AS {}").format(
                typed_expression(feature.name, feature.type), sql.Identifier(value_column(feature.name))
            )
        )
    items.append(
        sql.SQL("{} AS {}").format(
            typed_expression(spec.label.name, spec.label.type), sql.Identifier(value_column(spec.label.name))
        )
    )
    typed = sql.SQL("SELECT {items} FROM {staging} AS s").format(
        items=sql.SQL(", ").join(items), staging=sql.Identifier("staging", stage.rows_table)
    )
    statement = db.compose(
        "validation_typed_table.sql",
        typed=sql.Identifier("staging", typed_table(stage)),
        typed_select=typed,
        event_time=spec.event_time,
        timestamp_pattern=sql.Literal(TIMESTAMP_PATTERN),
        event_time_value=value_column(spec.event_time),
        key=spec.key.name,
        key_value=value_column(spec.key.name),
        warehouse=db.warehouse_table(spec),
    )
    with conn.cursor() as cur:
        cur.execute(statement, {"start": start, "end": end})
