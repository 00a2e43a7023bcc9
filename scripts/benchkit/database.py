"""The bench's throw-away database: the admin server, a migrated database, typed loads."""

from __future__ import annotations

import os
from collections.abc import Generator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from nightly_ml.devtools.scratch import LOCAL_ADMIN_URL, reachable
from scripts.benchkit.common import progress


@contextmanager
def admin_server(admin_url: str | None, workdir: Path) -> Generator[tuple[str, str]]:
    """(admin URL, description): the given server, the local one, or an embedded one for this run."""
    if admin_url:
        yield admin_url, admin_url.split("@")[-1]
        return
    if reachable(LOCAL_ADMIN_URL):
        yield LOCAL_ADMIN_URL, "127.0.0.1:5432"
        return
    from nightly_ml.devtools import embedded

    progress("no server at 127.0.0.1:5432: starting an embedded PostgreSQL (pgserver)")
    pg_dir = workdir / "embedded"
    url = embedded.start(pg_dir, "postgres")
    try:
        yield url, "embedded pgserver"
    finally:
        embedded.stop(pg_dir)


def settle(url: str) -> bool:
    """Start the next measured run on a settled server: ``CHECKPOINT`` writes out what earlier runs left dirty
    and resets the WAL count that triggers the next checkpoint. Without it a checkpoint that earlier runs' WAL
    set off lands inside whichever run comes next (here a 1M-row merge writes ~250 MiB of WAL, and a
    checkpoint is due every ~530 MiB at max_wal_size 1GB; session 13 read the same merge at 1.42x and, in a
    run that met checkpoints, 1.68x psql \\copy). The run's own writes stay in its time. False when the role
    may not checkpoint (PostgreSQL 15: superuser or pg_checkpoint)."""
    import psycopg2

    from nightly_ml import db

    conn = db.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
        return True
    except psycopg2.errors.InsufficientPrivilege:
        return False
    finally:
        conn.close()


@contextmanager
def bench_database(admin_url: str, data_dir: Path) -> Generator[str]:
    """A fresh, migrated database; WAREHOUSE_URL and NIGHTLY_ML_DATA_DIR point at it while the block runs."""
    from nightly_ml import db
    from nightly_ml.devtools.scratch import scratch_database

    name = f"nightly_ml_bench_{os.getpid()}"
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with scratch_database(admin_url, name, data_dir) as url:
        with db.transaction(url) as conn, conn.cursor() as cur:
            cur.execute("CREATE SCHEMA IF NOT EXISTS bench")
        progress(f"database {name} created and migrated")
        yield url
    progress(f"database {name} dropped")


def column_types(spec: Any) -> dict[str, str]:
    """The warehouse's PostgreSQL type of each input column."""
    from nightly_ml import db

    return {
        spec.key.name: db.key_pg_type(spec),
        spec.event_time: "timestamptz",
        spec.label.name: db.label_pg_type(spec),
        **{f.name: db.column_type(f) for f in spec.features},
    }


def load_typed(spec: Any, frame: Any, start: datetime, end: datetime, url: str, workdir: Path) -> int:
    """Put rows straight into the warehouse table (what a merge would leave), via one COPY and one INSERT."""
    from psycopg2 import sql

    from nightly_ml import db
    from nightly_ml.etl import simulator_files

    path = simulator_files.write_batch(frame, workdir / f"typed_{start:%Y%m%d}.csv")
    columns = list(spec.input_columns)
    types = column_types(spec)
    identifiers = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    temp = sql.Identifier("bench_typed_load")
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                temp, sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c])) for c in columns)
            )
        )
        with path.open("rb") as handle:
            cur.copy_expert(
                sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true)")
                .format(temp, identifiers)
                .as_string(conn),
                handle,
                1 << 20,
            )
        cur.execute(
            sql.SQL(
                "INSERT INTO {warehouse} ({columns}, _interval_start, _interval_end, _row_hash) "
                "SELECT {columns}, %(start)s, %(end)s, md5(concat_ws('|', {texts})) FROM {temp}"
            ).format(
                warehouse=db.warehouse_table(spec),
                columns=identifiers,
                texts=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
                temp=temp,
            ),
            {"start": start, "end": end},
        )
        inserted = cur.rowcount
    path.unlink()
    return inserted
