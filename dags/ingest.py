"""
### Ingest: one night of a dataset into the warehouse

One DAG per dataset spec in `include/specs/` (`ingest__<dataset>`), on the spec's schedule,
one run per data interval `[data_interval_start, data_interval_end)`.

1. **extract** brings the interval's raw files into the landing folder (simulator, dropped
   CSV/Parquet files, or a source table read by interval bounds).
2. **stage** streams them into a staging table with `COPY`; unreadable lines are quarantined.
3. **validate** runs the Great Expectations suites generated from the spec inside PostgreSQL:
   failing rows go to `ops.quarantine` with their rule; a broken schema, an empty batch or too
   many bad rows reject the batch (ops are mailed, nothing is merged, Data Docs show why).
4. **merge** replaces the interval in the warehouse in one transaction, upserts late labels,
   writes `ops.load_audit`, and updates the `warehouse_<dataset>` Asset (scoring and
   monitoring are scheduled on it).
5. **archive** moves the raw input to the archive (only now: it is safely in the warehouse).

Every task is idempotent: clearing any run, or backfilling a range, gives the result of one
clean run. Data rejections fail at once (no retries); infrastructure errors are retried.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, dag, task

from nightly_ml.dag_support import START_DATE, default_args, interval_extra, resolve_interval, warehouse_asset
from nightly_ml.spec import DatasetSpec, load_all_specs


def build(spec: DatasetSpec):
    dataset = spec.name
    asset = warehouse_asset(dataset)

    @dag(
        dag_id=f"ingest__{dataset}",
        schedule=CronDataIntervalTimetable(spec.schedule, timezone="UTC"),
        start_date=START_DATE,
        catchup=spec.catchup,
        max_active_runs=1,
        default_args=default_args(),
        tags=["nightly-ml", "ingest", dataset],
        doc_md=__doc__,
    )
    def ingest() -> None:
        @task(multiple_outputs=False)
        def extract(**context) -> dict:
            from nightly_ml import ingest as steps

            start, end = resolve_interval(context)
            return {"start": start.isoformat(), "end": end.isoformat(), "files": steps.extract(dataset, start, end)}

        @task(multiple_outputs=False)
        def stage(extracted: dict, **context) -> dict:
            from datetime import datetime

            from airflow.sdk.exceptions import AirflowFailException

            from nightly_ml import ingest as steps
            from nightly_ml.staging import BatchRejected

            start, end = datetime.fromisoformat(extracted["start"]), datetime.fromisoformat(extracted["end"])
            try:
                summary = steps.stage(dataset, start, end, extracted["files"], context["run_id"])
            except BatchRejected as rejected:
                raise AirflowFailException(str(rejected)) from rejected
            return {**extracted, "stage": summary}

        @task(multiple_outputs=False)
        def validate(staged: dict, **context) -> dict:
            from datetime import datetime

            from airflow.sdk.exceptions import AirflowFailException

            from nightly_ml import ingest as steps
            from nightly_ml.staging import BatchRejected

            start, end = datetime.fromisoformat(staged["start"]), datetime.fromisoformat(staged["end"])
            try:
                report = steps.validate(
                    dataset, start, end, staged["stage"], context["run_id"], steps.reference_profile(dataset)
                )
            except BatchRejected as rejected:
                docs = steps.data_docs_url(dataset, start)
                if docs:
                    context["ti"].xcom_push(key="data_docs_url", value=docs)
                raise AirflowFailException(str(rejected)) from rejected
            if report.get("data_docs_url"):
                context["ti"].xcom_push(key="data_docs_url", value=report["data_docs_url"])
            return {**staged, "validation": report}

        @task(outlets=[asset], multiple_outputs=False)
        def merge(validated: dict, **context) -> dict:
            from datetime import datetime

            from nightly_ml import ingest as steps

            start, end = datetime.fromisoformat(validated["start"]), datetime.fromisoformat(validated["end"])
            result = steps.merge(dataset, start, end, validated["stage"], validated["validation"], context["run_id"])
            context["outlet_events"][asset].extra = {"dataset": dataset, **interval_extra(start, end)}
            return {**validated, "merge": result}

        @task(multiple_outputs=False)
        def archive(merged: dict) -> str | None:
            from datetime import datetime

            from nightly_ml import ingest as steps

            return steps.finish(dataset, datetime.fromisoformat(merged["start"]), merged["stage"])

        archive(merge(validate(stage(extract()))))

    return ingest()


for _spec in load_all_specs():
    globals()[f"ingest__{_spec.name}"] = build(_spec)
