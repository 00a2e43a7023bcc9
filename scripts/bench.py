"""``make bench``: the loader against ``psql \\copy`` and ``DataFrame.to_sql``, scoring rate and memory,
monitoring memory.

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
             reference window; peak memory should not grow with the interval.

Peak memory of a task is measured in a fresh child process (``multiprocessing``, spawn):
``ru_maxrss`` after the task minus ``ru_maxrss`` after the imports and a warm-up. ``ru_maxrss``
is a high-water mark, so a task that stays under the warm-up's mark shows 0.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nightly_ml.devtools.scratch import LOCAL_ADMIN_URL, reachable

DATASET = "churn"
DAY = timedelta(days=1)
# Interval layout in the bench database (UTC days).
TRAIN_START = datetime(2024, 5, 1, tzinfo=UTC)
REFERENCE_START = datetime(2024, 6, 1, tzinfo=UTC)
REFERENCE_DAYS = 3
SMALL_DAY = REFERENCE_START + REFERENCE_DAYS * DAY  # the small monitored interval
LOAD_DAY = SMALL_DAY + DAY  # the big interval: loaded, validated, merged, scored, monitored
HOLDOUT_DAY = TRAIN_START - DAY
MODEL_VERSION = "bench"
LOAD_TARGET = 0.5  # the target: loader >= 0.5 x psql \copy
MIB = 1024.0  # ru_maxrss is in KiB on Linux

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[bench {time.monotonic() - _T0:7.1f}s] {message}", flush=True)


# --------------------------------------------------------------------------- results


@dataclass
class Measurement:
    section: str
    name: str
    rows: int
    seconds: float | None
    peak_mib: float | None = None
    note: str = ""

    @property
    def rows_per_second(self) -> float | None:
        if self.seconds is None or self.seconds <= 0 or self.rows <= 0:
            return None
        return self.rows / self.seconds


@dataclass
class Report:
    rows: int
    server: str
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, measurement: Measurement) -> Measurement:
        self.measurements.append(measurement)
        rate = measurement.rows_per_second
        peak = "" if measurement.peak_mib is None else f", task peak {measurement.peak_mib:.1f} MiB"
        shown = f"{rate:,.0f} rows/s" if rate else "skipped"
        progress(f"{measurement.section}: {measurement.name}: {shown}{peak}")
        return measurement

    def find(self, section: str, prefix: str) -> Measurement | None:
        return next((m for m in self.measurements if m.section == section and m.name.startswith(prefix)), None)


# --------------------------------------------------------------------------- database


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


def load_typed(spec: Any, frame: Any, start: datetime, end: datetime, url: str, workdir: Path) -> int:
    """Put rows straight into the warehouse table (what a merge would leave), via one COPY and one INSERT."""
    from psycopg2 import sql

    from nightly_ml import db
    from nightly_ml.etl import simulator_files

    path = simulator_files.write_batch(frame, workdir / f"typed_{start:%Y%m%d}.csv")
    columns = list(spec.input_columns)
    types = {
        spec.key.name: db.key_pg_type(spec),
        spec.event_time: "timestamptz",
        spec.label.name: db.label_pg_type(spec),
        **{f.name: db.column_type(f) for f in spec.features},
    }
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


# --------------------------------------------------------------------------- child processes


def _proc_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field_name}:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class MemoryProbe:
    """Peak memory of the code between :meth:`start` and :meth:`stop`, in this process.

    A spawned child inherits its parent's ``ru_maxrss`` (Linux keeps the larger of the old and
    the new image's high-water marks across ``exec``), so ``ru_maxrss`` minus a baseline reads 0
    whenever the parent was bigger. On Linux the probe therefore resets the high-water mark
    (``/proc/self/clear_refs``) at the baseline and reads ``VmHWM`` at the end; elsewhere it
    falls back to ``ru_maxrss``.
    """

    def start(self) -> None:
        import gc

        gc.collect()
        self.method = "VmHWM"
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
                clear_refs.write("5")
            self.baseline_kib = _proc_status_kib("VmRSS")
        except OSError:
            self.baseline_kib = None
        if self.baseline_kib is None:
            import resource

            self.method = "ru_maxrss"
            self.baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def stop(self) -> dict[str, Any]:
        import resource

        peak = _proc_status_kib("VmHWM") if self.method == "VmHWM" else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "baseline_mib": self.baseline_kib / MIB,
            "peak_mib": peak / MIB,
            "task_peak_mib": max(0.0, (peak - self.baseline_kib) / MIB),
            "memory_method": self.method,
        }


def _child_score(job: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: stream the interval through the model (write_predictions); time and memory."""
    import pandas as pd

    from nightly_ml.etl import simulator
    from nightly_ml.modeling import evaluation, frames, scoring
    from nightly_ml.spec import load_spec

    spec = load_spec(job["dataset"])
    with open(job["model_path"], "rb") as handle:
        model = pickle.load(handle)  # our own model, pickled by the parent a moment ago
    warm = simulator.generate_batch(spec, job["start"], job["end"], rows=100)
    evaluation.predict_scores(spec, model, frames.feature_frame(spec, pd.DataFrame(warm)))
    probe = MemoryProbe()
    probe.start()
    started = time.perf_counter()
    rows = scoring.write_predictions(
        spec, model, MODEL_VERSION, job["start"], job["end"], url=job["url"], chunk_rows=job["chunk_rows"]
    )
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds, **probe.stop()}


