"""Task steps of ``backtest__<dataset>``: the policy's report over a range the pipeline has replayed.

The replay itself is the pipeline's own: Airflow's backfill of ``ingest__<dataset>`` over the
range (the Asset chain scores and monitors each interval, retraining as the policy says), or
``make backtest`` which plays the same DAGs in one process. This DAG then compares what the
policy did with a naive seasonal baseline and a fixed-cadence retraining policy on the same
intervals. A range that was not replayed fails at once, saying how to replay it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TypedDict

from nightly_ml import db, layout, storage
from nightly_ml.intervals import parse_utc
from nightly_ml.spec import load_spec


class BacktestRange(TypedDict):
    dataset: str
    start: str
    end: str
    intervals: int


class NotReplayed(RuntimeError):
    """The range holds intervals the pipeline has not loaded and monitored yet."""


def plan(dataset: str, first_day: str | None, last_day: str | None) -> BacktestRange:
    """The replayed intervals between two local days (default: the spec's start_date to the newest loaded)."""
    spec = load_spec(dataset)
    first = date.fromisoformat(first_day) if first_day else spec.start_date
    start = datetime(first.year, first.month, first.day, tzinfo=spec.zone)
    end = datetime.max.replace(tzinfo=spec.zone)
    if last_day:
        last = date.fromisoformat(last_day)
        end = datetime(last.year, last.month, last.day, tzinfo=spec.zone)
    if end <= start:
        raise ValueError(f"{dataset}: last_day {last_day} is before first_day {first}")
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(db.load_sql("backtest_loaded_intervals.sql"), {"dataset": dataset, "start": start, "end": end})
        loaded = cur.fetchall()
    if not loaded:
        raise NotReplayed(
            f"{dataset}: no interval between {first} and {last_day or 'now'} was loaded. Replay it first: "
            f"`airflow backfill create --dag-id ingest__{dataset} --from-date {first} --to-date <last day>` "
            f"(or `make backtest DATASET={dataset} FROM={first} TO=<last day>`)"
        )
    missing = [s for s, _, monitored in loaded if not monitored]
    if missing:
        raise NotReplayed(
            f"{dataset}: {len(missing)} loaded interval(s) were not monitored yet (first: {missing[0]}); "
            "wait for the score and monitor runs of the backfill to finish, then run this again"
        )
    return {
        "dataset": dataset,
        "start": loaded[0][0].isoformat(),
        "end": loaded[-1][1].isoformat(),
        "intervals": len(loaded),
    }


def report(planned: BacktestRange, fixed_cadence_days: int) -> dict[str, str | None]:
    """Compare the policy with the baseline and the fixed cadence; write the HTML and JSON report."""
    from nightly_ml.monitoring import backtest

    spec = load_spec(planned["dataset"])
    summary = backtest.summarize(
        spec, parse_utc(planned["start"]), parse_utc(planned["end"]), fixed_cadence_days=fixed_cadence_days
    )
    html, data = backtest.write_report(spec, summary, storage.root())
    print(backtest.render_summary_text(summary))
    return {"report_url": layout.public_url(html), "data_url": layout.public_url(data)}
