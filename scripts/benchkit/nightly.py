"""The bench's score and monitor sections: the project's night against predict_proba and psql \\copy."""

from __future__ import annotations

import math
import pickle
from typing import Any

from scripts.benchkit.children import _child_monitor, _child_predict, _child_score, median_child
from scripts.benchkit.common import (
    DATASET,
    DAY,
    HOLDOUT_DAY,
    LOAD_DAY,
    MODEL_VERSION,
    REFERENCE_DAYS,
    REFERENCE_START,
    SMALL_DAY,
    TRAIN_START,
    Measurement,
    _time,
    progress,
)
from scripts.benchkit.database import load_typed

Context = Any


def cache_reference(ctx: Context) -> Measurement:
    """The champion's reference profile, computed and cached once (what the first night after a promotion does)."""
    from nightly_ml import db
    from nightly_ml.monitoring import aggregates, profiles

    windows = aggregates.Windows(REFERENCE_START, SMALL_DAY, SMALL_DAY, SMALL_DAY + DAY)
    conn = db.connect(ctx.url)
    try:
        with conn:
            rows, _ = aggregates.window_rows(conn, ctx.spec, windows)
            seconds, profile = _time(lambda: profiles.compute_reference(conn, ctx.spec, windows, rows))
    finally:
        conn.close()
    profiles.store_reference(ctx.spec, windows, MODEL_VERSION, profile, ctx.url)
    return Measurement("monitor", "reference profile, once per champion version", rows, seconds, note="cached")


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
    result = median_child(_child_score, job, ctx.args.repeats)
    ctx.scored = result
    ctx.report.add(
        Measurement(
            "score",
            f"scoring.write_predictions (chunks of {chunk:,})",
            result["rows"],
            result["seconds"],
            result["task_peak_mib"],
            note=f"COPY out + Arrow + predict + COPY back; median of {ctx.args.repeats}",
        )
    )
    progress(f"score: predict_proba on the same {rows:,} rows held in memory (child process)")
    result = median_child(_child_predict, {**job, "parquet_path": str(parquet_path)}, ctx.args.repeats)
    ctx.predicted = result
    ctx.report.add(
        Measurement(
            "score",
            "model.predict_proba, whole frame in memory",
            result["rows"],
            result["seconds"],
            result["task_peak_mib"],
            note=f"predict only; feature_frame took {result['feature_seconds']:.1f}s more; "
            "peak includes reading the Parquet file",
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

    ctx.report.add(cache_reference(ctx))
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
        result = median_child(_child_monitor, job, ctx.args.repeats)
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
    ctx.monitored = results
    ctx.report.notes.append(
        f"monitoring memory: task peak {small['task_peak_mib']:.1f} MiB at {small['rows']:,} rows vs "
        f"{large['task_peak_mib']:.1f} MiB at {large['rows']:,} rows ({large['rows'] / small['rows']:.0f}x the rows); "
        "drift aggregates run in PostgreSQL, only the (capped) labelled pairs reach Python."
    )
    ctx.report.notes.append(
        f"task peak MiB = peak RSS of the task in a fresh child process minus its RSS after imports and a warm-up "
        f"({large['memory_method']}; children start at ~{large['baseline_mib']:.0f} MiB)."
    )
