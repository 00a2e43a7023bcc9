"""
### Rollback: move the champion back, in one manual run

One DAG per dataset (`rollback__<dataset>`), never scheduled. Trigger it from the UI with a
target — `previous` (the champion before the latest move) or a model version number — and a
reason. The `champion` alias moves under the same PostgreSQL advisory lock as promotions,
the move is recorded in `ops.promotion_history`, and ops get a mail. Scoring uses the
restored champion from its next run; re-run `score__<dataset>` for an interval to re-score it.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from nightly_ml.spec import DatasetSpec, load_all_specs
from nightly_ml.tasks.common import dag_start, default_args

PARAMS = {
    "target": Param(
        "previous",
        type="string",
        pattern=r"^(previous|[1-9][0-9]*)$",
        description="'previous', or the model version number to make champion.",
    ),
    "reason": Param(type="string", minLength=3, description="Why: recorded in the promotion history and the mail."),
}


def build(spec: DatasetSpec):
    dataset = spec.name

    @dag(
        dag_id=f"rollback__{dataset}",
        schedule=None,
        start_date=dag_start(spec),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        params=PARAMS,
        tags=["nightly-ml", "rollback", dataset],
        doc_md=__doc__,
    )
    def rollback() -> None:
        @task(multiple_outputs=False)
        def move_champion(**context) -> dict:
            from nightly_ml.tasks import rollback as steps

            ti = context["ti"]
            return steps.rollback(
                dataset,
                context["params"]["target"],
                actor=f"airflow:{ti.dag_id}/{ti.run_id}",
                reason=context["params"]["reason"],
            )

        move_champion()

    return rollback()


for _spec in load_all_specs():
    globals()[f"rollback__{_spec.name}"] = build(_spec)