def _child_predict(job: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: read the batch into memory, then predict_proba on all of it; time and memory."""
    import pandas as pd

    from nightly_ml.modeling import frames
    from nightly_ml.spec import load_spec

    spec = load_spec(job["dataset"])
    with open(job["model_path"], "rb") as handle:
        model = pickle.load(handle)
    warm = pd.read_parquet(job["parquet_path"]).head(100)
    model.predict_proba(frames.feature_frame(spec, warm))
    del warm
    probe = MemoryProbe()
    probe.start()
    frame = pd.read_parquet(job["parquet_path"])
    started = time.perf_counter()
    features = frames.feature_frame(spec, frame)
    prepared = time.perf_counter()
    probabilities = model.predict_proba(features)
    done = time.perf_counter()
    return {
        "rows": len(probabilities),
        "seconds": done - prepared,
        "feature_seconds": prepared - started,
        **probe.stop(),
    }


def _child_monitor(job: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: one monitoring pass (compute_monitoring, no report); time and memory."""
    import numpy as np
    import psycopg2.extensions

    from nightly_ml import db
    from nightly_ml.monitoring import aggregates, checks, drift, statistics
    from nightly_ml.spec import load_spec

    spec = load_spec(job["dataset"])
    # Warm-up: the lazily imported scipy and scikit-learn parts the pass uses.
    drift.live_metrics(spec.task, np.array([0.0, 1.0]), np.array([0.2, 0.7]))
    statistics.chi_square({"a": 5, "b": 5}, {"a": 4, "b": 6})
    statistics.ks_pvalue(0.1, 100, 100)
    conn = db.connect(job["url"])
    try:
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        probe = MemoryProbe()
        probe.start()
        started = time.perf_counter()
        with conn:
            result = checks.compute_monitoring(
                conn,
                spec,
                aggregates.Windows(job["ref_start"], job["ref_end"], job["start"], job["end"]),
                champion_holdout_metrics=job["holdout"],
                run_id="bench",
                champion_version=MODEL_VERSION,
                prediction_interval_start=job["start"],
            )
        seconds = time.perf_counter() - started
        memory = probe.stop()
    finally:
        conn.close()
    return {
        "rows": result.rows,
        "reference_rows": result.reference_rows,
        "labelled_rows": result.labelled_rows,
        "prediction_psi": result.prediction_psi,
        "should_retrain": result.should_retrain,
        "drifted": list(result.drifted_features),
        "seconds": seconds,
        **memory,
    }


def in_child(function: Callable[[dict[str, Any]], dict[str, Any]], job: dict[str, Any]) -> dict[str, Any]:
    """Run ``function(job)`` in a new (spawned) process and return its result, with the task's peak memory."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, (job,))


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


def _time(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


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


def _first_grid_point(candidate: Any) -> dict[str, Any]:
    return {name: values[0] for name, values in candidate.search.items()}


def section_score(ctx: Context) -> None:
    import pandas as pd

    from nightly_ml import db
    from nightly_ml.etl import simulator, simulator_files
    from nightly_ml.modeling import evaluation, frames, training

    spec, rows = ctx.spec, ctx.args.rows
    labelled = spec.model_copy(update={"source": spec.source.model_copy(update={"label_delay_days": 0})})
    days = max(1, math.ceil(ctx.args.train_rows / spec.source.rows_per_interval))
    per_day = math.ceil(ctx.args.train_rows / days)
    train = pd.concat(
        [
            simulator.generate_batch(labelled, TRAIN_START + d * DAY, TRAIN_START + (d + 1) * DAY, rows=per_day)
            for d in range(days)
        ],
        ignore_index=True,
    )
    holdout = simulator.generate_batch(labelled, HOLDOUT_DAY, HOLDOUT_DAY + DAY, rows=spec.source.rows_per_interval)
    candidate = spec.training.candidates[0]
    model = training.build_pipeline(spec, candidate, _first_grid_point(candidate))
    seconds, _ = _time(lambda: model.fit(frames.feature_frame(spec, train), frames.label_values(spec, train)))
    ctx.holdout = evaluation.evaluate(spec, model, holdout)
    progress(
        f"score: trained {candidate.name} ({candidate.estimator}) on {len(train):,} labelled rows in {seconds:.1f}s; "
        f"holdout {spec.promotion.primary_metric} {ctx.holdout[spec.promotion.primary_metric]:.3f}"
    )
    ctx.model_path = ctx.workdir / "model.pkl"
    with ctx.model_path.open("wb") as handle:
        pickle.dump(model, handle)

    if not ctx.loaded_big:
        db.ensure_dataset_tables(spec, ctx.url)
        progress(f"score: loading the {rows:,}-row interval straight into warehouse.churn (COPY)")
        load_typed(spec, ctx.frame, LOAD_DAY, LOAD_DAY + DAY, ctx.url, ctx.workdir)
        ctx.loaded_big = True
    parquet_path = simulator_files.write_batch(ctx.frame, ctx.workdir / "churn_batch.parquet", fmt="parquet")
    ctx.frame = None  # the children read their own copy

    chunk = ctx.args.chunk_rows
    progress(f"score: scoring.write_predictions over {rows:,} warehouse rows, chunks of {chunk:,} (child process)")
    job = {
        "dataset": DATASET,
        "model_path": str(ctx.model_path),
        "url": ctx.url,
        "start": LOAD_DAY,
        "end": LOAD_DAY + DAY,
        "chunk_rows": chunk,
    }
    result = in_child(_child_score, job)
    ctx.report.add(
        Measurement(
            "score",
            f"scoring.write_predictions (chunks of {chunk:,})",
            result["rows"],
            result["seconds"],
            result["task_peak_mib"],
            note="fetch + features + predict + COPY back",
        )
    )
    progress(f"score: predict_proba on the same {rows:,} rows held in memory (child process)")
    result = in_child(_child_predict, {**job, "parquet_path": str(parquet_path)})
    ctx.report.add(
        Measurement(
            "score",
            "model.predict_proba, whole frame in memory",
            result["rows"],
            result["seconds"],
            result["task_peak_mib"],
            note=f"predict only; feature_frame took {result['feature_seconds']:.1f}s more",
        )
    )
    with db.transaction(ctx.url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM warehouse.churn_predictions WHERE _interval_start = %s AND model_version = %s",
            (LOAD_DAY, MODEL_VERSION),
        )
        stored = int(cur.fetchone()[0])
    if stored != rows:
        raise RuntimeError(f"write_predictions stored {stored} predictions, expected {rows}")
    parquet_path.unlink()


def section_monitor(ctx: Context) -> None:
    from nightly_ml import db
    from nightly_ml.etl import simulator
    from nightly_ml.modeling import scoring

    spec, rows = ctx.spec, ctx.args.rows
    small = max(rows // 10, 1000)
    labelled = spec.model_copy(update={"source": spec.source.model_copy(update={"label_delay_days": 0})})
    progress(
        f"monitor: loading a reference of {REFERENCE_DAYS} intervals x {small:,} labelled rows "
        f"and a {small:,}-row current interval"
    )
    for d in range(REFERENCE_DAYS):
        start = REFERENCE_START + d * DAY
        batch = simulator.generate_batch(labelled, start, start + DAY, rows=small)
        load_typed(spec, batch, start, start + DAY, ctx.url, ctx.workdir)
    batch = simulator.generate_batch(spec, SMALL_DAY, SMALL_DAY + DAY, rows=small)
    load_typed(spec, batch, SMALL_DAY, SMALL_DAY + DAY, ctx.url, ctx.workdir)
    with ctx.model_path.open("rb") as handle:
        model = pickle.load(handle)
    # Earlier scored intervals: the prediction-drift reference, and the labelled pairs of live performance.
    scoring.write_predictions(spec, model, MODEL_VERSION, REFERENCE_START, LOAD_DAY, url=ctx.url)
    with db.transaction(ctx.url) as conn, conn.cursor() as cur:
        cur.execute("ANALYZE warehouse.churn; ANALYZE warehouse.churn_predictions")

    results = {}
    for label, day in (("small", SMALL_DAY), ("large", LOAD_DAY)):
        progress(f"monitor: compute_monitoring of the {label} interval {day:%Y-%m-%d} (child process)")
        job = {
            "dataset": DATASET,
            "url": ctx.url,
            "ref_start": REFERENCE_START,
            "ref_end": SMALL_DAY,
            "start": day,
            "end": day + DAY,
            "holdout": ctx.holdout,
        }
        result = in_child(_child_monitor, job)
        results[label] = result
        ctx.report.add(
            Measurement(
                "monitor",
                f"compute_monitoring, {result['rows']:,}-row interval",
                result["rows"],
                result["seconds"],
                result["task_peak_mib"],
                note=(
                    f"ref {result['reference_rows']:,} rows, {result['labelled_rows']:,} labelled pairs, "
                    f"retrain={result['should_retrain']}"
                ),
            )
        )
    small, large = results["small"], results["large"]
    ctx.report.notes.append(
        f"monitoring memory: task peak {small['task_peak_mib']:.1f} MiB at {small['rows']:,} rows vs "
        f"{large['task_peak_mib']:.1f} MiB at {large['rows']:,} rows ({large['rows'] / small['rows']:.0f}x the rows); "
        "drift aggregates run in PostgreSQL, only the (capped) labelled pairs reach Python."
    )
    ctx.report.notes.append(
        f"task peak MiB = peak RSS of the task in a fresh spawned child minus its RSS after imports and a warm-up "
        f"({large['memory_method']}; children start at ~{large['baseline_mib']:.0f} MiB)."
    )


# --------------------------------------------------------------------------- output


def _format_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(report: Report) -> str:
    header = ("section", "measurement", "rows", "seconds", "rows/s", "task peak MiB", "note")
    lines_data = [
        (
            m.section,
            m.name,
            f"{m.rows:,}",
            "-" if m.seconds is None else f"{m.seconds:.2f}",
            _format_rate(m.rows_per_second),
            "-" if m.peak_mib is None else f"{m.peak_mib:.1f}",
            m.note,
        )
        for m in report.measurements
    ]
    widths = [max(len(row[i]) for row in [header, *lines_data]) for i in range(len(header))]
    right = {2, 3, 4, 5}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [
        "",
        f"nightly_ml bench: {report.rows:,} churn rows, PostgreSQL at {report.server}",
        line(header),
        line(["-" * w for w in widths]),
    ]
    previous = None
    for row in lines_data:
        if previous is not None and row[0] != previous:
            out.append("")
        out.append(line(row))
        previous = row[0]
    out.append("")
    loader, psql, to_sql = (report.find("load", p) for p in ("loader", "psql", "pandas"))
    if loader and psql and loader.rows_per_second and psql.rows_per_second:
        ratio = loader.rows_per_second / psql.rows_per_second
        verdict = "PASS" if ratio >= LOAD_TARGET else "FAIL"
        out.append(f"loader / psql \\copy = {ratio:.2f} (issue target >= {LOAD_TARGET:.2f}): {verdict}")
    if loader and to_sql and loader.rows_per_second and to_sql.rows_per_second:
        out.append(f"loader / to_sql     = {loader.rows_per_second / to_sql.rows_per_second:.1f}x faster")
    out += [f"- {note}" for note in report.notes]
    return "\n".join(out)


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
