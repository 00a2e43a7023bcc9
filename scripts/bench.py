"""``make bench``: the night against ``psql \\copy`` and, side by side, against the pipeline users would
otherwise write (pandas, Great Expectations, ``to_sql``, Evidently, ``predict``); reports/bench/bench.{md,json}.

Everything runs against a throw-away database ``nightly_ml_bench_<pid>`` on the server behind
``--admin-url`` (default: the local server at 127.0.0.1:5432 if it answers, else an embedded
``pgserver`` in a temporary directory); the database is dropped at the end, whatever happens.

Sections
    load     one simulated churn batch (``--rows``, default 1M) written once as CSV, then loaded
             by the project's loader (``staging.stage_files``: COPY into an all-text staging
             table) and by ``psql \\copy`` into a table of the same shape, alternating ``--repeats``
             times (the load lines: the best run of each, and every run). ``pandas.read_csv(...).to_sql(...)``:
             with --quick (or without .venv-bench) on a slice (``--to-sql-rows``), else the baseline's runs.
    ingest   GX validation (a fresh child process per run, as the task runs) and the merge of the staged
             batch into the warehouse, ``--repeats`` times: each run stages the CSV again, and the merged
             interval is removed between runs, so each merge is a first load; the last run stays merged.
    score    ``scoring.write_predictions`` streaming the interval from the warehouse in chunks,
             against ``predict_proba`` on the same rows held in memory; rate and peak memory.
    monitor  ``checks.compute_monitoring`` of a small and a large interval against the same
             reference window (its profile cached first, as after a promotion); peak memory flat.
    summary  (scripts/benchkit/summary.py) each step of the night (load, validate, merge, score, monitor)
             and the whole night against ``psql \\copy``'s median, with the issue's targets and verdicts;
             the peak memory check at ``--big-rows`` (not with --quick).
    side     (not with --quick; scripts/benchkit/bench_side.py) the baseline pipeline in .venv-bench as
             a subprocess per run, peak memory of score and monitor at ``--big-rows`` (one run each),
             the ingest (validate + merge) of the batch once more after ``--history-days`` intervals more
             were stored (its keys are looked up in every stored interval),
             DAG import times, reports/bench/bench.{md,json}.

Parts live in scripts/benchkit/: common (constants, results, table), database, children (the measured
tasks in child processes), preload (what the children's fork server imports), nightly (score and monitor
sections), summary, sidebyside + bench_side, baseline.

Figures are medians of ``--repeats`` runs (load: best and every run). Each measured task runs in a fresh
child process forked from a fork server that has only imported modules (``multiprocessing`` forkserver;
spawn where there is none). Peak memory of a task: the child's peak RSS during the task minus its RSS after
the imports and a warm-up (``VmHWM`` reset through ``/proc/self/clear_refs``; else ``ru_maxrss``, a
high-water mark, so a task that stays under the warm-up's mark shows 0).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts.benchkit, also in the children

from scripts.benchkit.children import (
    MemoryProbe as MemoryProbe,
    _child_monitor as _child_monitor,
    _child_predict as _child_predict,
    _child_score as _child_score,
    _child_validate as _child_validate,
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
    median as median,
    progress as progress,
    render as render,
)
from scripts.benchkit.database import admin_server, bench_database, load_typed as load_typed, settle
from scripts.benchkit.floor import typed_load_floor
from scripts.benchkit.nightly import section_monitor, section_score
from scripts.benchkit.sidebyside import BENCH_PYTHON
from scripts.benchkit.summary import night_vs_psql


@dataclass
class Context:
    args: argparse.Namespace
    url: str
    workdir: Path
    report: Report
    spec: Any = None
    frame: Any = None
    csv_path: Path | None = None
    typed_floor: dict[str, Any] | None = None
    stage: Any = None
    loaded_big: bool = False
    holdout: dict[str, float] = field(default_factory=dict)
    model_path: Path | None = None
    scored: dict[str, Any] = field(default_factory=dict)
    predicted: dict[str, Any] = field(default_factory=dict)
    monitored: dict[str, Any] = field(default_factory=dict)
    loader_times: list[float] = field(default_factory=list)
    psql_times: list[float] = field(default_factory=list)
    validate_times: list[float] = field(default_factory=list)
    merge_times: list[float] = field(default_factory=list)


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
        settle(ctx.url)
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
        settle(ctx.url)
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

    if not ctx.args.quick and BENCH_PYTHON.exists():
        # The side-by-side section runs read_csv + to_sql of the whole batch --baseline-repeats times:
        # the load line takes its median from there instead of timing a slice here as well.
        return
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


# (module, function(conn, spec, start)) that remove an interval from the warehouse, the first one found is used;
# else the bench deletes the interval's rows and vacuums the table.
REMOVE_INTERVAL = (
    ("nightly_ml.etl.warehouse", "remove_interval"),
    ("nightly_ml.partitions", "remove_warehouse_interval"),
)


def remove_merged_interval(ctx: Context) -> str:
    """Take the merged interval out of the warehouse again, so the next merge is a first load of it."""
    from psycopg2 import sql

    from nightly_ml import db

    # The merge that swaps in a partition per interval comes with a way to remove one (it drops the partition).
    for module_name, function_name in REMOVE_INTERVAL:
        try:
            remove = getattr(importlib.import_module(module_name), function_name, None)
        except ImportError:
            remove = None
        if remove is not None:
            with db.transaction(ctx.url) as conn:
                remove(conn, ctx.spec, LOAD_DAY)
            return f"{module_name.rsplit('.', 1)[-1]}.{function_name}"
    with db.transaction(ctx.url) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE _interval_start = %s").format(db.warehouse_table(ctx.spec)), (LOAD_DAY,)
        )
    # The deleted rows' dead tuples and index entries would slow the next merge down: vacuum them away.
    conn = db.connect(ctx.url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("VACUUM {}").format(db.warehouse_table(ctx.spec)))
    finally:
        conn.close()
    return "DELETE + VACUUM"


def gx_import_seconds() -> float:
    """Seconds a fresh interpreter takes to import Great Expectations (what a worker pays once at start)."""
    probe = "import time; t = time.perf_counter(); import great_expectations; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def validate_stage(ctx: Context) -> dict[str, Any]:
    """validation.validate of the staged batch in a fresh child process, as the validate task runs it."""
    job = {
        "dataset": DATASET,
        "url": ctx.url,
        "stage": ctx.stage.as_dict(),
        "start": LOAD_DAY,
        "end": LOAD_DAY + DAY,
    }
    return in_child(_child_validate, job)


def merge_stage(ctx: Context) -> tuple[float, Any]:
    """(seconds, result) of warehouse.merge_interval of the validated batch; then the staging is dropped."""
    from nightly_ml import db
    from nightly_ml.etl import warehouse

    settle(ctx.url)
    with db.transaction(ctx.url) as conn:
        seconds, merged = _time(
            lambda: warehouse.merge_interval(conn, ctx.spec, ctx.stage, LOAD_DAY, LOAD_DAY + DAY, "bench")
        )
        warehouse.drop_staging(conn, ctx.stage.rows_table)
    return seconds, merged


def section_ingest(ctx: Context) -> None:
    """GX validation and the merge of the staged batch (the rest of the ingest path): medians of --repeats runs.

    Each run validates and merges a freshly staged copy of the same CSV (the first run: the staging the load
    section's last run left); between runs the merged interval is removed again, so every merge is a first
    load of the interval. The last run leaves the interval merged for the score and monitor sections."""
    from nightly_ml import db
    from nightly_ml.etl import staging
    from nightly_ml.etl.sources import RawFile

    spec, rows, repeats = ctx.spec, ctx.args.rows, ctx.args.repeats
    db.ensure_dataset_tables(spec, ctx.url)
    if ctx.args.skip_validate:
        # The project passes the URL to GX as a ${VAR} template, which works for Unix-socket URLs too.
        ctx.report.add(
            Measurement("ingest", "validation.validate (GX, in PostgreSQL)", rows, None, note="--skip-validate")
        )
        ctx.report.add(Measurement("ingest", "warehouse.merge_interval", rows, None, note="needs the validation"))
        return
    raw = RawFile(ctx.csv_path, "csv", "rows")
    removed_by = ""
    validate_peaks: list[float] = []
    for attempt in range(1, repeats + 1):
        if attempt > 1:
            removed_by = remove_merged_interval(ctx)
            with db.transaction(ctx.url) as conn:
                ctx.stage = staging.stage_files(conn, spec, LOAD_DAY, [raw])
            if ctx.stage.rows_staged != rows:
                raise RuntimeError(f"the loader staged {ctx.stage.rows_staged} rows, expected {rows}")
        progress(f"ingest: run {attempt}/{repeats}: validating {rows:,} staged rows with GX (computed in PostgreSQL)")
        validated = validate_stage(ctx)
        ctx.validate_times.append(validated["seconds"])
        validate_peaks.append(validated["task_peak_mib"])
        progress(
            f"ingest: run {attempt}/{repeats}: validate {validated['seconds']:.2f}s, "
            f"task peak {validated['task_peak_mib']:.1f} MiB; merging into the warehouse"
        )
        seconds, merged = merge_stage(ctx)
        ctx.merge_times.append(seconds)
        progress(f"ingest: run {attempt}/{repeats}: merge {seconds:.2f}s, {merged.rows_merged:,} rows")

    def runs(times: list[float]) -> str:
        return "runs: " + ", ".join(f"{t:.2f}" for t in times) + " s"

    between = f"; interval removed between runs ({removed_by})" if removed_by else ""
    ctx.report.add(
        Measurement(
            "ingest",
            "validation.validate (GX, in PostgreSQL)",
            rows,
            median(ctx.validate_times),
            median(validate_peaks),
            note=f"{validated['expectations']} expectations, {validated['bad_rows']} bad rows; child process, "
            f"GX preloaded by the worker as in production (its import alone: {gx_import_seconds():.1f} s, once per "
            f"worker); median of {repeats}, " + runs(ctx.validate_times),
        )
    )
    ctx.report.add(
        Measurement(
            "ingest",
            "warehouse.merge_interval",
            merged.rows_merged,
            median(ctx.merge_times),
            note=f"one transaction, a first load of the interval each run{between}; median of {repeats}, "
            + runs(ctx.merge_times),
        )
    )
    ctx.loaded_big = merged.interval_rows == rows


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="bench.py")
    parser.add_argument("--admin-url", help="an admin connection URL (default: 127.0.0.1:5432, else embedded)")
    parser.add_argument("--rows", type=int, help="rows of the big batch (default 1,000,000; --quick: 100,000)")
    parser.add_argument("--quick", action="store_true", help="100k rows and one repeat, for tests")
    parser.add_argument(
        "--repeats", type=int, help="runs of each step of the night, and of psql \\copy (default 5; --quick: 1)"
    )
    parser.add_argument(
        "--baseline-repeats", type=int, default=3, help="runs of the baseline pipeline and of each DAG import"
    )
    parser.add_argument("--to-sql-rows", type=int, default=200_000, help="slice measured with to_sql")
    parser.add_argument("--train-rows", type=int, default=20_000, help="labelled rows the bench model trains on")
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="scoring chunk size")
    parser.add_argument("--skip-validate", action="store_true", help="skip the GX validation and merge timing")
    parser.add_argument("--big-rows", type=int, default=5_000_000, help="interval of the memory check (0: none)")
    parser.add_argument(
        "--history-days", type=int, default=3, help="intervals of --rows added before the ingest is run again (0: none)"
    )
    args = parser.parse_args(argv)
    if args.rows is None:
        args.rows = 100_000 if args.quick else 1_000_000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.rows < 1000 or args.repeats < 1 or args.baseline_repeats < 1:
        parser.error("--rows must be at least 1000, --repeats and --baseline-repeats at least 1")
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
                report.notes.append(
                    "Each measured run starts after a CHECKPOINT (scripts/benchkit/database.settle), so that a "
                    "checkpoint set off by earlier runs' WAL does not land inside it; its own writes stay in its time."
                    if settle(url)
                    else "The bench's role may not CHECKPOINT: a checkpoint set off by earlier runs may land inside a "
                    "measured run (run the bench as a superuser or a member of pg_checkpoint)."
                )
                section_load(ctx)
                section_ingest(ctx)
                section_score(ctx)
                section_monitor(ctx)
                report.night = night_vs_psql(ctx)
                ctx.typed_floor = typed_load_floor(ctx)
                if not args.quick:
                    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
                    from scripts.benchkit import bench_side

                    bench_side.section_side_by_side(ctx, sys.modules[__name__])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    progress(f"{args.rows:,} rows, {args.repeats} run(s) of each step, {args.baseline_repeats} of the baseline")
    report = run(args)
    print(render(report), flush=True)
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
