"""``make backtest``: replay a dataset's history through the real DAGs and report what the policy did.

    python -m nightly_ml.devtools.backtest --dataset nyc_airport_temperature --from 2013-01-01 --to 2013-03-31

The replay runs in its own workspace — ``<data dir>/backtests/<name>/`` for files and the MLflow
store, and a fresh warehouse database ``backtest_<name>`` on the same PostgreSQL server — so it
starts with no champion and never touches the nightly warehouse. Each interval goes through
ingest → score → monitor → retrain/promote exactly as the scheduler would run it that night
(:mod:`nightly_ml.devtools.replay`), then :mod:`nightly_ml.monitoring.backtest` compares the
pipeline's policy with a naive seasonal baseline and a fixed-cadence retraining policy on the
same intervals, and writes an HTML and a JSON report.

``--shuffle-days SEED`` is the control experiment: the same days in a random order (each day's
rows moved whole to another date), so no season is left; drift should then be flagged on no
more than the spec's false-alarm rate of nights.

For a dataset that ships in a package (:mod:`nightly_ml.devtools.public_data`), the days are
exported into the spec's landing folder first, as a user would drop them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import yaml

from nightly_ml import storage
from nightly_ml.config import PROJECT_ROOT, settings
from nightly_ml.spec import DatasetSpec

SPEC_FOLDERS = (PROJECT_ROOT / "include" / "specs", PROJECT_ROOT / "include" / "specs" / "examples")


def find_spec_file(name: str) -> Path:
    """The spec called ``name``: in the spec directory, or among the shipped examples."""
    folders = (settings().spec_dir, *SPEC_FOLDERS)
    for folder in folders:
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path
    known = sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")})
    raise SystemExit(f"no dataset spec named {name!r} (known: {', '.join(known)})")


def shuffled_days(days: list[date], seed: int) -> dict[date, date]:
    """A seeded permutation of the days: each day's rows move whole to another day of the same set."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(days))
    return {days[i]: days[j] for i, j in enumerate(order)}


def export_public_days(raw_spec: dict, landing_root: Path, first: date, last: date, shuffle_seed: int | None) -> int:
    """Drop a packaged public dataset's days into the landing folder (optionally with the days shuffled)."""
    from nightly_ml.devtools import public_data

    source_name = raw_spec.get("_public_dataset", raw_spec["name"])
    if source_name not in public_data.DATASETS:
        return 0
    if shuffle_seed is None:
        return len(public_data.export_days(source_name, landing_root, first, last))
    import pandas as pd

    staging = landing_root.parent / f".{landing_root.name}.unshuffled"
    shutil.rmtree(staging, ignore_errors=True)
    written = public_data.export_days(source_name, staging, first, last)
    days = [date.fromisoformat(p.parent.name.removeprefix("ds=")) for p in written]
    moves = shuffled_days(days, shuffle_seed)
    event_time = public_data.DATASETS[source_name].event_time
    for path, day in zip(written, days, strict=True):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        shift = pd.Timedelta(days=(moves[day] - day).days)
        stamps = pd.to_datetime(frame[event_time]) + shift
        frame[event_time] = stamps.dt.strftime("%Y-%m-%d %H:%M:%S")
        target = landing_root / f"ds={moves[day].isoformat()}" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(target, index=False, lineterminator="\n")
    shutil.rmtree(staging, ignore_errors=True)
    return len(written)


def prepare_workspace(name: str, shuffle_seed: int | None) -> tuple[str, Path, Path]:
    """A fresh workspace for the replay: its spec directory, data dir and warehouse database."""
    base = settings()
    replay_name = f"{name}_shuffled" if shuffle_seed is not None else name
    workspace = base.data_dir / "backtests" / replay_name
    shutil.rmtree(workspace, ignore_errors=True)
    spec_dir = workspace / "specs"
    spec_dir.mkdir(parents=True)
    raw = yaml.safe_load(find_spec_file(name).read_text())
    if shuffle_seed is not None:
        raw["_public_dataset"] = raw["name"]
        raw["name"] = replay_name
        raw["description"] = f"{raw.get('description', '')} (control: days shuffled with seed {shuffle_seed})"
    source = raw["source"]
    if source.get("kind") == "files" and not Path(source["path"]).is_absolute():
        source["path"] = str(workspace / "landing" / "files")
    return replay_name, workspace, _write_spec(spec_dir, raw)


