"""
### Score: batch predictions for every interval that lands in the warehouse

One DAG per dataset (`score__<dataset>`), scheduled on the `warehouse_<dataset>` Asset that
`ingest__<dataset>` updates after a merge. It streams the interval's rows through
`models:/<dataset>_model@champion` in chunks and `COPY`s the predictions (with the model
version) into `warehouse.<dataset>_predictions`, replacing the interval's earlier ones.

With no champion yet, it skips with the reason in the log. Either way it updates the
`predictions_<dataset>` Asset, on which monitoring is scheduled. Trigger it by hand with
`interval_start`/`interval_end` to re-score a past interval.

Several intervals in one run (queued Asset events, a backfill, a catch-up) are scored one by one, in
order, each with the champion of its own night — never a model trained on it — and an interval that
version already scored is left as it is.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from nightly_ml.intervals import intervals_extra
from nightly_ml.spec import DatasetSpec, load_all_specs
from nightly_ml.tasks.common import (
    dag_start,
    default_args,
    interval_params,
    predictions_asset,
    resolve_intervals,
    warehouse_asset,
)


def build(spec: DatasetSpec):
    dataset = spec.name
    predictions = predictions_asset(dataset)

    @dag(
        dag_id=f"score__{dataset}",
        schedule=[warehouse_asset(dataset)],
        start_date=dag_start(spec),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(timeout_minutes=60),
        params=interval_params("score"),
        tags=["nightly-ml", "score", dataset],
        doc_md=__doc__,
    )
    def score() -> None:
        @task(outlets=[predictions], multiple_outputs=False)
        def score_intervals(**context) -> list[dict]:
            from nightly_ml.tasks import score as steps

            intervals = resolve_intervals(context)
            results = steps.score_intervals(dataset, intervals)
            context["outlet_events"][predictions].extra = {"dataset": dataset, **intervals_extra(intervals)}
            return results

        score_intervals()

    return score()


for _spec in load_all_specs():
    globals()[f"score__{_spec.name}"] = build(_spec)
