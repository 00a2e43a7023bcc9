"""The side-by-side parts of ``make bench`` (main environment): the baseline pipeline in ``.venv-bench``,
peak memory of the tasks at a bigger interval, DAG import times, and the Markdown/JSON reports."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
REPORT_DIR = ROOT / "reports" / "bench"


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def expectations(spec: Any) -> list[dict[str, Any]]:
    """The dataset spec's batch and row rules as GX expectations on a DataFrame."""
    items = [
        {"type": "ExpectColumnValuesToNotBeNull", "kwargs": {"column": spec.key.name}},
        {"type": "ExpectColumnValuesToBeUnique", "kwargs": {"column": spec.key.name}},
        {"type": "ExpectColumnValuesToNotBeNull", "kwargs": {"column": spec.event_time}},
    ]
    for column in [*spec.features, spec.label]:
        lo, hi = getattr(column, "min", None), getattr(column, "max", None)
        if lo is not None or hi is not None:
            kwargs = {"column": column.name, "min_value": lo, "max_value": hi}
            items.append({"type": "ExpectColumnValuesToBeBetween", "kwargs": kwargs})
        allowed = getattr(column, "allowed", None)
        if allowed:
            items.append(
                {"type": "ExpectColumnValuesToBeInSet", "kwargs": {"column": column.name, "value_set": list(allowed)}}
            )
    return items


