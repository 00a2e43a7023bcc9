"""``make bench``: the night against ``psql \\copy`` and, side by side, against the pipeline users would
otherwise write (pandas, Great Expectations, ``to_sql``, Evidently, ``predict``); reports/bench/bench.{md,json}.

Everything runs against a throw-away database ``nightly_ml_bench_<pid>`` on the server behind
``--admin-url`` (default: the local server at 127.0.0.1:5432 if it answers, else an embedded
``pgserver`` in a temporary directory); the database is dropped at the end, whatever happens.

Sections
    load     one simulated churn batch (``--rows``, default 1M) written once as CSV, then loaded
             by the project's loader (``staging.stage_files``: COPY into an all-text staging
             table), by ``psql \\copy`` into a table of the same shape, and by
             ``pandas.read_csv(...).to_sql(...)`` on a slice (``--to-sql-rows``).
             The loader and psql alternate ``--repeats`` times; the best run of each counts.
    ingest   GX validation and the merge of the staged batch into the warehouse (for context).
    score    ``scoring.write_predictions`` streaming the interval from the warehouse in chunks,
             against ``predict_proba`` on the same rows held in memory; rate and peak memory.
    monitor  ``checks.compute_monitoring`` of a small and a large interval against the same
             reference window (its profile cached first, as after a promotion); peak memory flat.
    side     (not with --quick; scripts/benchkit/bench_side.py) the baseline pipeline in .venv-bench as
             a subprocess, peak memory of score and monitor at ``--big-rows``, DAG import times, reports.

Parts live in scripts/benchkit/: common (constants, results, table), database, children (the measured
tasks in spawned processes), nightly (score and monitor sections), sidebyside + bench_side, baseline.

Figures are medians of ``--repeats`` runs (load: best and every run). Peak memory of a task is measured in
a fresh child process (``multiprocessing``, spawn):
``ru_maxrss`` after the task minus ``ru_maxrss`` after the imports and a warm-up. ``ru_maxrss``
is a high-water mark, so a task that stays under the warm-up's mark shows 0.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts.benchkit, also in spawned children

from scripts.benchkit.children import (
    MemoryProbe as MemoryProbe,
    _child_monitor as _child_monitor,
    _child_predict as _child_predict,
    _child_score as _child_score,
    in_child as in_child,
    median_child as median_child,
)
from scripts.benchkit.common import (
    DATASET as DATASET,
    DAY as DAY,
    LOAD_DAY as LOAD_DAY,
    MODEL_VERSION as MODEL_VERSION,
    REFERENCE_START as REFERENCE_START,
    SMALL_DAY as SMALL_DAY,
    Measurement as Measurement,
    Report as Report,
    _time as _time,
    progress as progress,
    render as render,
)
from scripts.benchkit.database import admin_server, bench_database, load_typed as load_typed
from scripts.benchkit.nightly import section_monitor, section_score

# --------------------------------------------------------------------------- sections


@dataclass
class Context:
    args: argparse.Namespace
    url: str
    workdir: Path
    report: Report
    spec: Any = None
    frame: Any = None
    csv_path: Path | None = None
    stage: Any = None
    loaded_big: bool = False
    holdout: dict[str, float] = field(default_factory=dict)
    model_path: Path | None = None
    scored: dict[str, Any] = field(default_factory=dict)
    predicted: dict[str, Any] = field(default_factory=dict)
    monitored: dict[str, Any] = field(default_factory=dict)
    loader_times: list[float] = field(default_factory=list)
    psql_times: list[float] = field(default_factory=list)


def section_load(ctx: Context) -> None:
    from psycopg2 import sql

    from nightly_ml import db
    from nightly_ml.etl import simulator, simulator_files, staging
    from nightly_ml.etl.sources import RawFile

    spec, rows = ctx.spec, ctx.args.rows
    progress(f"load: generating {rows:,} churn rows with the simulator")
    ctx.frame = simulator.generate_batch(spec, LOAD_DAY, LOAD_DAY + DAY, rows=rows)
    ctx.csv_path = simulator_files.write_batch(ctx.frame, ctx.workdir / "churn_batch.csv")
    size_mib = ctx.csv_path.stat().st_size / 2**20
    progress(f"load: wrote {ctx.csv_path.name} ({size_mib:,.1f} MiB, {len(spec.input_columns)} columns)")
    columns = list(spec.input_columns)
    raw = RawFile(ctx.csv_path, "csv", "rows")

    def run_loader() -> Any:
        with db.transaction(ctx.url) as conn:
            return staging.stage_files(conn, spec, LOAD_DAY, [raw])

    # The same shape as a staging table: unlogged, bigserial key, two meta columns, all text.
    psql_table = sql.SQL(
        "DROP TABLE IF EXISTS bench.psql_copy; CREATE UNLOGGED TABLE bench.psql_copy "
        "(_row_id bigserial PRIMARY KEY, _source_file text, _line_number bigint, {})"
    ).format(sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns))
    quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    path_literal = str(ctx.csv_path).replace("'", "''")
    psql = shutil.which("psql")
    copy_command = f"\\copy bench.psql_copy ({quoted}) FROM '{path_literal}' WITH (FORMAT csv, HEADER true)"
    psql_command = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ctx.url, "-c", copy_command] if psql else None

    def run_psql() -> float:
        with db.transaction(ctx.url) as conn, conn.cursor() as cur:
            cur.execute(psql_table)
        seconds, _ = _time(lambda: subprocess.run(psql_command, check=True, capture_output=True))
        with db.transaction(ctx.url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM bench.psql_copy")
            copied = int(cur.fetchone()[0])
        if copied != rows:
            raise RuntimeError(f"psql \\copy loaded {copied} rows, expected {rows}")
        return seconds

    loader_times: list[float] = []
    psql_times: list[float] = []
    ctx.loader_times, ctx.psql_times = loader_times, psql_times
    for attempt in range(1, ctx.args.repeats + 1):
        seconds, ctx.stage = _time(run_loader)
        if ctx.stage.rows_staged != rows:
            raise RuntimeError(f"the loader staged {ctx.stage.rows_staged} rows, expected {rows}")
        loader_times.append(seconds)
        progress(f"load: run {attempt}/{ctx.args.repeats}: stage_files {rows / seconds:,.0f} rows/s")
        if psql_command:
            psql_times.append(run_psql())
            progress(f"load: run {attempt}/{ctx.args.repeats}: psql \\copy {rows / psql_times[-1]:,.0f} rows/s")

    def spread(times: list[float]) -> str:
        return "runs: " + ", ".join(f"{rows / t / 1000:,.0f}k" for t in times) + " rows/s"

    best = f"best of {ctx.args.repeats}"
    ctx.report.add(
        Measurement(
            "load", f"loader: staging.stage_files, COPY ({best})", rows, min(loader_times), note=spread(loader_times)
        )
    )
    if psql_command:
        ctx.report.add(
            Measurement(
                "load",
                f"psql \\copy, same file, same table shape ({best})",
                rows,
                min(psql_times),
                note=spread(psql_times),
            )
        )
    else:
        ctx.report.add(Measurement("load", "psql \\copy", rows, None, note="skipped: psql is not on PATH"))
        ctx.report.notes.append("psql \\copy was not measured: `psql` is not on PATH.")

    slice_rows = min(ctx.args.to_sql_rows, rows)
    progress(f"load: pandas.read_csv + DataFrame.to_sql on {slice_rows:,} rows (chunksize 10,000, method=None)")
    ctx.report.add(
        Measurement(
            "load",
            "pandas read_csv + DataFrame.to_sql",
            slice_rows,
            to_sql_seconds(ctx, slice_rows),
            note="chunksize 10,000, method=None" + (" (a slice: rows/s only)" if slice_rows < rows else ""),
        )
    )
    if slice_rows < rows:
        ctx.report.notes.append(
            f"to_sql is measured on a {slice_rows:,}-row slice and reported as rows/s only; "
            f"its time for {rows:,} rows is not extrapolated."
        )


def to_sql_seconds(ctx: Context, slice_rows: int) -> float:
    import pandas as pd
    import sqlalchemy

    from nightly_ml import db

    engine = sqlalchemy.create_engine(db.sqlalchemy_url(ctx.url))
    try:

        def run() -> None:
            frame = pd.read_csv(ctx.csv_path, nrows=slice_rows, dtype=str)
            frame.to_sql(
                "to_sql_copy", engine, schema="bench", if_exists="replace", index=False, method=None, chunksize=10_000
            )

        seconds, _ = _time(run)
    finally:
        engine.dispose()
    return seconds


def section_ingest(ctx: Context) -> None:
    """GX validation and the merge of the staged batch (the rest of the ingest path), for context."""
    from nightly_ml import db
    from nightly_ml.etl import validation, warehouse

    spec, rows = ctx.spec, ctx.args.rows
    db.ensure_dataset_tables(spec, ctx.url)
    if ctx.args.skip_validate:
        # The project passes the URL to GX as a ${VAR} template, which works for Unix-socket URLs too.
        ctx.report.add(
            Measurement("ingest", "validation.validate (GX, in PostgreSQL)", rows, None, note="--skip-validate")
        )
        ctx.report.add(Measurement("ingest", "warehouse.merge_interval", rows, None, note="needs the validation"))
        return
    with db.transaction(ctx.url) as conn, conn.cursor() as cur:
        # ops.try_timestamptz has an EXCEPTION block (a subtransaction) but is declared PARALLEL SAFE:
        # once a batch is big enough for a parallel plan (~200k rows here) every query on the typed
        # view fails with "cannot start subtransactions during a parallel operation".
        cur.execute("SELECT proparallel FROM pg_proc WHERE oid = 'ops.try_timestamptz(text)'::regprocedure")
        if cur.fetchone()[0] == "s":
            cur.execute("ALTER FUNCTION ops.try_timestamptz(text) PARALLEL UNSAFE")
            ctx.report.notes.append(
                "WORKAROUND in the throw-away bench database: ops.try_timestamptz (migration 0001) is declared "
                "PARALLEL SAFE but has an EXCEPTION block, so validation of a batch big enough for a parallel plan "
                "fails ('cannot start subtransactions during a parallel operation'); the bench marks it "
                "PARALLEL UNSAFE before validating. Needs a migration that does the same."
            )
    progress(f"ingest: validating {rows:,} staged rows with Great Expectations (computed in PostgreSQL)")
    conn = db.connect(ctx.url)
    try:
        seconds, report = _time(lambda: validation.validate(conn, spec, ctx.stage, LOAD_DAY, LOAD_DAY + DAY, "bench"))
        conn.commit()
    finally:
        conn.close()
    ctx.report.add(
        Measurement(
            "ingest",
            "validation.validate (GX, in PostgreSQL)",
            rows,
            seconds,
            note=f"{len(report.outcomes)} expectations, {report.bad_rows} bad rows",
        )
    )
    progress("ingest: merging the staged rows into warehouse.churn")
    with db.transaction(ctx.url) as conn:
        seconds, merged = _time(
            lambda: warehouse.merge_interval(conn, spec, ctx.stage, LOAD_DAY, LOAD_DAY + DAY, "bench")
        )
        warehouse.drop_staging(conn, ctx.stage.rows_table)
    ctx.report.add(
        Measurement(
            "ingest", "warehouse.merge_interval", merged.rows_merged, seconds, note="one transaction, delete + insert"
        )
    )
    ctx.loaded_big = merged.interval_rows == rows


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="bench.py")
    parser.add_argument("--admin-url", help="an admin connection URL (default: 127.0.0.1:5432, else embedded)")
    parser.add_argument("--rows", type=int, help="rows of the big batch (default 1,000,000; --quick: 100,000)")
    parser.add_argument("--quick", action="store_true", help="100k rows and one repeat, for tests")
    parser.add_argument("--repeats", type=int, help="alternating loader/psql runs; the best counts (default 3)")
    parser.add_argument("--to-sql-rows", type=int, default=200_000, help="slice measured with to_sql")
    parser.add_argument("--train-rows", type=int, default=20_000, help="labelled rows the bench model trains on")
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="scoring chunk size")
    parser.add_argument("--skip-validate", action="store_true", help="skip the GX validation and merge timing")
    parser.add_argument("--big-rows", type=int, default=5_000_000, help="interval of the memory check (0: none)")
    args = parser.parse_args(argv)
    if args.rows is None:
        args.rows = 100_000 if args.quick else 1_000_000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.rows < 1000 or args.repeats < 1:
        parser.error("--rows must be at least 1000 and --repeats at least 1")
    return args


def run(args: argparse.Namespace) -> Report:
    from nightly_ml.spec import load_spec

    workdir = Path(tempfile.mkdtemp(prefix="nightly_ml_bench_"))
    try:
        with admin_server(args.admin_url, workdir) as (admin_url, server):
            report = Report(rows=args.rows, server=server)
            data_dir = workdir / "data"
            data_dir.mkdir()
            with bench_database(admin_url, data_dir) as url:
                ctx = Context(args=args, url=url, workdir=workdir, report=report, spec=load_spec(DATASET))
                section_load(ctx)
                section_ingest(ctx)
                section_score(ctx)
                section_monitor(ctx)
                if not args.quick:
                    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
                    from scripts.benchkit import bench_side

                    bench_side.section_side_by_side(ctx, sys.modules[__name__])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    progress(f"{args.rows:,} rows, {args.repeats} repeat(s) of the load comparison")
    report = run(args)
    print(render(report), flush=True)
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
