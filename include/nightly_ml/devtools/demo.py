"""``make run``: play simulated nights through the real Airflow DAGs and print what happened.

With no ``WAREHOUSE_URL`` an embedded PostgreSQL (the ``pgserver`` wheel) is started under
the data dir; with no ``MLFLOW_TRACKING_URI`` MLflow uses a SQLite store there. Each night,
for each dataset, the DAGs run in the order the scheduler would run them:
``ingest`` → (warehouse Asset) → ``score`` → (predictions Asset) → ``monitor`` → and, when
monitoring triggered it, ``retrain``. Each runs with ``dag.test()``: the real DAG, its tasks
and the Airflow metadata DB, in this one process — the Asset and trigger hand-offs that a
scheduler would do are done here, which is what keeps a three-week demo to minutes.

The summary is read back from the warehouse (``ops.*`` tables) and the MLflow registry.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from nightly_ml import storage
from nightly_ml.config import PROJECT_ROOT, settings
from nightly_ml.devtools import replay

log = logging.getLogger("nightly_ml.devtools.demo")

DEFAULT_START = date(2026, 1, 1)
# The demo's story: churn sees a sudden covariate shift, demand a change in the label's relation.
DEFAULT_SCENARIOS = {"churn": ("sudden_covariate", 10), "demand": ("concept", 10)}


def ensure_warehouse(data_dir: Path) -> str:
    """The warehouse URL from the environment, or an embedded PostgreSQL started under the data dir."""
    if os.environ.get("WAREHOUSE_URL"):
        return os.environ["WAREHOUSE_URL"]
    from nightly_ml.devtools import embedded

    url = embedded.start(data_dir)
    os.environ["WAREHOUSE_URL"] = url
    settings.cache_clear()
    print(f"embedded PostgreSQL running: {url}")
    return url


def write_demo_specs(data_dir: Path, start: date, scenarios: dict[str, tuple[str, int]], datasets: list[str]) -> Path:
    """Copies of the shipped specs with the demo's drift scenarios switched on."""
    target = data_dir / "demo_specs"
    target.mkdir(parents=True, exist_ok=True)
    for name in datasets:
        raw = yaml.safe_load((PROJECT_ROOT / "include" / "specs" / f"{name}.yaml").read_text())
        if name in scenarios and raw["source"]["kind"] == "simulator":
            scenario, night = scenarios[name]
            raw["source"]["scenario"] = scenario
            raw["source"]["drift_start"] = (start + timedelta(days=night)).isoformat()
        (target / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return target


def migrate_airflow() -> None:
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)


def summary(datasets: list[str], outcomes: list[replay.NightOutcome]) -> str:
    from nightly_ml import db
    from nightly_ml.spec import load_spec

    lines: list[str] = []
    with db.transaction() as conn, conn.cursor() as cur:
        for name in datasets:
            spec = load_spec(name)
            lines.append(f"\n=== {name} ({spec.task}) ===")
            cur.execute(db.load_sql("demo_load_summary.sql"), {"dataset": name})
            merged, rejected, rows, quarantined, labels = cur.fetchone()
            lines.append(
                f"nights merged: {merged}, rejected: {rejected}; rows landed: {rows}, "
                f"quarantined: {quarantined}, late labels applied: {labels}"
            )
            cur.execute(db.load_sql("demo_quarantine_rules.sql"), {"dataset": name})
            for rule, count in cur.fetchall():
                lines.append(f"  quarantined by {rule}: {count}")
            lines.append("timeline (night: ingest | drift | decision | retrain → promotion):")
            cur.execute(db.load_sql("demo_timeline.sql"), {"dataset": name})
            retrains = {o.interval_start.date(): o.retrain for o in outcomes if o.dataset == name}
            for night, status, rows_merged, quarantined, drifted, should_retrain, reasons in cur.fetchall():
                parts = [f"  {night:%Y-%m-%d}: {status} {rows_merged} rows ({quarantined} quarantined)"]
                if drifted:
                    parts.append(f"drifted: {', '.join(drifted)}")
                retrain = retrains.get(night.date(), "-")
                if should_retrain and retrain == "-":
                    parts.append("still drifting; retrain cool-down")
                elif should_retrain:
                    parts.append("retrain: " + (reasons[0][:100] if reasons else "requested"))
                if retrain != "-":
                    parts.append(f"→ {retrain[:160]}")
                lines.append(" | ".join(parts))
            lines.append(_champion_line(spec))
    return "\n".join(lines)


def _champion_line(spec: Any) -> str:
    from nightly_ml.registry import access

    champion = access.get_champion(spec)
    if champion is None:
        return "champion: none yet"
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(champion.metrics.items()))
    return f"champion: {spec.registered_model_name} v{champion.version} — holdout {metrics}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=int(os.environ.get("DEMO_NIGHTS", "18")))
    parser.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START)
    parser.add_argument("--datasets", default="churn,demand")
    parser.add_argument("--stationary", action="store_true", help="no drift scenario")
    parser.add_argument("--verbose", action="store_true", help="Airflow's task logs on the terminal, not in a file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    # dag.test() waits out retry delays in-process: keep them short for a demo.
    os.environ.setdefault("NIGHTLY_ML_RETRY_DELAY_SECONDS", "2")
    settings.cache_clear()
    config = settings()
    data_dir = config.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    ensure_warehouse(data_dir)
    scenarios = {} if args.stationary else DEFAULT_SCENARIOS
    os.environ["NIGHTLY_ML_SPEC_DIR"] = str(write_demo_specs(data_dir, args.start, scenarios, datasets))
    os.environ.setdefault("MLFLOW_TRACKING_URI", config.mlflow_tracking_uri)
    settings.cache_clear()
    (data_dir / "mlflow").mkdir(parents=True, exist_ok=True)

    from nightly_ml import db

    db.migrate()
    print(
        f"warehouse migrated; MLflow at {settings().mlflow_tracking_uri}; Airflow home {os.environ.get('AIRFLOW_HOME')}"
    )
    migrate_airflow()

    from nightly_ml.spec import load_spec

    log_file = None if args.verbose else data_dir / "logs" / "demo_tasks.log"
    replay.send_task_logs_to(log_file)
    if log_file:
        print(f"Airflow task logs: {log_file} (--verbose shows them here)")
    bag = replay.load_dag_bag(str(PROJECT_ROOT / "dags"))
    specs = [load_spec(name) for name in datasets]
    first = datetime(args.start.year, args.start.month, args.start.day, tzinfo=UTC)
    last = first + timedelta(days=args.nights - 1)
    outcomes: list[replay.NightOutcome] = []
    for night in replay.intervals_between(specs[0], first, last):
        for spec in specs:
            outcome = replay.play_interval(bag, spec, night, scheduled_retrains=False)
            outcomes.append(outcome)
            print(
                f"{outcome.label} {spec.name:>8}: ingest {outcome.ingest}, score {outcome.score}, "
                f"monitor {outcome.monitor}, retrain {outcome.retrain}",
                flush=True,
            )
    print(summary(datasets, outcomes))
    print(
        f"\nreports: {storage.reports_root()}\nalerts written to: {storage.outbox_root()} (no SMTP connection set)"
        if not os.environ.get("AIRFLOW_CONN_SMTP_ALERTS")
        else ""
    )
    print(
        "\nThe same runs are in the Airflow UI: `make up`, then open http://localhost:8080 (the login is printed) "
        "and the DAGs ingest__*, score__*, monitor__*, retrain__*; drift reports are linked from each monitor run."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
