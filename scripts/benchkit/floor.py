"""What the ingest would cost if a clean batch went straight into typed columns: the floor of an optimistic load.

The night stages every value as text, types and checks it in one statement, then writes the durable
partition (load + validate + merge). This section times, in the same run and against the same psql \\copy, the
other way round: ``psql \\copy`` of the batch into a logged table of the warehouse's column types (PostgreSQL's
input functions do the typing), then one scan that counts the rows breaking the spec's row rules and takes
the interval's checksum, then the primary key, the event-time index and ``ANALYZE``. It leaves out GX's
expectations and Data Docs, and the fallback a batch with any doubtful value would need (PostgreSQL's input
functions accept spellings the rules refuse, such as ``NaN`` or ``on``); see docs/PERFORMANCE.md.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from scripts.benchkit.common import DAY, LOAD_DAY, _time, median, progress
from scripts.benchkit.database import column_types, settle

TABLE = "bench.typed_floor"
STEPS = ("typed copy", "rule check and checksum", "primary key", "event-time index", "analyze")


def _broken_row_condition(spec: Any) -> Any:
    """A row breaks a rule: a null where none is allowed, a value out of range or not allowed, a float that is
    not finite, an event time outside the interval."""
    from psycopg2 import sql

    conditions = [
        sql.SQL("{} IS NULL").format(sql.Identifier(spec.key.name)),
        sql.SQL("{t} IS NULL OR {t} < {lo} OR {t} >= {hi}").format(
            t=sql.Identifier(spec.event_time), lo=sql.Literal(LOAD_DAY), hi=sql.Literal(LOAD_DAY + DAY)
        ),
    ]
    for feature in spec.features:
        column = sql.Identifier(feature.name)
        if not feature.nullable:
            conditions.append(sql.SQL("{} IS NULL").format(column))
        if feature.min is not None:
            conditions.append(sql.SQL("{} < {}").format(column, sql.Literal(feature.min)))
        if feature.max is not None:
            conditions.append(sql.SQL("{} > {}").format(column, sql.Literal(feature.max)))
        if feature.allowed:
            conditions.append(sql.SQL("{} <> ALL({})").format(column, sql.Literal(list(feature.allowed))))
        if feature.type == "float":
            conditions.append(sql.SQL("{} IN ('NaN', 'Infinity', '-Infinity')").format(column))
    return sql.SQL(" OR ").join(sql.SQL("({})").format(c) for c in conditions)


def typed_load_floor(ctx: Any) -> dict[str, Any] | None:
    """Median seconds of each step over ``--repeats`` runs, their sum and its ratio to psql \\copy's median."""
    from psycopg2 import sql

    from nightly_ml import db

    psql = shutil.which("psql")
    if not psql or not ctx.psql_times:
        return None
    progress("the floor of an optimistic typed load: psql \\copy into typed columns, checked, keyed and indexed")
    spec, rows = ctx.spec, ctx.args.rows
    types = column_types(spec)
    columns = list(spec.input_columns)
    key, event_time = sql.Identifier(spec.key.name), sql.Identifier(spec.event_time)
    create = sql.SQL(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({columns}, _interval_start timestamptz NOT NULL "
        "DEFAULT {start}) WITH (autovacuum_enabled = false)"
    ).format(
        table=sql.SQL(TABLE),
        columns=sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c])) for c in columns),
        start=sql.Literal(LOAD_DAY),
    )
    check = sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE {broken}), "
        "md5(count(*)::text || ':' || coalesce(bit_xor(hash_record_extended(ROW({values}), 0))::text, '')) "
        "FROM {table}"
    ).format(
        broken=_broken_row_condition(spec),
        values=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        table=sql.SQL(TABLE),
    )
    statements = {
        "primary key": sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({}, _interval_start)").format(sql.SQL(TABLE), key),
        "event-time index": sql.SQL("CREATE INDEX ON {} ({})").format(sql.SQL(TABLE), event_time),
        "analyze": sql.SQL("ANALYZE {}").format(sql.SQL(TABLE)),
    }
    quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    path = str(ctx.csv_path).replace("'", "''")
    command = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ctx.url, "-c",
               f"\\copy {TABLE} ({quoted}) FROM '{path}' WITH (FORMAT csv, HEADER true)"]  # fmt: skip
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    broken = 0
    for attempt in range(1, ctx.args.repeats + 1):
        with db.transaction(ctx.url) as conn, conn.cursor() as cur:
            cur.execute(create)
        settle(ctx.url)
        seconds, _ = _time(lambda: subprocess.run(command, check=True, capture_output=True))
        times["typed copy"].append(seconds)
        with db.transaction(ctx.url) as conn, conn.cursor() as cur:
            # The merge's setting for its index builds (nightly_ml.etl.warehouse), so that both build alike.
            cur.execute("SET LOCAL maintenance_work_mem = '256MB'")
            seconds, _ = _time(lambda: cur.execute(check))
            times["rule check and checksum"].append(seconds)
            copied, broken, _checksum = cur.fetchone()
            if copied != rows:
                raise RuntimeError(f"the typed copy loaded {copied} rows, expected {rows}")
            for step, statement in statements.items():
                seconds, _ = _time(lambda statement=statement: cur.execute(statement))
                times[step].append(seconds)
        progress(f"typed load floor: run {attempt}/{ctx.args.repeats}: {sum(t[-1] for t in times.values()):.2f}s")
    with db.transaction(ctx.url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.SQL(TABLE)))
    steps = {step: median(values) for step, values in times.items()}
    total, psql_median = sum(steps.values()), median(ctx.psql_times)
    ctx.report.notes.append(
        f"The floor of an optimistic typed load (psql \\copy into typed columns, rule check and checksum, key, "
        f"index, ANALYZE; scripts/benchkit/floor.py): {total:.2f} s = {total / psql_median:.2f}x psql \\copy, "
        f"{broken:,} rows breaking a rule."
    )
    return {
        "steps_s": steps,
        "runs_s": times,
        "total_s": total,
        "psql_s": psql_median,
        "x_psql": total / psql_median,
        "broken_rows": broken,
    }


