"""
### Monitor: drift and live performance of each scored interval, and the branch into retraining

One DAG per dataset (`monitor__<dataset>`), scheduled on the `predictions_<dataset>` Asset,
so it runs once per landed interval, after the champion has scored it.

- **check** compares the interval with the champion's reference (its training window):
  PSI on reference-quantile bins, KS for numbers, chi-square and unseen categories for
  categories — aggregated in PostgreSQL — plus prediction drift and live performance on
  rows whose labels have arrived. Results go to `ops.drift_metrics` / `ops.monitoring_runs`
  and to an HTML report (link on the task: "Drift report").
- **decide** branches: drift or decay beyond the spec's thresholds, a failing soft
  expectation, or no champion yet → **trigger_retrain** (with the reason, the interval and
  the drifted features) and a mail to ops; drift whose labelled rows do not yet fill a
  retrain's holdout → **alert_drift** (retraining waits for them: a challenger judged on
  rows from before the shift judges nothing; ops are mailed on the first such night); a
  rejected interval → **stop** (never train on bad data); otherwise → **no_action**.
"""

from __future__ import annotations

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import TriggerRule, dag, task

from nightly_ml.layout import XCOM_DRIFT_REPORT_URL
from nightly_ml.spec import DatasetSpec, load_all_specs
from nightly_ml.tasks.common import dag_start, default_args, interval_params, predictions_asset, resolve_intervals


def build(spec: DatasetSpec):
    dataset = spec.name

    @dag(
        dag_id=f"monitor__{dataset}",
        schedule=[predictions_asset(dataset)],
        start_date=dag_start(spec),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(timeout_minutes=60),
        params=interval_params("monitor"),
        tags=["nightly-ml", "monitor", dataset],
        doc_md=__doc__,
    )
    def monitor() -> None:
        @task(multiple_outputs=False)
        def check(**context) -> dict:
            from nightly_ml.tasks import monitor as steps

            decision = steps.monitor_intervals(dataset, resolve_intervals(context), context["run_id"])
            if decision.get("report_url"):
                context["ti"].xcom_push(key=XCOM_DRIFT_REPORT_URL, value=decision["report_url"])
            return decision

        @task.branch
        def decide(summary: dict) -> str:
            from nightly_ml.tasks import monitor as steps

            return steps.branch_for(summary)

        @task(multiple_outputs=False)
        def retrain_conf(summary: dict) -> dict:
            from nightly_ml.tasks import monitor as steps

            return steps.retrain_conf(summary)

        @task
        def alert_ops(summary: dict) -> str | None:
            from nightly_ml.tasks import monitor as steps

            return steps.alert_retraining(summary)

        @task
        def alert_drift(summary: dict) -> str | None:
            from nightly_ml.tasks import monitor as steps

            return steps.alert_drift_awaiting_labels(summary)

        summary = check()
        branch = decide(summary)
        conf = retrain_conf(summary)
        trigger_retrain = TriggerDagRunOperator(
            task_id="trigger_retrain",
            trigger_dag_id=f"retrain__{dataset}",
            conf=conf,
            wait_for_completion=False,
        )
        stop = EmptyOperator(task_id="stop")
        no_action = EmptyOperator(task_id="no_action")
        done = EmptyOperator(task_id="done", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)

        waiting = alert_drift(summary)
        branch >> [conf, stop, no_action, waiting]
        conf >> trigger_retrain >> alert_ops(summary) >> done
        [stop, no_action, waiting] >> done

    return monitor()


for _spec in load_all_specs():
    globals()[f"monitor__{_spec.name}"] = build(_spec)
