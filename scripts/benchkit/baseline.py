"""The pipeline users would otherwise write, run in the separate bench environment (``.venv-bench``).

``python baseline.py JOB.json`` prints one JSON object: seconds per step and the peak RSS (MiB). Steps:
``pandas.read_csv`` of the batch, Great Expectations on the DataFrame (the expectations the parent
derived from the dataset spec), ``DataFrame.to_sql`` into the warehouse database, Evidently's
``DataDriftPreset`` of the batch against the reference window (read with ``pandas.read_sql``), and
``predict_proba`` of the project's model on the frame. Imports nothing from nightly_ml.
"""

from __future__ import annotations

import json
import pickle
import resource
import sys
import time
from typing import Any


def _timed(times: dict[str, float], name: str, function: Any) -> Any:
    started = time.perf_counter()
    value = function()
    times[name] = time.perf_counter() - started
    return value


def validate(frame: Any, expectations: list[dict[str, Any]]) -> bool:
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    asset = context.data_sources.add_pandas("bench").add_dataframe_asset("batch")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    suite = gx.ExpectationSuite(name="bench")
    for item in expectations:
        suite.add_expectation(getattr(gx.expectations, item["type"])(**item["kwargs"]))
    return bool(batch.validate(suite).success)


def drift(reference: Any, current: Any, columns: list[str]) -> int:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    result = Report([DataDriftPreset()]).run(current[columns], reference[columns]).dict()
    return int(result["metrics"][0]["value"]["count"])


def main(path: str) -> int:
    import pandas as pd
    import sqlalchemy

    with open(path, encoding="utf-8") as handle:
        job = json.load(handle)
    times: dict[str, float] = {}
    # Imported before the clock starts, as nightly-ml's workers import them once (nightly_ml.tasks.preload):
    # the steps compare work, not imports (GX ~6 s, Evidently ~3 s here).
    import evidently.presets  # noqa: F401
    import great_expectations  # noqa: F401

    frame = _timed(times, "read", lambda: pd.read_csv(job["csv"]))
    frame[job["event_time"]] = pd.to_datetime(frame[job["event_time"]], utc=True)
    valid = _timed(times, "validate", lambda: validate(frame, job["expectations"]))
    engine = sqlalchemy.create_engine(job["sqlalchemy_url"])
    try:
        _timed(
            times,
            "write",
            lambda: frame.to_sql(
                job["table"], engine, schema="bench", if_exists="replace", index=False, chunksize=10_000
            ),
        )

        def read_reference_and_drift() -> int:
            reference = pd.read_sql(job["reference_query"], engine)
            return drift(reference, frame, job["features"])

        drifted = _timed(times, "drift", read_reference_and_drift)
    finally:
        engine.dispose()
    with open(job["model"], "rb") as handle:
        model = pickle.load(handle)  # the bench's own model, pickled by the parent

    def predict() -> int:
        features = frame[job["features"]].copy()
        for name in job["text_features"]:
            features[name] = features[name].map(lambda v: v if pd.isna(v) else str(v).lower()).astype(object)
        for name in job["numeric_features"]:
            features[name] = features[name].astype("float64")
        return len(model.predict_proba(features))

    predicted = _timed(times, "predict", predict)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"seconds": times, "valid": valid, "drifted": drifted, "rows": predicted, "peak_mib": peak_mib}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