def run_baseline(
    ctx: Any, reference_start: Any, reference_end: Any, repeats: int, progress: Any = None
) -> dict[str, Any] | None:
    """The baseline pipeline ``repeats`` times in the bench env (a subprocess each); medians per step, and every
    run's seconds per step (``runs``)."""
    from psycopg2 import sql

    from nightly_ml import db
    from scripts.benchkit.database import settle

    if not BENCH_PYTHON.exists():
        return None
    spec = ctx.spec
    names = [f.name for f in spec.features]
    with db.transaction(ctx.url) as conn:
        query = (
            sql.SQL("SELECT {} FROM {} WHERE {} >= {} AND {} < {}")
            .format(
                sql.SQL(", ").join(sql.Identifier(n) for n in names),
                db.warehouse_table(spec),
                sql.Identifier(spec.event_time),
                sql.Literal(reference_start),
                sql.Identifier(spec.event_time),
                sql.Literal(reference_end),
            )
            .as_string(conn)
        )
    job = {
        "csv": str(ctx.csv_path),
        "event_time": spec.event_time,
        "expectations": expectations(spec),
        "sqlalchemy_url": db.sqlalchemy_url(ctx.url),
        "table": "baseline_to_sql",
        "reference_query": query,
        "features": names,
        "text_features": [f.name for f in spec.features if not f.is_numeric],
        "numeric_features": [f.name for f in spec.features if f.is_numeric],
        "model": str(ctx.model_path),
    }
    path = ctx.workdir / "baseline.json"
    path.write_text(json.dumps(job, default=str), encoding="utf-8")
    runs = []
    for attempt in range(1, repeats + 1):
        settle(ctx.url)  # as every measured run of the night
        done = subprocess.run(
            [str(BENCH_PYTHON), str(Path(__file__).with_name("baseline.py")), str(path)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"},
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        if progress is not None:
            steps = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in runs[-1]["seconds"].items())
            progress(f"side by side: baseline run {attempt}/{repeats}: {steps}")
    steps = runs[0]["seconds"].keys()
    return {
        "seconds": {s: median([r["seconds"][s] for r in runs]) for s in steps},
        "peak_mib": median([r["peak_mib"] for r in runs]),
        "drifted": runs[0]["drifted"],
        "runs": [r["seconds"] for r in runs],
    }


def grow_interval(ctx: Any, source_day: Any, target_day: Any, copies: int, *, own_keys: bool = True) -> tuple[int, str]:
    """``copies`` copies of a loaded interval as another interval (server side, new keys): a bigger night.

    ``own_keys``: each key names the target night as the simulator's do (``churn-<night>-<n>``, then ``-<copy>``),
    so the copies' keys lie in a range of their own, as a later or earlier night's would; otherwise a copy
    keeps its key with ``-<copy>`` appended, in the source night's range (as random ids would lie).

    A warehouse partitioned by interval gets the copies as a partition of their own, filled before its indexes
    are built and then attached (as a merge leaves an interval; 5M rows: 47 s against 88 s for inserting them
    through the DEFAULT partition's indexes, on the shared 2-core machine); an unpartitioned one gets them
    inserted. Returns (rows, how)."""
    from psycopg2 import sql

    from nightly_ml import db
    from nightly_ml.etl import warehouse as warehouse_module

    spec = ctx.spec
    warehouse = db.warehouse_table(spec)
    shift = target_day - source_day
    others = [c for c in spec.input_columns if c not in (spec.key.name, spec.event_time)]
    params = {"shift": shift, "start": target_day, "end": target_day + timedelta(days=1), "copies": copies}
    with db.transaction(ctx.url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname FROM pg_partitioned_table p JOIN pg_attribute a "
            "ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
            "WHERE p.partrelid = %s::regclass AND p.partstrat = 'l' AND p.partnatts = 1",
            (warehouse.as_string(conn),),
        )
        found = cur.fetchone()
        by_interval = found is not None and found[0] == "_interval_start"
        target = warehouse
        if by_interval:
            target = sql.Identifier("warehouse", f"{spec.warehouse_table}__bench_{target_day:%Y%m%d}")
            cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(target, warehouse))
        cur.execute(
            sql.SQL(
                "INSERT INTO {target} ({key}, {time}, {others}, _interval_start, _interval_end, _row_hash) "
                "SELECT {new_key} || '-' || g, {time} + %(shift)s, {others}, %(start)s, %(end)s, _row_hash "
                "FROM {w}, generate_series(1, %(copies)s) AS g WHERE _interval_start = %(source)s"
            ).format(
                target=target,
                w=warehouse,
                key=sql.Identifier(spec.key.name),
                new_key=sql.SQL(
                    "regexp_replace({}, '-[0-9]{{8}}T[0-9]{{4}}-', '-' || to_char(%(start)s AT TIME ZONE 'UTC', "
                    "'YYYYMMDD\"T\"HH24MI') || '-')"
                ).format(sql.Identifier(spec.key.name))
                if own_keys
                else sql.Identifier(spec.key.name),
                time=sql.Identifier(spec.event_time),
                others=sql.SQL(", ").join(sql.Identifier(c) for c in others),
            ),
            {**params, "source": source_day},
        )
        inserted = cur.rowcount
        if by_interval:
            # ATTACH builds the partitioned table's indexes on the partition, each in one sort.
            cur.execute("SELECT set_config('maintenance_work_mem', '256MB', true)")
            cur.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                    warehouse, target, sql.Literal(target_day)
                )
            )
        cur.execute(sql.SQL("ANALYZE {}").format(warehouse))
    with db.transaction(ctx.url) as conn:
        # as a merge leaves a loaded interval: its audit row names the load its scoring records
        warehouse_module.record_audit(
            conn,
            spec=spec,
            start=target_day,
            end=target_day + timedelta(days=1),
            run_id="bench-copy",
            status="merged",
            rows_in=inserted,
            rows_merged=inserted,
            rows_quarantined=0,
        )
    return inserted, "a partition of its own, indexed on attach" if by_interval else "inserted"


def dag_import_times(repeats: int, progress: Any = None) -> dict[str, float]:
    """Median seconds to import each DAG file in a fresh interpreter, and an empty DAG's."""
    empty = ROOT / "reports" / "bench" / "_empty_dag.py"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_text("from airflow.sdk import DAG\n\nwith DAG('empty', schedule=None):\n    pass\n", encoding="utf-8")
    code = (
        "import runpy, sys, time\nt = time.perf_counter()\nrunpy.run_path(sys.argv[1])\n"
        "print(time.perf_counter() - t)\n"
    )
    files = {"(empty DAG)": empty, **{p.name: p for p in sorted((ROOT / "dags").glob("*.py"))}}
    out = {}
    for name, path in files.items():
        times = []
        for _ in range(repeats):
            done = subprocess.run(
                [sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True, cwd=ROOT
            )
            times.append(float(done.stdout.strip().splitlines()[-1]))
        out[name] = median(times)
        if progress is not None:
            progress(f"imports: {name}: " + ", ".join(f"{t:.2f}" for t in times) + " s")
    empty.unlink()
    return out


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min, {os.cpu_count()} cores)"


