"""The typed copy of a staging table, materialised once: text columns parsed by pattern into typed columns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.etl.staging import BAD_ROWS_SUFFIX, SUMMARY_SUFFIX, TYPED_SUFFIX, StageResult
from nightly_ml.spec import DatasetSpec

# Integral floats ("12.0", as a CSV writer turns an integer column with gaps into) are integers.
INTEGER_PATTERN = r"^\s*[+-]?[0-9]{1,18}(\.0*)?\s*$"
# Finite decimals only (inf, NaN and 1e400 are not floats). A match of at most MAX_FLOAT_CHARS characters
# always fits a double (|x| < 1e299, no underflow to an error); a longer one is not cast (rules.py refuses it).
# A length check, because bounded repeats in the pattern made PostgreSQL's matching 36x slower.
FLOAT_PATTERN = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,2})?\s*$"
MAX_FLOAT_CHARS = 200
BOOLEAN_PATTERN = r"^\s*([Tt]([Rr][Uu][Ee])?|[Ff]([Aa][Ll][Ss][Ee])?|0|1|[Yy]([Ee][Ss])?|[Nn][Oo]?)\s*$"
TIMESTAMP_PATTERN = (
    r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?"
    r"\s*(Z|[+-][0-9]{2}(:?[0-9]{2})?)?\s*$"
)
# An event time that carries its own offset (``Z`` or a time followed by ``±hh[:mm]``) is an exact instant.
OFFSET_PATTERN = r"(Z|[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?\s*[+-][0-9]{2}(:?[0-9]{2})?)\s*$"
# Times PostgreSQL's timestamptz input always accepts (a real calendar day of years 1-9999, hours 00-23,
# offsets within ±14:59): cast directly. Anything else the loose TIMESTAMP_PATTERN lets through is
# tried with ops.try_timestamptz, which catches the error (a subtransaction per call).
SAFE_TIMESTAMP_PATTERN = (
    r"^ *([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-"
    r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-](0[0-9]|1[0-4])(:?[0-5][0-9])?)?)? *$"
)
TYPE_PATTERNS = {"integer": INTEGER_PATTERN, "float": FLOAT_PATTERN, "boolean": BOOLEAN_PATTERN}
PG_CASTS = {"integer": "numeric::bigint", "float": "double precision", "boolean": "boolean"}


def typed_table(stage: StageResult) -> str:
    return f"{stage.rows_table}{TYPED_SUFFIX}"


def bad_rows_table(stage: StageResult) -> str:
    return f"{stage.rows_table}{BAD_ROWS_SUFFIX}"


def summary_table(stage: StageResult) -> str:
    return f"{stage.rows_table}{SUMMARY_SUFFIX}"


def value_column(name: str) -> str:
    return f"{name}__value"


def typed_expression(name: str, kind: str) -> sql.Composable:
    raw = sql.Identifier(name)
    if kind == "float":
        return sql.SQL(
            "CASE WHEN {raw} ~ {pattern} AND char_length({raw}) <= {longest} THEN trim({raw})::{cast} END"
        ).format(
            raw=raw,
            pattern=sql.Literal(FLOAT_PATTERN),
            longest=sql.Literal(MAX_FLOAT_CHARS),
            cast=sql.SQL(PG_CASTS[kind]),
        )
    if kind in TYPE_PATTERNS:
        return sql.SQL("CASE WHEN {raw} ~ {pattern} THEN trim({raw})::{cast} END").format(
            raw=raw, pattern=sql.Literal(TYPE_PATTERNS[kind]), cast=sql.SQL(PG_CASTS[kind])
        )
    return raw


def event_time_expression(name: str) -> sql.Composable:
    """The event time as an instant (``_event._parsed``, parsed once), or NULL when it is not a valid time.

    A time with an offset is exact. A naive time is a wall-clock time of the spec's zone (the session's
    zone here): one that never happens there (the hour the clocks skip in spring) is not valid, where
    PostgreSQL would silently move it an hour on. One that happens twice (in autumn) is read as
    PostgreSQL does, as standard time.
    """
    return sql.SQL(
        "CASE WHEN _event._parsed IS NULL THEN NULL WHEN s.{raw} ~ {offset} THEN _event._parsed "
        "WHEN _event._parsed::timestamp = s.{raw}::timestamp THEN _event._parsed END AS {alias}"
    ).format(raw=sql.Identifier(name), offset=sql.Literal(OFFSET_PATTERN), alias=sql.Identifier(value_column(name)))


def parse_event_time(name: str) -> sql.Composable:
    """The event time parsed: a plain cast when the text is a time PostgreSQL always accepts, else the
    error-catching ``ops.try_timestamptz`` (a PL/pgSQL call, for the rare rest: 29 February, 24:00,
    a month 13 ...), else NULL."""
    return sql.SQL(
        "CASE WHEN s.{raw} ~ {safe} THEN s.{raw}::timestamptz "
        "WHEN s.{raw} ~ {pattern} THEN ops.try_timestamptz(s.{raw}) END"
    ).format(raw=sql.Identifier(name), safe=sql.Literal(SAFE_TIMESTAMP_PATTERN), pattern=sql.Literal(TIMESTAMP_PATTERN))


def create_typed_table(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    stage: StageResult,
    start: datetime,
    end: datetime,
    broken: list[sql.Composable],
    params: dict[str, Any],
) -> None:
    """The typed table (``_row_id``, a ``<column>__value`` per input column, ``_broken``) and the bad rows.

    One scan of the staging table casts every column and evaluates every row rule: ``_broken`` lists the
    (1-based) positions in ``broken`` of the rules a row breaks, NULL for a good row. The bad rows
    (``_row_id``, ``_broken``) are copied to their own small table. Timestamps without an offset are
    wall-clock times of the spec's zone (for this transaction).
    """
    with conn.cursor() as cur:
        cur.execute("SELECT set_config('TimeZone', %(zone)s, true)", {"zone": spec.timezone})
        # The in-batch duplicate check hashes every key: enough memory not to spill at a million rows.
        cur.execute("SELECT set_config('work_mem', '128MB', true)")
    columns = [spec.key.name, spec.event_time, *(f.name for f in spec.features), spec.label.name]
    kinds = {
        spec.key.name: "integer" if spec.key.type == "integer" else "string",
        spec.label.name: spec.label.type,
        **{f.name: f.type for f in spec.features},
    }
    items: list[sql.Composable] = [sql.SQL("s.*")]
    for name in columns:
        if name == spec.event_time:
            items.append(event_time_expression(name))
        else:
            items.append(
                sql.SQL("{} AS {}").format(typed_expression(name, kinds[name]), sql.Identifier(value_column(name)))
            )
    # OFFSET 0 keeps the planner from inlining the parse into each use (3x the time at 300k rows).
    typed = sql.SQL(
        "SELECT {items} FROM {staging} AS s CROSS JOIN LATERAL (SELECT {parsed} AS _parsed OFFSET 0) AS _event"
    ).format(
        items=sql.SQL(", ").join(items),
        staging=sql.Identifier("staging", stage.rows_table),
        parsed=parse_event_time(spec.event_time),
    )
    flags = sql.SQL(", ").join(
        sql.SQL("CASE WHEN {} THEN {} END").format(p, sql.Literal(i)) for i, p in enumerate(broken, start=1)
    )
    statement = db.compose(
        "validation_typed_table.sql",
        typed=sql.Identifier("staging", typed_table(stage)),
        bad=sql.Identifier("staging", bad_rows_table(stage)),
        staging=sql.Identifier("staging", stage.rows_table),
        typed_select=typed,
        values=sql.SQL(", ").join(sql.Identifier(value_column(c)) for c in columns),
        any_broken=sql.SQL(" OR ").join(sql.SQL("({})").format(p) for p in broken),
        flags=flags,
        event_time=spec.event_time,
        timestamp_pattern=sql.Literal(TIMESTAMP_PATTERN),
        event_time_value=value_column(spec.event_time),
        key=spec.key.name,
        key_value=value_column(spec.key.name),
        warehouse=db.warehouse_table(spec),
    )
    with conn.cursor() as cur:
        cur.execute(statement, {**params, "start": start, "end": end})
