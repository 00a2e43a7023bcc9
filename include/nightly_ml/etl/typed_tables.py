"""The typed copy of a staging table, materialised once: text columns parsed by pattern into typed columns."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.etl import key_ranges
from nightly_ml.etl.staging import BAD_ROWS_SUFFIX, KEYS_SUFFIX, SEEN_SUFFIX, SUMMARY_SUFFIX, TYPED_SUFFIX, StageResult
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
# The common spellings, checked without a regular expression (a third of the cost): the text with every
# digit turned into 0 is one of these shapes, and its fields are a real calendar day and time of years
# 1-9999 with an offset within ±14:59. PostgreSQL always accepts those; anything else the loose
# TIMESTAMP_PATTERN lets through is tried with ops.try_timestamptz, which catches the error.
TIME_SHAPES = [
    f"0000-00-00{sep}00:00:00{fraction}{offset}"
    for sep in ("T", " ")
    for fraction in ("", *("." + "0" * n for n in range(1, 7)))
    for offset in ("", "Z", "+00:00", "-00:00")
]
BOOLEAN_WORDS = ["true", "false", "t", "f", "0", "1", "yes", "no", "y", "n", "TRUE", "FALSE", "True", "False"]
TYPE_PATTERNS = {"integer": INTEGER_PATTERN, "float": FLOAT_PATTERN, "boolean": BOOLEAN_PATTERN}
PG_CASTS = {"integer": "numeric::bigint", "float": "double precision", "boolean": "boolean"}


def typed_table(stage: StageResult) -> str:
    return f"{stage.rows_table}{TYPED_SUFFIX}"


def bad_rows_table(stage: StageResult) -> str:
    return f"{stage.rows_table}{BAD_ROWS_SUFFIX}"


def summary_table(stage: StageResult) -> str:
    return f"{stage.rows_table}{SUMMARY_SUFFIX}"


def keys_table(stage: StageResult) -> str:
    """The few keys repeated in the batch or stored under another interval, while the typed table is made."""
    return f"{stage.rows_table}{KEYS_SUFFIX}"


def seen_partitions_table(stage: StageResult) -> str:
    """The warehouse partitions validation looked the batch's keys up in (``partition``: their oids)."""
    return f"{stage.rows_table}{SEEN_SUFFIX}"


def key_lookback(spec: DatasetSpec, start: datetime) -> sql.Composable:
    """The condition on the warehouse (alias ``w``) that bounds the stored intervals a batch's keys are looked
    up under to ``validation.key_lookback_days`` (nothing when unset): a literal bound, so the planner reads
    only those partitions."""
    days = spec.validation.key_lookback_days
    if days is None:
        return sql.SQL("")
    return sql.SQL(" AND w._interval_start >= {}").format(sql.Literal(start - timedelta(days=days)))


def value_column(name: str) -> str:
    return f"{name}__value"


def typed_expression(name: str, kind: str) -> sql.Composable:
    """The typed value of a raw text column, NULL when it does not match its type's pattern.

    Plain spellings (digits, one dot, a boolean word) are cast without running the pattern. Their length
    is read in bytes (``octet_length``, stored with the value): a plain spelling is ASCII, so it has as many
    bytes as characters, and counting characters walks the UTF-8 text.
    """
    raw = sql.Identifier(name)
    if kind == "integer":
        return sql.SQL(
            "CASE WHEN octet_length({raw}) BETWEEN 1 AND 18 AND translate({raw}, '0123456789', '') = '' "
            "THEN {raw}::bigint WHEN {raw} ~ {pattern} THEN trim({raw})::numeric::bigint END"
        ).format(raw=raw, pattern=sql.Literal(INTEGER_PATTERN))
    if kind == "float":
        return sql.SQL(
            "CASE WHEN octet_length({raw}) BETWEEN 1 AND {longest} AND {raw} <> '.' "
            "AND translate({raw}, '0123456789', '') IN ('', '.') "
            "THEN {raw}::double precision "
            "WHEN {raw} ~ {pattern} AND char_length({raw}) <= {longest} THEN trim({raw})::double precision END"
        ).format(raw=raw, pattern=sql.Literal(FLOAT_PATTERN), longest=sql.Literal(MAX_FLOAT_CHARS))
    if kind == "boolean":
        return sql.SQL(
            "CASE WHEN {raw} = ANY({words}::text[]) THEN {raw}::boolean "
            "WHEN {raw} ~ {pattern} THEN trim({raw})::boolean END"
        ).format(raw=raw, words=sql.Literal(BOOLEAN_WORDS), pattern=sql.Literal(BOOLEAN_PATTERN))
    return raw


