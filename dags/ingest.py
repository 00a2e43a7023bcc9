"""
### Ingest: one night of a dataset into the warehouse

One DAG per dataset spec in `include/specs/` (`ingest__<dataset>`), on the spec's schedule in
its own time zone (local days, DST-correct), from the spec's `start_date`; one run per data
interval. Triggered by hand, the form takes a day or an interval; left empty, the run loads
the latest complete interval.

0. **wait_for_input** (a sensor in reschedule mode: no worker slot is held while it waits)
   waits for the interval's input up to its deadline (interval end + `source.wait_hours`);
   past it, ops get one mail and the run fails. An interval outside the spec's range (before
   its `start_date`, or not over yet) fails here at once, saying what to change.
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

from datetime import timedelta

from airflow.sdk import PokeReturnValue, dag, task

from nightly_ml.intervals import interval_extra
from nightly_ml.layout import XCOM_DATA_DOCS_URL
from nightly_ml.spec import DatasetSpec, load_all_specs
from nightly_ml.tasks.common import (
    dag_start,
    default_args,
    ingest_timetable,
    interval_params,
    resolve_interval,
    warehouse_asset,
)


def build(spec: DatasetSpec):
    dataset = spec.name
    asset = warehouse_asset(dataset)

    @dag(
        dag_id=f"ingest__{dataset}",
        schedule=ingest_timetable(spec),
        start_date=dag_start(spec),
        catchup=spec.catchup,
        max_active_runs=1,
        default_args=default_args(),
        params=interval_params("ingest"),
        tags=["nightly-ml", "ingest", dataset],
        doc_md=__doc__,
    )
    def ingest() -> None:
        @task.sensor(
            mode="reschedule",
            poke_interval=timedelta(minutes=5),
            timeout=timedelta(hours=spec.source.wait_hours + 24),
        )
        def wait_for_input(**context) -> PokeReturnValue:
            from airflow.sdk.exceptions import AirflowFailException

            from nightly_ml.errors import InputPastDeadline, IntervalOutOfRange
            from nightly_ml.tasks import ingest as steps

            try:
                start, end = resolve_interval(context, spec)
                ready = steps.wait_for_input(dataset, start, end)
            except (IntervalOutOfRange, InputPastDeadline) as refused:
                raise AirflowFailException(str(refused)) from refused
            batch: steps.Batch = {"dataset": dataset, "interval_start": start, "interval_end": end}
            return PokeReturnValue(is_done=ready, xcom_value=batch)

        @task(multiple_outputs=False)
        def extract(batch: dict) -> list[dict[str, str]]:
            from nightly_ml.tasks import ingest as steps

            return steps.extract(dataset, *steps.interval_of(batch))

        @task(multiple_outputs=False)
        def stage(batch: dict, files: list[dict[str, str]], **context) -> dict:
            from airflow.sdk.exceptions import AirflowFailException

            from nightly_ml.tasks import ingest as steps

            try:
                return steps.stage(dataset, *steps.interval_of(batch), files, context["run_id"])
            except steps.BatchRejected as rejected:
                raise AirflowFailException(str(rejected)) from rejected

        @task(multiple_outputs=False)
        def validate(batch: dict, staged: dict, **context) -> dict:
            from airflow.sdk.exceptions import AirflowFailException

            from nightly_ml.tasks import ingest as steps

            start, end = steps.interval_of(batch)
            try:
                report = steps.validate(
                    dataset, start, end, staged, context["run_id"], steps.reference_profile(dataset)
                )
            except steps.BatchRejected as rejected:
                docs = steps.data_docs_url(dataset, start)
                if docs:
                    context["ti"].xcom_push(key=XCOM_DATA_DOCS_URL, value=docs)
                raise AirflowFailException(str(rejected)) from rejected
            if report.get("data_docs_url"):
                context["ti"].xcom_push(key=XCOM_DATA_DOCS_URL, value=report["data_docs_url"])
            return report

        @task(outlets=[asset], multiple_outputs=False)
        def merge(batch: dict, staged: dict, validated: dict, **context) -> dict:
            from nightly_ml.tasks import ingest as steps

            start, end = steps.interval_of(batch)
            result = steps.merge(dataset, start, end, staged, validated, context["run_id"])
            context["outlet_events"][asset].extra = {"dataset": dataset, **interval_extra(start, end)}
            return result

        @task(multiple_outputs=False)
        def archive(batch: dict, staged: dict, merged: dict) -> str | None:
            from nightly_ml.tasks import ingest as steps

            return steps.finish(dataset, steps.interval_of(batch)[0], staged)

        batch = wait_for_input()
        staged = stage(batch, extract(batch))
        validated = validate(batch, staged)
        archive(batch, staged, merge(batch, staged, validated))

    return ingest()


for _spec in load_all_specs():
    globals()[f"ingest__{_spec.name}"] = build(_spec)