def markdown(floor: dict[str, Any] | None, night: list[dict[str, Any]]) -> list[str]:
    """The floor's table, and the night it would make: the project's night with its load + validate + merge
    replaced by the floor."""
    if not floor:
        return []
    psql = floor["psql_s"]
    lines = [
        "",
        "## The floor of an optimistic typed load (medians; not the project's code)",
        "",
        "A clean batch copied by psql straight into a logged table of the warehouse's column types, then checked, "
        "keyed and indexed (scripts/benchkit/floor.py): what load + validate + merge would cost if a batch with no "
        "doubtful value skipped the text staging. GX and the fallback for doubtful batches are not in it.",
        "",
        "| step | s | x psql \\copy |",
        "| --- | ---: | ---: |",
        *(f"| {step} | {s:.2f} | {s / psql:.2f} |" for step, s in floor["steps_s"].items()),
        f"| **sum** | **{floor['total_s']:.2f}** | **{floor['x_psql']:.2f}** |",
    ]
    seconds = {row["step"]: row["seconds"] for row in night}
    ingest = [seconds.get(step) for step in ("load", "validate", "merge")]
    rest = [seconds.get(step) for step in ("score", "monitor")]
    if all(s is not None for s in ingest + rest):
        ours = sum(ingest)  # type: ignore[arg-type]
        projected = floor["total_s"] + sum(rest)  # type: ignore[arg-type]
        lines += [
            "",
            f"The project's load + validate + merge in this run: {ours:.2f} s ({ours / psql:.2f}x psql \\copy). "
            f"The night with the floor in their place (score and monitor as measured): {projected:.2f} s "
            f"({projected / psql:.2f}x psql \\copy).",
        ]
    return lines
