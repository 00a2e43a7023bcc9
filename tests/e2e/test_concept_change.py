"""A change in the label's relation, through the real DAGs: decay is met by retraining on the rows since the change.

``demand_concept`` (the demand simulator, regression, labels with the rows) changes how demand depends on its
features from night 6 on. Monitoring sees the champion decay that night and retraining answers at once on the
spec's whole window. While the decay goes on, retraining runs every night: on the whole window while the rows
since the change are too few to train and hold out, and from the first night they are enough (two days of
training rows and a two-day holdout: night 9) on those rows only, until the gate promotes one. Ops get a mail
when the decay is first seen and one for what each retraining did.
"""

from __future__ import annotations

import email
import email.policy
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from nightly_ml import db, storage
from nightly_ml.config import PROJECT_ROOT
from nightly_ml.devtools.scratch import specs_from

pytestmark = pytest.mark.e2e

DATASET = "demand_concept"
FIRST_NIGHT = date(2026, 5, 1)
NIGHTS = 12
CHANGE_NIGHT = 6  # 0-based offset of the first night under the new relation
ROWS = 1200
HOLDOUT_DAYS = 2
WINDOW_DAYS = 10
MIN_TRAIN_DAYS = 2  # min_rows 2000 needs two nights of 1200 rows
READY_NIGHT = CHANGE_NIGHT + MIN_TRAIN_DAYS + HOLDOUT_DAYS - 1  # the first night with enough rows since the change


def night_start(offset: int) -> datetime:
    night = FIRST_NIGHT + timedelta(days=offset)
    return datetime(night.year, night.month, night.day, tzinfo=UTC)


@pytest.fixture(scope="module")
def concept_spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    spec_dir = tmp_path_factory.mktemp("concept_specs")
    raw = yaml.safe_load((PROJECT_ROOT / "include" / "specs" / "demand.yaml").read_text())
    raw["name"] = DATASET
    raw["source"].update(
        {
            "rows_per_interval": ROWS,
            "label_delay_days": 0,
            "scenario": "concept",
            "drift_start": (FIRST_NIGHT + timedelta(days=CHANGE_NIGHT)).isoformat(),
        }
    )
    raw["validation"]["min_rows"] = 50
    raw["drift"]["min_labelled_rows"] = 200
    raw["training"].update(
        {
            "window_days": WINDOW_DAYS,
            "holdout_days": HOLDOUT_DAYS,
            "min_rows": 2000,
            "candidates": [
                {
                    "name": "hgb",
                    "estimator": "hist_gradient_boosting_regressor",
                    "params": {"max_iter": 60},
                    "search": {"learning_rate": [0.1]},
                }
            ],
        }
    )
    (spec_dir / f"{DATASET}.yaml").write_text(yaml.safe_dump(raw))
    with specs_from(spec_dir):
        yield spec_dir


@pytest.fixture(scope="module")
def played(concept_spec: Path, airflow_db: Path, warehouse_url: str, mlflow_server: str) -> dict:
    from nightly_ml.devtools import replay
    from nightly_ml.spec import load_spec

    outbox = storage.outbox_root()
    before = set(outbox.glob("*.eml")) if outbox.exists() else set()
    bag = replay.load_dag_bag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    spec = load_spec(DATASET)
    outcomes = {}
    for offset in range(NIGHTS):
        start = night_start(offset)
        outcomes[offset] = replay.play_interval(bag, spec, (start, start + timedelta(days=1)), scheduled_retrains=False)
    mails = [
        email.message_from_string(p.read_text(), policy=email.policy.default)
        for p in set(outbox.glob("*.eml")) - before
    ]
    return {"outcomes": outcomes, "mails": mails}


def rows(statement: str, params: dict | None = None) -> list[tuple]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(statement, params or {})
        return cur.fetchall()


def test_the_decay_is_answered_on_its_first_night_on_the_whole_window(played: dict) -> None:
    outcomes = played["outcomes"]
    assert outcomes[CHANGE_NIGHT - 1].monitor == "no_action", "no decay before the change"
    assert outcomes[CHANGE_NIGHT].monitor == "trigger_retrain"
    assert not outcomes[CHANGE_NIGHT].retrain.startswith("skipped"), outcomes[CHANGE_NIGHT].retrain
    (reasons,) = rows(
        "SELECT reasons FROM ops.retrain_triggers WHERE dataset = %s AND interval_start = %s",
        (DATASET, night_start(CHANGE_NIGHT)),
    )[0]
    assert any(r.startswith("performance decay") for r in reasons)
    assert not any("decayed since" in r for r in reasons), "the first night trains on the spec's window"
    end = night_start(CHANGE_NIGHT + 1)
    assert trained_window(outcomes[CHANGE_NIGHT].retrain) == (end - timedelta(days=WINDOW_DAYS), end)


