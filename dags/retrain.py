"""
### Retrain: fit challengers, log them to MLflow, promote only a better one

One DAG per dataset (`retrain__<dataset>`). It runs when monitoring triggers it (drift,
decay, a failing soft expectation, or no champion yet), on the spec's weekly schedule, and
by hand with the form below (force, window end, model family, reason).

1. **plan** finds the training window and **enough_data** skips the run (with the reason)
   while the window holds too few labelled rows — e.g. the first nights, before late labels arrive.
   While a performance decay goes on, monitoring sets `train_since` to the night it began: once
   the rows since then are enough to train and hold out, the window starts there (rows from before
   a sudden change teach what no longer holds); until then it is the spec's whole window.
2. **train** fits the spec's candidate pipelines with a small time-series search, logs params,
   metrics, the dataset digest, signature and a model card to MLflow and registers the best
   as a new version. A retried task reuses the version its run registered (unless `force`).
3. **promote** evaluates challenger and champion on the same holdout and applies the spec's
   gate; the `champion` alias moves under a PostgreSQL advisory lock and the move is written
   to `ops.promotion_history`. Either way ops get a mail.
"""

from __future__ import annotations

from airflow.sdk import CronTriggerTimetable, Param, dag, task

from nightly_ml.layout import XCOM_MLFLOW_RUN_URL
from nightly_ml.spec import DatasetSpec, load_all_specs
from nightly_ml.tasks.common import INSTANT_PATTERN, dag_start, default_args


def params_for(spec: DatasetSpec) -> dict[str, Param]:
    return {
        "reason": Param("manual retrain", type="string", minLength=3, description="Why this run retrains."),
        "force": Param(
            False, type="boolean", description="Train a new version even if this run already registered one."
        ),
        "window_end": Param(
            None,
            type=["null", "string"],
            pattern=INSTANT_PATTERN,
            description="End of the training window (ISO 8601; without an offset, UTC). Empty: the newest merged "
            "interval.",
        ),
        "train_since": Param(
            None,
            type=["null", "string"],
            pattern=INSTANT_PATTERN,
            description="Train only on rows from this instant on (ISO 8601; without an offset, UTC), e.g. where a "
            "change began, once they are enough to train and hold out; until then on the spec's window_days. Set "
            "by monitoring while a performance decay goes on.",
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
    schedule = CronTriggerTimetable(spec.training.schedule, timezone=spec.timezone) if spec.training.schedule else None

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
        @task(multiple_outputs=False)
        def plan(**context) -> dict:
            from nightly_ml.tasks import retrain as steps

            return steps.plan(dataset, context["params"])

        @task.short_circuit
        def enough_data(planned: dict) -> bool:
            print(planned["reason"])
            return bool(planned["enough"])

        @task(multiple_outputs=False)
        def train(planned: dict, **context) -> dict:
            from nightly_ml.tasks import retrain as steps

            params, ti = context["params"], context["ti"]
            reused = None if params["force"] else steps.existing_version(dataset, ti.dag_id, ti.run_id)
            if reused:
                return {
                    "version": reused,
                    "window_end": planned["window_end"],
                    "train_since": planned["train_since"],
                    "reused": True,
                }
            result = steps.train(
                dataset,
                steps.parse_utc(planned["window_end"]),
                trigger=steps.trigger_of(params, scheduled=context["dag_run"].run_type == "scheduled"),
                airflow_context=steps.airflow_context_of(ti, params),
                model_family=params["model_family"],
                since=steps.parse_optional_utc(planned["train_since"]),
            )
            ti.xcom_push(key=XCOM_MLFLOW_RUN_URL, value=result["mlflow_run_url"])
            return result

        @task(multiple_outputs=False)
        def promote(trained: dict, **context) -> dict:
            from nightly_ml.tasks import retrain as steps

            return steps.gate_and_promote(
                dataset,
                trained["version"],
                steps.parse_utc(trained["window_end"]),
                actor=f"airflow:{context['ti'].dag_id}/{context['ti'].run_id}",
                reason=context["params"]["reason"],
                since=steps.parse_optional_utc(trained["train_since"]),
            )

        planned = plan()
        promote(enough_data(planned) >> train(planned))

    return retrain()


for _spec in load_all_specs():
    globals()[f"retrain__{_spec.name}"] = build(_spec)
