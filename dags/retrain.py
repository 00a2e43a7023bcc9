"""
### Retrain: fit challengers, log them to MLflow, promote only a better one

One DAG per dataset (`retrain__<dataset>`). It runs when monitoring triggers it (drift,
decay, a failing soft expectation, or no champion yet), on the spec's weekly schedule, and
by hand with the form below (force, window end, model family, reason).

1. **check_data** skips the run (with the reason) while the training window holds too few
   labelled rows — e.g. the first nights, before late labels arrive.
2. **train** fits the spec's candidate pipelines with a small time-series search, logs params,
   metrics, the dataset digest, signature and a model card to MLflow and registers the best
   as a new version. A retried task reuses the version its run registered (unless `force`).
3. **promote** evaluates challenger and champion on the same holdout and applies the spec's
   gate; the `champion` alias moves under a PostgreSQL advisory lock and the move is written
   to `ops.promotion_history`. Either way ops get a mail.
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, Param, dag, task

from nightly_ml.spec import DatasetSpec, load_all_specs
from nightly_ml.tasks.common import dag_start, default_args


def params_for(spec: DatasetSpec) -> dict[str, Param]:
    return {
        "reason": Param("manual retrain", type="string", minLength=3, description="Why this run retrains."),
        "force": Param(
            False, type="boolean", description="Train a new version even if this run already registered one."
        ),
        "window_end": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="End of the training window (UTC). Empty: the newest merged interval.",
        ),
        "model_family": Param(
            "all",
            type="string",
            enum=["all", *(c.name for c in spec.training.candidates)],
            description="Train only this candidate from the spec, or all of them.",
        ),
        "interval_start": Param(None, type=["null", "string"], description="Set by monitoring: the interval."),
        "interval_end": Param(None, type=["null", "string"], description="Set by monitoring: the interval."),
        "drifted_features": Param([], type="array", description="Set by monitoring: features that drifted."),
        "triggered_by": Param("manual", type="string", description="manual, schedule or monitor."),
    }


def build(spec: DatasetSpec):
    dataset = spec.name
    schedule = CronTriggerTimetable(spec.training.schedule, timezone="UTC") if spec.training.schedule else None

    @dag(
        dag_id=f"retrain__{dataset}",
        schedule=schedule,
        start_date=dag_start(spec),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(timeout_minutes=120),
        params=params_for(spec),
        tags=["nightly-ml", "retrain", dataset],
        doc_md=__doc__,
    )
    def retrain() -> None:
        @task.short_circuit
        def check_data(**context) -> bool:
            from nightly_ml.tasks import retrain as steps

            window_end = steps.resolve_window_end(dataset, context["params"])
            found = steps.labelled_rows(dataset, window_end)
            context["ti"].xcom_push(key="window_end", value=window_end.isoformat())
            print(found["reason"])
            return bool(found["enough"])

        @task(multiple_outputs=False)
        def train(**context) -> dict:
            from datetime import datetime

            from nightly_ml.tasks import retrain as steps

            params, ti = context["params"], context["ti"]
            window_end = datetime.fromisoformat(ti.xcom_pull(task_ids="check_data", key="window_end"))
            reused = None if params["force"] else steps.existing_version(dataset, ti.dag_id, ti.run_id)
            if reused:
                return {"version": reused, "window_end": window_end.isoformat(), "reused": True}
            trigger = {
                "reason": params["reason"],
                "triggered_by": "schedule" if context["dag_run"].run_type == "scheduled" else params["triggered_by"],
                "interval_start": params["interval_start"],
                "interval_end": params["interval_end"],
                "drifted_features": params["drifted_features"],
                "model_family": params["model_family"],
            }
            airflow_context = {
                "dag_id": ti.dag_id,
                "run_id": ti.run_id,
                "task_id": ti.task_id,
                "try_number": ti.try_number,
                "data_interval_start": params["interval_start"],
                "data_interval_end": params["interval_end"],
            }
            result = steps.train(
                dataset,
                window_end,
                trigger=trigger,
                airflow_context=airflow_context,
                model_family=params["model_family"],
            )
            ti.xcom_push(key="mlflow_run_url", value=result["mlflow_run_url"])
            return result

        @task(multiple_outputs=False)
        def promote(trained: dict, **context) -> dict:
            from datetime import datetime

            from nightly_ml.tasks import retrain as steps

            return steps.gate_and_promote(
                dataset,
                trained["version"],
                datetime.fromisoformat(trained["window_end"]),
                actor=f"airflow:{context['ti'].dag_id}/{context['ti'].run_id}",
                reason=context["params"]["reason"],
            )

        promote(check_data() >> train())

    return retrain()


for _spec in load_all_specs():
    globals()[f"retrain__{_spec.name}"] = build(_spec)