def event_time_expression(name: str) -> sql.Composable:
    """The event time as an instant (``_event._parsed``, parsed once), or NULL when it is not a valid time.

    A time with an offset is exact. A naive time is a wall-clock time of the spec's zone (the session's
    zone here): one that never happens there (the hour the clocks skip in spring) is not valid, where
    PostgreSQL would silently move it an hour on. One that happens twice (in autumn) is read as
    PostgreSQL does, as standard time. ``_event._kind``: 1 a plain time with an offset, 2 a plain
    naive time, 3 another text matching TIMESTAMP_PATTERN, 0 none (or NULL).
    """
    return sql.SQL(
        "CASE WHEN _event._parsed IS NULL THEN NULL WHEN _event._kind = 1 THEN _event._parsed "
        "WHEN _event._kind = 3 AND s.{raw} ~ {offset} THEN _event._parsed "
        "WHEN _event._parsed::timestamp = s.{raw}::timestamp THEN _event._parsed END AS {alias}"
    ).format(raw=sql.Identifier(name), offset=sql.Literal(OFFSET_PATTERN), alias=sql.Identifier(value_column(name)))


def digit_shape(raw: sql.Composable) -> sql.Composable:
    """``raw`` with every digit turned into 0, the text TIME_SHAPES are matched against. Nine ``replace``
    calls, not one ``translate``: each is a byte search, where ``translate`` looks every character up in
    its list (32-character times: 0.75 s instead of 1.42 s a million, in one process)."""
    shape: sql.Composable = raw
    for digit in "123456789":
        shape = sql.SQL("replace({}, {}, '0')").format(shape, sql.Literal(digit))
    return shape


def event_time_kind(name: str) -> sql.Composable:
    """``_kind`` of the event time (see event_time_expression); the fields are read only once the shape fits."""
    raw = sql.Identifier(name)
    field = {
        "y": sql.SQL("substr({}, 1, 4)::int").format(raw),
        "m": sql.SQL("substr({}, 6, 2)::int").format(raw),
        "d": sql.SQL("substr({}, 9, 2)::int").format(raw),
    }
    return sql.SQL(
        "CASE WHEN _shape._shape = ANY({shapes}::text[]) THEN CASE WHEN "
        "{y} >= 1 AND {m} BETWEEN 1 AND 12 AND {d} BETWEEN 1 AND CASE WHEN {m} IN (4, 6, 9, 11) THEN 30 "
        "WHEN {m} = 2 THEN 28 + (mod({y}, 4) = 0 AND (mod({y}, 100) <> 0 OR mod({y}, 400) = 0))::int ELSE 31 END "
        "AND substr({raw}, 12, 2)::int < 24 AND substr({raw}, 15, 2)::int < 60 AND substr({raw}, 18, 2)::int < 60 "
        "AND (right(_shape._shape, 6) NOT IN ('+00:00', '-00:00') "
        "OR substr(right({raw}, 5), 1, 2)::int <= 14 AND right({raw}, 2)::int < 60) "
        "THEN CASE WHEN right(_shape._shape, 1) = 'Z' OR right(_shape._shape, 6) IN ('+00:00', '-00:00') THEN 1 "
        "ELSE 2 END END END"
    ).format(raw=raw, shapes=sql.Literal(TIME_SHAPES), **field)


def parse_event_time(name: str) -> sql.Composable:
    """The event time parsed once ``_kind`` is known: a plain cast of a plain time, the error-catching
    ``ops.try_timestamptz`` (a PL/pgSQL call) only for the rare rest (29 February, 24:00, a month 13 ...)."""
    return sql.SQL(
        "CASE WHEN _kind._kind IN (1, 2) THEN s.{raw}::timestamptz "
        "WHEN _kind._kind = 3 THEN ops.try_timestamptz(s.{raw}) END"
    ).format(raw=sql.Identifier(name))


def _kinds(spec: DatasetSpec) -> dict[str, str]:
    """The type each input column but the event time is cast to (typed_expression's ``kind``)."""
    return {
        spec.key.name: "integer" if spec.key.type == "integer" else "string",
        spec.label.name: spec.label.type,
        **{f.name: f.type for f in spec.features},
    }


