"""Ten simulated nights through the real DAGs: ingest → score → monitor → retrain → promote → score.

Real PostgreSQL, a real MLflow tracking server, the real Airflow DAGs (``dag.test``), run the
way ``make run`` runs them. ``churn`` (classification) gets a sudden covariate shift on night
7; ``demand`` (regression) stays stationary but has a bad-data night on night 8.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from nightly_ml import db
from nightly_ml.config import PROJECT_ROOT
from nightly_ml.devtools.scratch import specs_from

pytestmark = pytest.mark.e2e

FIRST_NIGHT = date(2026, 3, 1)
NIGHTS = 10
DRIFT_NIGHT = 7  # churn: sudden covariate shift from this night (0-based offset)
BAD_NIGHT = 8  # demand: a bad-data night


def _light_spec(name: str, source: dict, candidate: dict) -> dict:
    raw = yaml.safe_load((PROJECT_ROOT / "include" / "specs" / f"{name}.yaml").read_text())
    raw["source"].update(source)
    raw["validation"]["min_rows"] = 50
    raw["drift"]["min_labelled_rows"] = 200
    raw["training"].update({"window_days": 10, "holdout_days": 2, "min_rows": 800, "candidates": [candidate]})
    return raw


@pytest.fixture(scope="module")
def flow_specs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    spec_dir = tmp_path_factory.mktemp("flow_specs")
    churn = _light_spec(
        "churn",
        {
            "rows_per_interval": 600,
            "label_delay_days": 1,
            "scenario": "sudden_covariate",
            "drift_start": (FIRST_NIGHT + timedelta(days=DRIFT_NIGHT)).isoformat(),
        },
        {"name": "logreg", "estimator": "logistic_regression", "params": {"max_iter": 300}, "search": {"C": [1.0]}},
    )
    demand = _light_spec(
        "demand",
        {
            "rows_per_interval": 480,
            "label_delay_days": 0,
            "scenario": "bad_data",
            "drift_start": (FIRST_NIGHT + timedelta(days=BAD_NIGHT)).isoformat(),
        },
        {
            "name": "hgb",
            "estimator": "hist_gradient_boosting_regressor",
            "params": {"max_iter": 60},
            "search": {"learning_rate": [0.1]},
        },
    )
    for raw in (churn, demand):
        (spec_dir / f"{raw['name']}.yaml").write_text(yaml.safe_dump(raw))
    with specs_from(spec_dir):
        yield spec_dir


@pytest.fixture(scope="module")
def played(flow_specs: Path, airflow_db: Path, warehouse_url: str, mlflow_server: str) -> dict:
    from nightly_ml.devtools import replay
    from nightly_ml.spec import load_spec

    bag = replay.load_dag_bag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    outcomes = {}
    for offset in range(NIGHTS):
        start = night_start(offset)
        for dataset in ("churn", "demand"):
            interval = (start, start + timedelta(days=1))
            outcomes[(dataset, offset)] = replay.play_interval(
                bag, load_spec(dataset), interval, scheduled_retrains=False
            )
    return outcomes


def rows(statement: str, params: dict | None = None) -> list[tuple]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(statement, params or {})
        return cur.fetchall()


def outbox_subjects() -> list[str]:
    import email
    import email.policy

    from nightly_ml import storage

    outbox = storage.outbox_root()
    mails = [email.message_from_string(p.read_text(), policy=email.policy.default) for p in outbox.glob("*.eml")]
    return [" ".join(str(m["Subject"]).split()) for m in mails]


def night_start(offset: int) -> datetime:
    night = FIRST_NIGHT + timedelta(days=offset)
    return datetime(night.year, night.month, night.day, tzinfo=UTC)


@pytest.mark.parametrize("dataset", ["churn", "demand"])
def test_a_champion_was_trained_promoted_and_scores_the_warehouse(played: dict, dataset: str) -> None:
    from nightly_ml.registry import access
    from nightly_ml.spec import load_spec

    spec = load_spec(dataset)
    champion = access.get_champion(spec)
    assert champion is not None, f"{dataset}: no champion after {NIGHTS} nights"
    promotions = rows(
        "SELECT to_version, gate_reasons FROM ops.promotion_history "
        "WHERE dataset = %(d)s AND action = 'promote' ORDER BY id",
        {"d": dataset},
    )
    assert promotions, "the champion must have come through the gate"
    assert promotions[-1][0] == champion.version

    # The nights played here only: other tests of the session may load intervals of the same dataset.
    nights = {outcome.interval_start for (name, _), outcome in played.items() if name == dataset}
    scored = [
        row
        for row in rows(
            f"SELECT p._interval_start, count(*), min(p.model_version), max(p.model_version) "  # noqa: S608
            f'FROM warehouse."{dataset}_predictions" p GROUP BY 1 ORDER BY 1'
        )
        if row[0] in nights
    ]
    assert scored, f"{dataset}: nothing was scored"
    merged = {
        start: count
        for start, count in rows(
            "SELECT interval_start, rows_merged FROM ops.load_audit WHERE dataset = %(d)s AND status = 'merged'",
            {"d": dataset},
        )
        if start in nights
    }
    for interval_start, count, low, high in scored:
        assert count == merged[interval_start], "every merged row of a scored interval has a prediction"
        assert low == high, "one model version per scored interval"
    # The nights after the first promotion were scored by the champion of their night.
    first_scored = scored[0][0]
    assert all(start in {s[0] for s in scored} for start in merged if start >= first_scored)
    if spec.task == "classification":
        labels = rows(
            f'SELECT count(*) FROM warehouse."{dataset}_predictions" '  # noqa: S608
            "WHERE predicted_label NOT IN (0, 1) OR prediction < 0 OR prediction > 1"
        )
        assert labels == [(0,)]


def test_sudden_drift_is_detected_on_its_first_night_and_retrains_once_its_labels_fill_the_holdout(
    played: dict,
) -> None:
    """Labels come a day late and the holdout is 2 days: drift waits on its first two nights (one mail), then
    retrains, and the gate judges the challenger on rows from after the shift."""
    from nightly_ml.monitoring.label_wait import WAITS_FOR_LABELS

    runs = rows(
        "SELECT interval_start, should_retrain, drifted_features, reasons, action FROM ops.monitoring_current "
        "WHERE dataset = 'churn' ORDER BY interval_start"
    )
    by_night = {r[0]: r for r in runs}
    drift_night = by_night[night_start(DRIFT_NIGHT)]
    assert drift_night[1] is True
    assert {"monthly_charges", "usage_hours"} & set(drift_night[2])
    assert any("drift" in reason for reason in drift_night[3])
    for offset in (DRIFT_NIGHT, DRIFT_NIGHT + 1):
        night = by_night[night_start(offset)]
        assert (played[("churn", offset)].monitor, played[("churn", offset)].retrain) == ("alert_drift", "-")
        assert night[4] == "awaiting_labels"
        assert any(f"{WAITS_FOR_LABELS} on {night_start(DRIFT_NIGHT):%Y-%m-%d}" in r for r in night[3]), night[3]
    ready = by_night[night_start(DRIFT_NIGHT + 2)]
    assert played[("churn", DRIFT_NIGHT + 2)].monitor == "trigger_retrain"
    assert played[("churn", DRIFT_NIGHT + 2)].retrain != "-", "the triggered retrain DAG must have run"
    assert any("fill the holdout" in r for r in ready[3]), ready[3]
    # The gate decided on the two newest labelled days as holdout: both after the shift began.
    decided = rows(
        "SELECT count(*) FROM ops.promotion_history WHERE dataset = 'churn' AND interval_start = %(s)s",
        {"s": night_start(DRIFT_NIGHT + 2)},
    )
    assert decided == [(1,)], "the retrain's gate decided"
    # No retraining on the stationary nights that had a champion to compare with.
    stationary = [r for start, r in by_night.items() if start < night_start(DRIFT_NIGHT)]
    assert stationary, "the champion should exist before the drift"
    assert not any(r[1] for r in stationary), [r for r in stationary if r[1]]
    # Mailed on the drift's first night only (the outbox may hold other modules' mails: other datasets, days).
    nights = {f"{night_start(offset):%Y-%m-%d}" for offset in range(NIGHTS)}
    waits = [
        subject
        for subject in outbox_subjects()
        if subject.startswith("[nightly-ml] churn: drift on ") and subject.split()[4].rstrip(",") in nights
    ]
    assert waits == [f"[nightly-ml] churn: drift on {night_start(DRIFT_NIGHT):%Y-%m-%d}, retraining waits for labels"]


def test_the_champion_moved_only_when_the_gate_passed(played: dict) -> None:
    from nightly_ml.registry import access
    from nightly_ml.spec import load_spec

    history = rows(
        "SELECT action, from_version, to_version, gate_reasons FROM ops.promotion_history "
        "WHERE dataset = 'churn' ORDER BY id"
    )
    decided_after_drift = [h for h in history if h[0] in ("promote", "reject")]
    assert len(decided_after_drift) >= 2, history
    champion = None
    for action, from_version, to_version, reasons in history:
        assert reasons[0].startswith("promote:" if action == "promote" else "rejected:")
        if action == "promote":
            assert from_version == champion
            champion = to_version
    assert access.get_champion(load_spec("churn")).version == champion


def test_the_retrain_records_what_triggered_it(played: dict) -> None:
    import mlflow

    from nightly_ml.spec import load_spec

    spec = load_spec("churn")
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{spec.registered_model_name}'")
    reasons = {client.get_run(v.run_id).data.tags.get("trigger.reason", "") for v in versions}
    assert any("drift" in r for r in reasons), reasons
    assert any("no champion" in r for r in reasons), reasons


def test_the_bad_data_night_stops_before_training(played: dict) -> None:
    bad = played[("demand", BAD_NIGHT)]
    assert bad.ingest == "failed"
    assert (bad.score, bad.monitor, bad.retrain) == ("-", "-", "-")
    status = rows(
        "SELECT status, reason FROM ops.load_audit WHERE dataset = 'demand' AND interval_start = %(s)s",
        {"s": night_start(BAD_NIGHT)},
    )
    assert status[0][0] == "rejected" and "too many bad rows" in status[0][1]
    assert rows(
        "SELECT count(*) FROM ops.monitoring_runs WHERE dataset = 'demand' AND interval_start = %(s)s",
        {"s": night_start(BAD_NIGHT)},
    ) == [(0,)]
    # The next night is clean again and flows on.
    assert played[("demand", BAD_NIGHT + 1)].ingest == "success"


def test_rollback_dag_moves_the_champion_to_a_version_and_back_and_records_it(played: dict) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from nightly_ml.registry import access
    from nightly_ml.spec import load_spec

    spec = load_spec("churn")
    before = access.get_champion(spec).version
    other = next(
        v
        for (v,) in rows("SELECT to_version FROM ops.promotion_history WHERE dataset = 'churn' ORDER BY id DESC")
        if v != before
    )
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    rollback = bag.dags["rollback__churn"]
    to_version = rollback.test(logical_date=None, run_conf={"target": other, "reason": "e2e: try the other version"})
    assert to_version.state == "success"
    assert access.get_champion(spec).version == other
    back = rollback.test(logical_date=None, run_conf={"target": "previous", "reason": "e2e: undo the last move"})
    assert back.state == "success"
    assert access.get_champion(spec).version == before
    last = rows(
        "SELECT action, from_version, to_version, reason FROM ops.promotion_history "
        "WHERE dataset = 'churn' ORDER BY id DESC LIMIT 2"
    )
    assert last == [
        ("rollback", other, before, "e2e: undo the last move"),
        ("rollback", before, other, "e2e: try the other version"),
    ]


def test_lasting_drift_does_not_retrain_every_night(played: dict) -> None:
    """Drift triggers one retrain, once its labels are in; the nights before it wait without a trigger."""
    triggers = [t for (t,) in rows("SELECT interval_start FROM ops.retrain_triggers WHERE dataset = 'churn'")]
    after_drift = sorted(t for t in triggers if t >= night_start(DRIFT_NIGHT))
    assert after_drift == [night_start(DRIFT_NIGHT + 2)]
