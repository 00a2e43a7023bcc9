"""Tasks measured in fresh child processes (forked from a fork server that only imported modules): time and
peak memory."""

from __future__ import annotations

import multiprocessing
import pickle
import time
from collections.abc import Callable
from typing import Any

from scripts.benchkit.common import MIB, MODEL_VERSION, median


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
    # Warm-up on the file's first 100 rows. Reading the whole file here (as before) cost a second read of the batch
    # and left ~180 MiB of freed Arrow/pandas memory in the process, so the task peak missed that much of the read.
    import pyarrow.parquet as pq

    warm = next(pq.ParquetFile(job["parquet_path"]).iter_batches(batch_size=100)).to_pandas()
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


def _child_validate(job: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process, as the validate task runs: validation.validate of the staged batch (its stage passed as
    the task's XCom dict), committed. Great Expectations is in the fork server already, as it is in an Airflow
    worker (nightly_ml.tasks.preload): its import (~6 s) is not in the time; section_ingest reports it apart."""
    from nightly_ml import db
    from nightly_ml.etl import validation
    from nightly_ml.etl.staging import StageResult
    from nightly_ml.spec import load_spec

    spec = load_spec(job["dataset"])
    stage = StageResult.from_dict(job["stage"])
    conn = db.connect(job["url"])
    try:
        probe = MemoryProbe()
        probe.start()
        started = time.perf_counter()
        report = validation.validate(conn, spec, stage, job["start"], job["end"], "bench")
        seconds = time.perf_counter() - started
        memory = probe.stop()
        conn.commit()
    finally:
        conn.close()
    return {"seconds": seconds, "expectations": len(report.outcomes), "bad_rows": report.bad_rows, **memory}


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
    side = db.connect(job["url"])  # as run_monitoring: the predictions' part reads beside the feature counts
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
                side=side,
            )
        seconds = time.perf_counter() - started
        memory = probe.stop()
    finally:
        side.close()
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


PRELOAD = "scripts.benchkit.preload"
_context: Any = None


def _child_context() -> Any:
    """A ``forkserver`` context whose server has imported :mod:`scripts.benchkit.preload` (pandas, scikit-learn,
    the nightly_ml modules, Airflow's import that ``settings()`` pays for): every run still gets a fresh process
    that never ran a task, but forked in a fraction of a second instead of ~10 s of imports under ``spawn``.
    ``spawn`` where there is no fork server (not POSIX)."""
    global _context
    if _context is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(["__main__", PRELOAD])
        else:
            _context = multiprocessing.get_context("spawn")
    return _context


def _with_environ(function: Callable[[dict[str, Any]], dict[str, Any]], job: dict[str, Any], environ: dict) -> dict:
    """In the child: the parent's environment as it is now (the fork server keeps the one it started with) and
    nightly_ml's settings read from it again."""
    import os

    os.environ.clear()
    os.environ.update(environ)
    from nightly_ml import config

    config.settings.cache_clear()
    return function(job)


def in_child(function: Callable[[dict[str, Any]], dict[str, Any]], job: dict[str, Any]) -> dict[str, Any]:
    """Run ``function(job)`` in a new process and return its result, with the task's peak memory. A job on a
    database (``url``) starts on a settled server (database.settle)."""
    import os

    from scripts.benchkit.database import settle

    if job.get("url"):
        settle(job["url"])
    pool = _child_context().Pool(1)
    try:
        return pool.apply(_with_environ, (function, job, dict(os.environ)))
    finally:
        # close + join, not terminate: the child exits normally, running its libraries' exit handlers (joblib's
        # semaphores are released instead of being reported as leaked when the bench ends)
        pool.close()
        pool.join()


def median_child(function: Callable[[dict[str, Any]], dict[str, Any]], job: dict[str, Any], runs: int) -> dict:
    """``in_child`` ``runs`` times: the median run's result (by seconds), with every run's seconds; its peaks are
    the medians of the runs' peaks (every run's task peak in ``peaks``)."""
    results = sorted((in_child(function, job) for _ in range(runs)), key=lambda r: r["seconds"])
    peaks = [r["task_peak_mib"] for r in results]
    return {
        **results[len(results) // 2],
        "runs": [r["seconds"] for r in results],
        "peaks": peaks,
        "task_peak_mib": median(peaks),
        "peak_mib": median([r["peak_mib"] for r in results]),
    }