def write_reports(data: dict[str, Any]) -> tuple[Path, Path]:
    """reports/bench/bench.json and bench.md (gitignored)."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    json_path, md_path = REPORT_DIR / "bench.json", REPORT_DIR / "bench.md"
    json_path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    lines = [
        f"# make bench, {data['rows']:,} rows ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"Machine: {data['machine']}; load average at start {data['load_start']}, at end {data['load_end']}.",
        f"Every figure of the night is the median of {data['repeats']} runs, of the baseline pipeline and the "
        f"DAG imports of {data.get('baseline_repeats', data['repeats'])}, unless said otherwise "
        "(the load lines' best-of; one run of each task at --big-rows, for its peak memory).",
        *(
            [f"The bench had run {data['bench_seconds_so_far']:,.0f} s when it wrote this report (target: < 1200 s)."]
            if data.get("bench_seconds_so_far")
            else []
        ),
        "",
        "## The night, side by side",
        "",
        "| step | nightly-ml | s | baseline (pandas, GX, to_sql, Evidently) | s | baseline / nightly-ml |",
        "| --- | --- | ---: | --- | ---: | ---: |",
    ]
    for row in data["side_by_side"]:
        ours, theirs = row["ours_s"], row["baseline_s"]
        ratio = f"{theirs / ours:.1f}x" if ours and theirs else "-"
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"| {row['step']} | {row['ours']} | {fmt(ours)} | {row['baseline']} | {fmt(theirs)} | {ratio} |")
    from scripts.benchkit import floor, summary

    lines += summary.markdown_night(data["vs_psql"], data["repeats"])
    lines += floor.markdown(data.get("typed_load_floor"), data["vs_psql"])
    lines += [
        "",
        "## Peak memory per task (MiB, fresh child process)",
        "",
        "| task | " + " | ".join(data["memory_rows"]) + " |",
    ]
    lines.append("| --- |" + " ---: |" * len(data["memory_rows"]))
    for task, peaks in data["memory"].items():
        lines.append(f"| {task} | " + " | ".join("-" if p is None else f"{p:.1f}" for p in peaks) + " |")
    lines += summary.markdown_memory(data.get("memory_check") or [])
    if data.get("imports"):
        empty = data["imports"]["(empty DAG)"]
        lines += [
            "",
            "## DAG file import time (s, fresh interpreter)",
            "",
            "| file | s | vs empty DAG |",
            "| --- | ---: | ---: |",
        ]
        lines += [f"| {name} | {s:.2f} | {s / empty:.2f}x |" for name, s in data["imports"].items()]
    for h in data.get("history") or []:
        lines += [
            "",
            f"## The ingest again, with history: {h['keys']} (one run each)",
            "",
            f"The same batch staged, validated and merged once more with {h['stored_rows']:,} rows stored in "
            f"{h['intervals']} other intervals ({h['keys']}); validation looks its keys up in those whose key "
            f"range meets the batch's. Then scored once more with {h['stored_predictions']:,} predictions of "
            "other intervals stored.",
            "",
            "| step | empty warehouse (median) | with history | growth |",
            "| --- | ---: | ---: | ---: |",
            *(
                f"| {step} | {h[f'empty_{step}_s']:.2f} | {h[f'{step}_s']:.2f} | "
                f"{h[f'{step}_s'] / h[f'empty_{step}_s']:.2f}x |"
                for step in ("validate", "merge", "score")
                if f"{step}_s" in h
            ),
        ]
    lines += ["", "## Notes", "", *[f"- {note}" for note in data["notes"]], ""]
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return json_path, md_path
