"""Fault 5: two promotions at once. Two processes move ``champion`` to two different challengers, both
judged against the same champion; they reach the advisory lock together (the test holds it until both
wait on it). Exactly one version carries ``champion``, the history records both decisions in lock order,
and the champion is the one the history's last move names."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import psycopg2
import pytest
from fault_support import START, Child, FaultWorld, query, wait_until
from mlflow import MlflowClient

from nightly_ml.modeling import training
from nightly_ml.modeling.promotion import GateDecision
from nightly_ml.registry import aliases, run_logging
from nightly_ml.spec import load_spec

pytestmark = pytest.mark.faults

FORCED = GateDecision(promote=True, reasons=("forced by the test.",), primary_delta=0.01)


def waiting_on_the_lock(url: str) -> int:
    rows = query(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
    )
    return int(rows[0][0])


def test_two_promotions_at_once_leave_one_champion_and_both_decisions(
    fault_world: FaultWorld, mlflow_server: str
) -> None:
    from nightly_ml.etl import simulator

    url = fault_world.warehouse_url
    spec = load_spec("faults_promo")
    name = spec.registered_model_name
    days = [START - timedelta(days=d) for d in range(3, 0, -1)]
    frame = pd.concat([simulator.generate_batch(spec, day, day + timedelta(days=1)) for day in days])
    result = training.run_training(spec, frame.reset_index(drop=True), START)
    v1, v2, v3 = (
        run_logging.log_training_result(
            spec, result, trigger={"reason": "fault test"}, airflow_context={}
        ).model_version
        for _ in range(3)
    )
    aliases.promote(spec, v1, FORCED, expected_champion=None, actor="test", reason="first", url=url)

    lock = psycopg2.connect(url)
    try:
        with lock.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (aliases._lock_key(spec),))
        children = {v: Child("promote", spec.name, v, v1, f"process-{v}") for v in (v2, v3)}
        wait_until(lambda: waiting_on_the_lock(url) == 2, "both promotions waiting on the champion lock")
    finally:
        lock.rollback()
        lock.close()
    outcomes: dict[str, Any] = {v: child.outcome() for v, child in children.items()}
    assert all(o["ok"] for o in outcomes.values()), outcomes
    results = {v: o["result"] for v, o in outcomes.items()}
    [winner] = [v for v, r in results.items() if r["action"] == "promote"]
    [loser] = [v for v, r in results.items() if r["action"] == "reject"]

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    carrying = {v: client.get_model_version(name, v).aliases for v in (v1, v2, v3)}
    assert [v for v, found in carrying.items() if "champion" in found] == [winner], carrying
    assert client.get_registered_model(name).aliases == {"champion": winner, "previous_champion": v1}
    assert "stale" in client.get_model_version(name, loser).tags["promotion_rejected"]

    history = query(
        url,
        "SELECT id, action, from_version, to_version, reason FROM ops.promotion_history "
        "WHERE model_name = %s ORDER BY id",
        (name,),
    )
    assert [row[1:4] for row in history] == [
        ("promote", None, v1),
        ("promote", v1, winner),
        ("reject", winner, loser),
    ]
    assert history[2][4] == "stale: champion moved"
    assert [row[0] for row in history[1:]] == [results[winner]["id"], results[loser]["id"]]
    last_move = [row for row in history if row[1] == "promote"][-1]
    assert last_move[3] == client.get_registered_model(name).aliases["champion"]
