"""
### Backtest: what the retraining policy did over a replayed range, against simpler policies

One manual DAG per dataset (`backtest__<dataset>`). Replay the range first with Airflow's own
backfill of the ingest DAG (the Asset chain scores and monitors each interval with the champion
of that night, and retrains as the policy says):

    airflow backfill create --dag-id ingest__<dataset> --from-date 2013-01-01 --to-date 2013-06-30

then trigger this DAG with the same days. **plan** checks the range was loaded and monitored
(and fails at once, saying how to replay it, if not); **report** compares the pipeline's nightly
live metric with a naive seasonal baseline and a fixed-cadence retraining policy on the same
intervals, counts retrains, promotions and alerts per policy, and writes an HTML and JSON
report (task link "Backtest report"; also listed on the Nightly ML reports page).
`make backtest DATASET=<dataset>` does replay and report in one process.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from nightly_ml.layout import XCOM_BACKTEST_REPORT_URL
from nightly_ml.spec import DatasetSpec, load_all_specs
from nightly_ml.tasks.common import DAY_PATTERN, dag_start, default_args


def build(spec: DatasetSpec):
    dataset = spec.name

    @dag(
        dag_id=f"backtest__{dataset}",
        schedule=None,
        start_date=dag_start(spec),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(timeout_minutes=120),
        params={
            "first_day": Param(
                spec.start_date.isoformat(),
                type="string",
                pattern=DAY_PATTERN,
                title="First day",
                description="First local day of the range (YYYY-MM-DD). Default: the spec's start_date.",
            ),
            "last_day": Param(
                None,
                type=["null", "string"],
                pattern=DAY_PATTERN,
                title="Last day",
                description="Day after the range (exclusive). Empty: up to the newest loaded interval.",
            ),
            "fixed_cadence_days": Param(
                7, type="integer", minimum=1, maximum=90, description="The comparison policy retrains every N days."
            ),
        },
        tags=["nightly-ml", "backtest", dataset],
        doc_md=__doc__,
    )
    def backtest() -> None:
        @task(multiple_outputs=False)
        def plan(**context) -> dict:
            from airflow.sdk.exceptions import AirflowFailException

            from nightly_ml.tasks import backtest as steps

            params = context["params"]
            try:
                return steps.plan(dataset, params["first_day"], params["last_day"])
            except (steps.NotReplayed, ValueError) as refused:
                raise AirflowFailException(str(refused)) from refused

        @task(multiple_outputs=False)
        def report(planned: dict, **context) -> dict:
            from nightly_ml.tasks import backtest as steps

            urls = steps.report(planned, context["params"]["fixed_cadence_days"])
            if urls["report_url"]:
                context["ti"].xcom_push(key=XCOM_BACKTEST_REPORT_URL, value=urls["report_url"])
            return urls

        report(plan())

    return backtest()


for _spec in load_all_specs():
    globals()[f"backtest__{_spec.name}"] = build(_spec)
