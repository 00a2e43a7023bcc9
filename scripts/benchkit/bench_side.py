"""``make bench``'s last section: the night side by side with the baseline pipeline, memory at a bigger
interval, DAG import times; written to reports/bench/bench.{md,json}."""

from __future__ import annotations

import platform
from typing import Any

from scripts.benchkit import sidebyside, summary
from scripts.benchkit.common import Measurement, elapsed
from scripts.benchkit.sidebyside import median


def section_side_by_side(ctx: Any, bench: Any) -> None:
    args, rows, report = ctx.args, ctx.args.rows, ctx.report
    load_start = sidebyside.load_average()
    repeats = args.baseline_repeats
    bench.progress(f"side by side: baseline pipeline in .venv-bench, {repeats} runs (subprocesses)")
    baseline = sidebyside.run_baseline(ctx, bench.REFERENCE_START, bench.SMALL_DAY, repeats, bench.progress)
    if baseline is not None and report.find("load", "pandas") is None:
        add_to_sql_line(report, rows, baseline)
    notes = list(report.notes)
    if baseline is None:
        notes.append("baseline skipped: .venv-bench is missing (make bench creates it from requirements-bench.txt)")
    memory_rows = [f"{rows:,} rows"]
    memory = {
        "score (write_predictions)": [ctx.scored.get("task_peak_mib")],
        "monitor (compute_monitoring)": [ctx.monitored["large"]["task_peak_mib"]],
        "predict_proba, frame in memory": [ctx.predicted.get("task_peak_mib")],
        "baseline pipeline (whole process peak RSS)": [baseline["peak_mib"] if baseline else None],
    }
    if args.big_rows:
        big_day = bench.LOAD_DAY + 2 * bench.DAY
        copies = max(1, args.big_rows // rows)
        bench.progress(f"memory: {copies} copies of the {rows:,}-row interval as {big_day:%Y-%m-%d} (server side)")
        big, how = sidebyside.grow_interval(ctx, bench.LOAD_DAY, big_day, copies)
        bench.progress(f"memory: {big:,} rows as {big_day:%Y-%m-%d} ({how})")
        memory_rows.append(f"{big:,} rows")
        job = {"dataset": bench.DATASET, "url": ctx.url, "start": big_day, "end": big_day + bench.DAY}
        scored = bench.in_child(
            bench._child_score, {**job, "model_path": str(ctx.model_path), "chunk_rows": args.chunk_rows}
        )
        peak = scored["task_peak_mib"]
        bench.progress(f"memory: scored {scored['rows']:,} rows in {scored['seconds']:.1f}s, peak {peak:.1f} MiB")
        watched = bench.in_child(
            bench._child_monitor,
            {**job, "ref_start": bench.REFERENCE_START, "ref_end": bench.SMALL_DAY, "holdout": ctx.holdout},
        )
        peak = watched["task_peak_mib"]
        bench.progress(f"memory: monitored {watched['rows']:,} rows in {watched['seconds']:.1f}s, peak {peak:.1f} MiB")
        memory["score (write_predictions)"].append(scored["task_peak_mib"])
        memory["monitor (compute_monitoring)"].append(watched["task_peak_mib"])
        memory["predict_proba, frame in memory"].append(None)
        memory["baseline pipeline (whole process peak RSS)"].append(None)
        report.memory = summary.memory_check(
            {
                "score (write_predictions)": (ctx.scored, scored),
                "monitor (compute_monitoring)": (ctx.monitored["large"], watched),
            },
            rows,
            big,
        )
        ratio = scored["task_peak_mib"] / max(ctx.scored["task_peak_mib"], 1e-9)
        notes.append(f"scoring peak at {big:,} rows / at {rows:,} rows = {ratio:.2f} (target <= 1.2, under 1 GiB)")
        notes.append(
            f"peak memory at {big:,} rows: one run of each task (the figures at {rows:,} rows are the medians of "
            f"{args.repeats} runs); its time is not a figure of the report (scoring {scored['seconds']:.1f}s, "
            f"monitoring {watched['seconds']:.1f}s)."
        )
    history = (
        [ingest_with_history(ctx, bench, own_keys=True), ingest_with_history(ctx, bench, own_keys=False)]
        if args.history_days and not args.skip_validate
        else None
    )
    bench.progress(f"imports: each DAG file vs an empty DAG, {repeats} fresh interpreters each")
    imports = sidebyside.dag_import_times(repeats, bench.progress)
    ours = {
        "load": median(ctx.loader_times),
        "validate": _seconds(report, "ingest", "validation.validate"),
        "write": _seconds(report, "ingest", "warehouse.merge_interval"),
        "drift": ctx.monitored["large"]["seconds"],
        "predict": ctx.scored["seconds"],
    }
    theirs = baseline["seconds"] if baseline else {}
    labels = {
        "load": ("COPY into staging (stage_files)", "pandas.read_csv", "read"),
        "validate": ("GX in PostgreSQL", "GX on the DataFrame", "validate"),
        "write": ("merge into the warehouse", "DataFrame.to_sql (chunks of 10k)", "write"),
        "drift": ("compute_monitoring (cached reference)", "read_sql reference + Evidently DataDriftPreset", "drift"),
        "predict": ("write_predictions (COPY out, predict, COPY back)", "predict_proba on the frame", "predict"),
    }
    side = [
        {"step": step, "ours": a, "ours_s": ours[step], "baseline": b, "baseline_s": theirs.get(key)}
        for step, (a, b, key) in labels.items()
    ]
    if all(r["ours_s"] for r in side):
        total_theirs = sum(theirs.values()) if baseline else None
        side.append(
            {
                "step": "night",
                "ours": "sum",
                "ours_s": sum(ours.values()),
                "baseline": "sum",
                "baseline_s": total_theirs,
            }
        )
    rate = ctx.predicted["seconds"] / ctx.scored["seconds"]
    notes.append(
        f"scoring rate / predict_proba's in-memory rate = {rate:.2f} (target >= 0.5); "
        f"predict_proba alone {ctx.predicted['seconds']:.2f}s, "
        f"feature_frame {ctx.predicted['feature_seconds']:.2f}s more"
    )
    if baseline:
        notes.append(f"Evidently flagged {baseline['drifted']} drifted column(s) on the baseline night.")
    data = {
        "rows": rows,
        "repeats": args.repeats,
        "baseline_repeats": repeats,
        "machine": f"{platform.machine()}, {platform.processor() or platform.platform()}, server {report.server}",
        "load_start": load_start,
        "load_end": sidebyside.load_average(),
        "side_by_side": side,
        "vs_psql": report.night,
        "memory_check": report.memory,
        "memory_rows": memory_rows,
        "memory": memory,
        "imports": imports,
        "history": history,
        "typed_load_floor": ctx.typed_floor,
        "measurements": [vars(m) for m in report.measurements],
        "notes": notes,
        "bench_seconds_so_far": round(elapsed(), 1),
    }
    json_path, md_path = sidebyside.write_reports(data)
    bench.progress(f"wrote {md_path} and {json_path}")
    print(md_path.read_text(encoding="utf-8"), flush=True)


def ingest_with_history(ctx: Any, bench: Any, *, own_keys: bool) -> dict[str, Any]:
    """The ingest of the same batch once more (staged, validated in a child process, merged, scored: one run
    each) after --history-days intervals of --rows rows more were stored: validation looks the batch's keys up
    in every stored interval whose key range meets the batch's, so its time can grow with the warehouse, which
    an empty warehouse does not show. ``own_keys``: the new intervals' keys name their nights, as the
    simulator's (and time-ordered ids) do; else they lie in the batch's key range, as random ids would. The
    second call stores its intervals beside the first's."""
    from psycopg2 import sql

    from nightly_ml import db
    from nightly_ml.etl import staging
    from nightly_ml.etl.sources import RawFile

    days = ctx.args.history_days
    first = 10 if own_keys else 10 + days
    keys = "keys of their own nights" if own_keys else "keys in the batch's range"
    for n in range(days):
        day = bench.LOAD_DAY + (first + n) * bench.DAY
        bench.progress(f"history: the {ctx.args.rows:,}-row interval copied as {day:%Y-%m-%d}, {keys} ({n + 1}/{days})")
        sidebyside.grow_interval(ctx, bench.LOAD_DAY, day, 1, own_keys=own_keys)
    with db.transaction(ctx.url) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT count(*), count(DISTINCT _interval_start) FROM {} WHERE _interval_start <> %s").format(
                db.warehouse_table(ctx.spec)
            ),
            (bench.LOAD_DAY,),
        )
        stored, intervals = cur.fetchone()
        ctx.stage = staging.stage_files(conn, ctx.spec, bench.LOAD_DAY, [RawFile(ctx.csv_path, "csv", "rows")])
    bench.progress(f"history: validating and merging the batch again, {stored:,} rows in {intervals} other intervals")
    validated = bench.validate_stage(ctx)
    merge_seconds, _ = bench.merge_stage(ctx)
    # Scored again with the predictions of the other intervals stored (the 5M-row one of the memory check): a
    # night's scoring must not read them all.
    scored = bench.in_child(
        bench._child_score,
        {
            "dataset": bench.DATASET,
            "url": ctx.url,
            "start": bench.LOAD_DAY,
            "end": bench.LOAD_DAY + bench.DAY,
            "model_path": str(ctx.model_path),
            "chunk_rows": ctx.args.chunk_rows,
        },
    )
    with db.transaction(ctx.url) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE _interval_start <> %s").format(db.predictions_table(ctx.spec)),
            (bench.LOAD_DAY,),
        )
        stored_predictions = cur.fetchone()[0]
    result = {
        "keys": keys,
        "stored_predictions": stored_predictions,
        "score_s": scored["seconds"],
        "empty_score_s": ctx.scored["seconds"],
        "stored_rows": stored,
        "intervals": intervals,
        "validate_s": validated["seconds"],
        "merge_s": merge_seconds,
        "empty_validate_s": median(ctx.validate_times),
        "empty_merge_s": median(ctx.merge_times),
    }
    bench.progress(
        f"history: validate {validated['seconds']:.2f}s, merge {merge_seconds:.2f}s, score {scored['seconds']:.2f}s "
        f"({stored_predictions:,} other predictions stored)"
    )
    return result


def add_to_sql_line(report: Any, rows: int, baseline: dict[str, Any]) -> None:
    """The load section's ``pandas read_csv + DataFrame.to_sql`` line from the baseline's runs (the whole batch,
    median of the runs), placed after the other load lines; the full bench does not time a separate slice."""
    runs = sorted(r["read"] + r["write"] for r in baseline["runs"])
    report.add(
        Measurement(
            "load",
            "pandas read_csv + DataFrame.to_sql",
            rows,
            median(runs),
            note=f"the baseline's steps, whole batch: chunksize 10,000, method=None; median of {len(runs)}, runs: "
            + ", ".join(f"{t:.1f}" for t in runs)
            + " s",
        )
    )
    last_load = max(i for i, m in enumerate(report.measurements[:-1]) if m.section == "load")
    report.measurements.insert(last_load + 1, report.measurements.pop())


def _seconds(report: Any, section: str, prefix: str) -> float | None:
    found = report.find(section, prefix)
    return None if found is None else found.seconds