def version_of(outcome: str) -> str:
    """The model version a retrain registered, from its outcome ("v3 rejected (champion was v1) — ...")."""
    assert outcome.startswith("v"), outcome
    return outcome.split()[0][1:]


def trained_window(outcome: str) -> tuple[datetime, datetime]:
    """The training window (its drift reference) of the version a retrain registered."""
    from nightly_ml.registry import access
    from nightly_ml.spec import load_spec

    info = access.version_info(load_spec(DATASET), version_of(outcome))
    assert info is not None and info.reference_window is not None
    return info.reference_window


def test_while_the_rows_since_the_change_are_too_few_retraining_uses_the_whole_window(played: dict) -> None:
    outcomes = played["outcomes"]
    for offset in range(CHANGE_NIGHT + 1, READY_NIGHT):
        assert outcomes[offset].monitor == "trigger_retrain", offset
        end = night_start(offset + 1)
        assert trained_window(outcomes[offset].retrain) == (end - timedelta(days=WINDOW_DAYS), end), offset


def test_from_the_first_night_with_enough_rows_retraining_trains_on_them_until_one_is_promoted(played: dict) -> None:
    from mlflow import MlflowClient

    from nightly_ml.registry import access
    from nightly_ml.spec import load_spec

    outcomes = played["outcomes"]
    trained = {n: outcomes[n].retrain for n in range(READY_NIGHT, NIGHTS) if outcomes[n].retrain != "-"}
    assert READY_NIGHT in trained, trained
    for night, outcome in trained.items():
        assert trained_window(outcome) == (night_start(CHANGE_NIGHT), night_start(night + 1)), night
    promoted = [n for n, outcome in trained.items() if " promoted " in outcome]
    # The gate still judges each: a model of two days' rows may lose a slice; the next night's has more rows.
    assert promoted and promoted[0] <= READY_NIGHT + 1, trained
    champion = access.get_champion(load_spec(DATASET))
    assert champion is not None and champion.version == version_of(trained[promoted[-1]])
    tags = MlflowClient().get_run(champion.run_id).data.tags
    assert tags["trigger.train_since"] == night_start(CHANGE_NIGHT).isoformat()
    # The decay ends with the new champion: every later night is judged healthy, and nothing retrains.
    for offset in range(promoted[0] + 1, NIGHTS):
        assert outcomes[offset].monitor == "no_action", (offset, outcomes[offset])
    decayed = rows(
        "SELECT interval_start FROM ops.monitoring_current WHERE dataset = %s AND performance_decay ORDER BY 1",
        (DATASET,),
    )
    assert [start for (start,) in decayed] == [night_start(n) for n in range(CHANGE_NIGHT, promoted[0] + 1)]


def test_ops_get_one_mail_for_the_decay_and_one_per_retraining(played: dict) -> None:
    outcomes = played["outcomes"]
    subjects = [" ".join(str(m["Subject"]).split()) for m in played["mails"]]
    triggered = [s for s in subjects if "retraining triggered" in s]
    assert triggered == [f"[nightly-ml] {DATASET}: retraining triggered on {night_start(CHANGE_NIGHT):%Y-%m-%d}"]
    decisions = [s for s in subjects if s.endswith(" promoted")]
    retrained = [
        n for n, outcome in outcomes.items() if outcome.retrain != "-" and not outcome.retrain.startswith("skipped")
    ]
    assert len(decisions) == len(retrained), (subjects, {n: outcomes[n].retrain for n in retrained})
    bodies = [m.get_body(preferencelist=("plain",)).get_content() for m in played["mails"]]
    since_change = [b for b in bodies if "trained on the rows since 2026-05-07" in b]
    assert len(since_change) == len([n for n in retrained if n >= READY_NIGHT])
    assert all("retrained because:" in b and "performance has decayed since 2026-05-07" in b for b in since_change)