def _write_spec(spec_dir: Path, raw: dict) -> Path:
    public = raw.pop("_public_dataset", None)
    (spec_dir / f"{raw['name']}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    if public:
        (spec_dir / ".public_dataset").write_text(public)
    return spec_dir


def fresh_warehouse(database: str) -> str:
    """Drop and create the backtest's own database (the nightly warehouse is never touched)."""
    from nightly_ml.devtools import embedded, scratch

    configured = os.environ.get("WAREHOUSE_URL")
    if configured:
        admin = scratch.database_url(configured, "postgres")
    else:
        admin = embedded.start(settings().data_dir, "postgres")
    scratch.admin_execute(admin, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    scratch.admin_execute(admin, f'CREATE DATABASE "{database}"')
    return scratch.database_url(admin, database)


def _day(text: str) -> date:
    return date.fromisoformat(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--from", dest="first", type=_day, help="first day (default: the spec's start_date)")
    parser.add_argument("--to", dest="last", type=_day, help="last day, inclusive (default: yesterday)")
    parser.add_argument("--shuffle-days", type=int, metavar="SEED", help="control: the same days in a random order")
    parser.add_argument("--fixed-cadence-days", type=int, default=7)
    parser.add_argument("--verbose", action="store_true", help="Airflow's task logs on the terminal")
    args = parser.parse_args(argv)

    os.environ.setdefault("NIGHTLY_ML_RETRY_DELAY_SECONDS", "2")
    settings.cache_clear()
    replay_name, workspace, spec_dir = prepare_workspace(args.dataset, args.shuffle_days)
    warehouse = fresh_warehouse(f"backtest_{replay_name}")
    os.environ.update(
        {
            "WAREHOUSE_URL": warehouse,
            "NIGHTLY_ML_SPEC_DIR": str(spec_dir),
            "NIGHTLY_ML_DATA_DIR": str(workspace),
            "MLFLOW_TRACKING_URI": f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}",
        }
    )
    (workspace / "mlflow").mkdir(parents=True, exist_ok=True)
    settings.cache_clear()

    from nightly_ml.spec import load_spec

    raw = yaml.safe_load((spec_dir / f"{replay_name}.yaml").read_text())
    marker = spec_dir / ".public_dataset"
    if marker.exists():
        raw["_public_dataset"] = marker.read_text().strip()
    first = args.first or date.fromisoformat(str(raw["start_date"]))
    last = args.last or (datetime.now(UTC).date() - timedelta(days=1))
    if raw["source"]["kind"] == "files":
        root = Path(raw["source"]["path"])
        exported = export_public_days(raw, root, first, last, args.shuffle_days)
        if args.last is None:
            # The history ends with the newest day dropped, not yesterday.
            days = sorted(p.name.removeprefix("ds=")[:10] for p in root.glob("ds=*") if p.is_dir())
            last = date.fromisoformat(days[-1]) if days else last
        if exported:
            print(
                f"exported {exported} day file(s) of {raw.get('_public_dataset', raw['name'])} "
                f"into {raw['source']['path']}"
            )
    spec = load_spec(replay_name)
    return run(spec, first, last, args.fixed_cadence_days, verbose=args.verbose)


def run(spec: DatasetSpec, first: date, last: date, fixed_cadence_days: int, *, verbose: bool = False) -> int:
    from nightly_ml import db
    from nightly_ml.devtools import replay
    from nightly_ml.devtools.demo import migrate_airflow
    from nightly_ml.monitoring import backtest

    db.migrate()
    migrate_airflow()
    log_file = None if verbose else settings().data_dir / "logs" / "backtest_tasks.log"
    replay.send_task_logs_to(log_file)
    bag = replay.load_dag_bag(str(PROJECT_ROOT / "dags"))
    start = datetime(first.year, first.month, first.day, tzinfo=spec.zone)
    end = datetime(last.year, last.month, last.day, tzinfo=spec.zone)
    intervals = replay.intervals_between(spec, start, end)
    if not intervals:
        raise SystemExit(f"no interval of {spec.name} starts between {first} and {last}: nothing to replay")
    print(f"replaying {len(intervals)} interval(s) of {spec.name} ({spec.timezone}); task logs: {log_file or 'shown'}")
    for interval in intervals:
        outcome = replay.play_interval(bag, spec, interval)
        print(
            f"{outcome.label} {spec.name}: ingest {outcome.ingest}, score {outcome.score}, "
            f"monitor {outcome.monitor}, retrain {outcome.retrain}",
            flush=True,
        )
    summary = backtest.summarize(spec, intervals[0][0], intervals[-1][1], fixed_cadence_days=fixed_cadence_days)
    html, data = backtest.write_report(spec, summary, storage.root())
    print(backtest.render_summary_text(summary))
    print(f"report: {html}\ndata:   {data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