def _other_values(spec: DatasetSpec) -> list[sql.Composable]:
    """The typed value of every input column but the event time (``<column>__value``)."""
    kinds = _kinds(spec)
    return [
        sql.SQL("{} AS {}").format(typed_expression(name, kinds[name]), sql.Identifier(value_column(name)))
        for name in [spec.key.name, *(f.name for f in spec.features), spec.label.name]
    ]


def careful_typed_select(spec: DatasetSpec, stage: StageResult) -> sql.Composable:
    """Every row of the staging table with its typed values and ``_event_kind``, whatever its event time's
    spelling: the shape, the calendar fields and (for the rare rest) ``ops.try_timestamptz`` decide."""
    # OFFSET 0 keeps the planner from inlining the parse into each use (3x the time at 300k rows).
    items = [sql.SQL("s.*"), *_other_values(spec), event_time_expression(spec.event_time)]
    items.append(sql.SQL("_event._kind AS _event_kind"))
    return sql.SQL(
        "SELECT {items} FROM {staging} AS s "
        "CROSS JOIN LATERAL (SELECT {shape} AS _shape OFFSET 0) AS _shape "
        "CROSS JOIN LATERAL (SELECT COALESCE({kind}, CASE WHEN s.{raw} ~ {pattern} THEN 3 ELSE 0 END) AS _kind "
        "OFFSET 0) AS _kind "
        "CROSS JOIN LATERAL (SELECT _kind._kind, {parsed} AS _parsed OFFSET 0) AS _event"
    ).format(
        items=sql.SQL(", ").join(items),
        staging=sql.Identifier("staging", stage.rows_table),
        raw=sql.Identifier(spec.event_time),
        shape=digit_shape(sql.SQL("s.{}").format(sql.Identifier(spec.event_time))),
        kind=event_time_kind(spec.event_time),
        pattern=sql.Literal(TIMESTAMP_PATTERN),
        parsed=parse_event_time(spec.event_time),
    )


def plain_typed_select(spec: DatasetSpec, stage: StageResult) -> sql.Composable:
    """:func:`careful_typed_select` for a batch whose event times all have a plain shape (TIME_SHAPES): one
    cast each, no calendar checks. A plain-shaped time the cast refuses (a 30 February) raises, and a time of
    another shape gets ``_event_kind`` 0: either way :func:`create_typed_table` falls back to the careful
    select, which gives those rows their exact treatment. For every other row both selects agree."""
    return db.compose(
        "validation_plain_times.sql",
        others=sql.SQL(", ").join(_other_values(spec)),
        staging=sql.Identifier("staging", stage.rows_table),
        raw=sql.Identifier(spec.event_time),
        value=sql.Identifier(value_column(spec.event_time)),
        shape=digit_shape(sql.SQL("s.{}").format(sql.Identifier(spec.event_time))),
        shapes=sql.Literal(TIME_SHAPES),
    )


# The row facts validation_key_facts.sql finds for a few keys, for a batch where it found none.
_NO_KEY_FACTS = sql.SQL("false AS _key_in_other_interval, false AS _duplicate_key")


def _key_facts(spec: DatasetSpec, keys: sql.Identifier) -> tuple[sql.Composable, sql.Composable]:
    """The row facts of the keys in ``keys`` (validation_key_facts.sql) and the join that brings them to the
    typed select's rows (``t``)."""
    facts = sql.SQL(
        "COALESCE(k._other, false) AS _key_in_other_interval, COALESCE(k._duplicate, false) AS _duplicate_key"
    )
    join = sql.SQL(
        " LEFT JOIN (SELECT _key, bool_or(_duplicate) AS _duplicate, bool_or(NOT _duplicate) AS _other "
        "FROM {keys} GROUP BY _key) AS k ON k._key = t.{key}"
    ).format(keys=keys, key=sql.Identifier(spec.key.name))
    return facts, join


def create_typed_table(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    stage: StageResult,
    start: datetime,
    end: datetime,
    broken: list[sql.Composable],
    params: dict[str, Any],
    *,
    plain_first: bool = True,
    gate: list[sql.Composable] | None = None,
) -> str:
    """The typed table (``_row_id``, a ``<column>__value`` per input column, ``_broken``) and the bad rows.

    One scan of the staging table casts every column and evaluates every row rule: ``_broken`` lists the
    (1-based) positions in ``broken`` of the rules a row breaks, NULL for a good row. The keys that need
    more than their row (repeated in the batch, stored under another interval) are found first, so the scan
    runs in PostgreSQL's parallel workers from the staging table to the typed row. The bad rows
    (``_row_id``, ``_broken``) are copied to their own small table. Timestamps without an offset are
    wall-clock times of the spec's zone (for this transaction).

    The scan first assumes plain event times (:func:`plain_typed_select`, a third of the careful parse's
    cost); when one is not, that attempt is rolled back and the careful parse runs instead. Returns which
    one made the table: ``"plain"`` or ``"careful"`` (always, with ``plain_first=False``).

    ``gate``: predicates true together exactly when a row breaks a rule of ``broken``, cheaper to test on
    every row (rules.row_rule_gate); without it, the rules themselves.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT set_config('TimeZone', %(zone)s, true)", {"zone": spec.timezone})
        # The in-batch duplicate check hashes every key: enough memory not to spill at a million rows.
        cur.execute("SELECT set_config('work_mem', '128MB', true)")
        # One statement of cheap expressions: compiling them (JIT) cost more than it saved.
        cur.execute("SELECT set_config('jit', 'off', true)")
    columns = [spec.key.name, spec.event_time, *(f.name for f in spec.features), spec.label.name]
    flags = sql.SQL(", ").join(
        sql.SQL("CASE WHEN {} THEN {} END").format(p, sql.Literal(i)) for i, p in enumerate(broken, start=1)
    )
    names = {
        "typed": sql.Identifier("staging", typed_table(stage)),
        "bad": sql.Identifier("staging", bad_rows_table(stage)),
        "staging": sql.Identifier("staging", stage.rows_table),
    }
    keys = sql.Identifier("staging", keys_table(stage))
    seen = sql.Identifier("staging", seen_partitions_table(stage))
    typed_key = typed_expression(spec.key.name, _kinds(spec)[spec.key.name])
    lookup = key_ranges.key_lookup(conn, spec, names["staging"], typed_key, start)

    with conn.cursor() as cur:
        cur.execute(
            db.compose(
                "validation_key_facts.sql",
                staging=names["staging"],
                key=spec.key.name,
                typed_key=typed_key,
                keys=keys,
                seen=seen,
                key_lookback=key_lookback(spec, start),
                stored=lookup.stored,
            ),
            {"start": start, "seen": lookup.seen},
        )
        any_keys = bool(cur.fetchone()[0])
    key_facts, key_join = _key_facts(spec, keys) if any_keys else (_NO_KEY_FACTS, sql.SQL(""))

    def statement(select: sql.Composable) -> sql.Composable:
        return db.compose(
            "validation_typed_table.sql",
            **names,
            typed_select=select,
            values=sql.SQL(", ").join(sql.Identifier(value_column(c)) for c in columns),
            any_broken=sql.SQL(" OR ").join(sql.SQL("({})").format(p) for p in (gate or broken)),
            flags=flags,
            event_time=spec.event_time,
            event_time_value=value_column(spec.event_time),
            key_value=value_column(spec.key.name),
            keys=keys,
            key_facts=key_facts,
            key_join=key_join,
        )

    with conn.cursor() as cur:
        bounds = {**params, "start": start, "end": end}
        if not plain_first:
            cur.execute(statement(careful_typed_select(spec, stage)), bounds)
            return "careful"
        cur.execute("SAVEPOINT plain_event_times")
        try:
            cur.execute(statement(plain_typed_select(spec, stage)), bounds)
            cur.execute(
                db.compose(
                    "validation_unplain_times.sql",
                    **names,
                    raw=sql.Identifier(spec.event_time),
                    value=sql.Identifier(value_column(spec.event_time)),
                )
            )
            plain = not cur.fetchone()[0]
        except psycopg2.DataError:  # a plain-shaped time that is no time (the cast raised)
            plain = False
        if plain:
            cur.execute("RELEASE SAVEPOINT plain_event_times")
            return "plain"
        cur.execute("ROLLBACK TO SAVEPOINT plain_event_times")
        cur.execute(statement(careful_typed_select(spec, stage)), bounds)
    return "careful"
