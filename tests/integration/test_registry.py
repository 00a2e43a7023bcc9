"""The registry against a real MLflow server and PostgreSQL: logging, promotion, rejection, rollback, races."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from nightly_ml.config import settings
from nightly_ml.modeling import frames, training
from nightly_ml.modeling.promotion import GateDecision, decide
from nightly_ml.registry import access, aliases, run_logging
from nightly_ml.spec import DatasetSpec

pytestmark = pytest.mark.integration

START = datetime(2024, 5, 1, tzinfo=UTC)
WINDOW_END = START + timedelta(days=10)
FORCED = GateDecision(promote=True, reasons=("forced by the test.",), primary_delta=0.01)
AIRFLOW = {
    "dag_id": "nightly_churn",
    "run_id": "scheduled__2024-05-11",
    "task_id": "train",
    "try_number": 1,
    "data_interval_start": WINDOW_END - timedelta(days=1),
    "data_interval_end": WINDOW_END,
}


@pytest.fixture(scope="module")
def trained(kit: Any) -> training.TrainingResult:
    spec = kit.make_spec("churn", "churn_registry")
    frame = kit.labelled_frame(spec, START, 10, 80)
    return training.run_training(spec, frame, WINDOW_END)


@pytest.fixture
def client(mlflow_server: str) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


def fresh_spec(kit: Any, name: str) -> DatasetSpec:
    return kit.make_spec("churn", name)


def register(spec: DatasetSpec, result: training.TrainingResult, reason: str = "scheduled") -> str:
    record = run_logging.log_training_result(
        spec, result, trigger={"reason": reason, "psi": 0.31}, airflow_context=AIRFLOW
    )
    return record.model_version


def history(spec: DatasetSpec, url: str) -> list[dict[str, Any]]:
    return aliases.promotion_history(spec, url=url)


def alias(client: MlflowClient, spec: DatasetSpec, name: str) -> str | None:
    aliases = client.get_registered_model(spec.registered_model_name).aliases
    return aliases.get(name)


def test_training_run_is_logged_completely(
    kit: Any, trained: training.TrainingResult, client: MlflowClient, warehouse_url: str, mlflow_server: str
) -> None:
    spec = fresh_spec(kit, "churn_logging")
    record = run_logging.log_training_result(
        spec, trained, trigger={"reason": "drift", "psi": 0.31}, airflow_context=AIRFLOW
    )
    assert record.model_uri == f"models:/churn_logging_model/{record.model_version}"
    run = client.get_run(record.run_id)
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    assert client.get_experiment(run.info.experiment_id).name == "churn_logging"
    assert tags["airflow.dag_id"] == "nightly_churn" and tags["airflow.try_number"] == "1"
    assert tags["airflow.run_id"] == "scheduled__2024-05-11" and tags["airflow.task_id"] == "train"
    assert (tags["spec.name"], tags["spec.version"], tags["trigger.reason"]) == ("churn_logging", "1", "drift")
    assert tags["trigger.psi"] == "0.31"
    assert tags["code_version"] == settings().code_version
    assert tags["reference_window_start"] == trained.window[0].isoformat()
    assert tags["reference_window_end"] == trained.window[1].isoformat()
    assert tags["data_window_start"] == (WINDOW_END - timedelta(days=1)).isoformat()
    assert tags["holdout_window_start"] == trained.holdout_start.isoformat()  # the split's own boundary
    for name, value in trained.metrics.items():
        assert metrics[f"holdout_{name}"] == pytest.approx(value)
        assert f"baseline_{name}" in metrics
    assert metrics["train_rows"] == len(trained.train)
    assert "slice.plan_basic.roc_auc" in metrics  # "=" is not allowed in metric names
    assert params["candidate"] == trained.best.name and params["model.C"] == str(trained.best.params["C"])

    contexts = {}
    for dataset_input in run.inputs.dataset_inputs:
        context = {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"]
        contexts[context] = dataset_input.dataset
    assert set(contexts) == {"training", "holdout"}
    assert contexts["training"].digest and contexts["training"].source_type == "nightly_ml_warehouse"
    assert contexts["training"].digest != contexts["holdout"].digest

    artifacts = {a.path for a in client.list_artifacts(record.run_id)}
    assert {"model_card.md", "slice_metrics.json"} <= artifacts
    card = mlflow.artifacts.load_text(f"runs:/{record.run_id}/model_card.md")
    assert "# Model card: churn_logging_model" in card and "## Limitations" in card

    version = client.get_model_version(spec.registered_model_name, record.model_version)
    assert version.run_id == record.run_id
    logged_model = client.get_logged_model(run.outputs.model_outputs[0].model_id)
    assert logged_model.metrics and {m.key for m in logged_model.metrics} >= {"holdout_roc_auc", "holdout_log_loss"}
    info = mlflow.models.get_model_info(record.model_uri)
    assert [c.name for c in info.signature.inputs] == [f.name for f in spec.features]

    model = access.load_model(spec, record.model_version)
    features = frames.feature_frame(spec, trained.holdout)
    np.testing.assert_allclose(model.predict_proba(features), trained.best.model.predict_proba(features))
    assert history(spec, warehouse_url) == []  # logging never promotes

    # A retried training task finds what its Airflow run registered; other runs find nothing.
    assert access.version_for_airflow_run(spec, "nightly_churn", "scheduled__2024-05-11") == record.model_version
    assert access.version_for_airflow_run(spec, "nightly_churn", "manual__2024-05-12") is None
    assert access.version_for_airflow_run(fresh_spec(kit, "churn_never_trained"), "d", "r") is None
    assert (
        access.run_url(record.run_id)
        == f"{mlflow_server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    )


def test_first_promotion_then_rejected_then_better_challenger(
    kit: Any, trained: training.TrainingResult, client: MlflowClient, warehouse_url: str
) -> None:
    spec = fresh_spec(kit, "churn_flow")
    assert access.get_champion(spec) is None
    assert access.evaluate_champion_on(spec, trained.holdout) is None

    v1 = register(spec, trained)
    first = decide(spec.promotion, trained.evaluation, None, trained.baseline_evaluation)
    assert first.promote, first.reasons
    outcome = aliases.promote(
        spec, v1, first, expected_champion=None, actor="test", reason="first model", url=warehouse_url
    )
    assert (outcome.action, outcome.from_version, outcome.to_version) == ("promote", None, v1)
    champion = access.get_champion(spec)
    assert champion is not None and champion.version == v1
    assert champion.metrics == pytest.approx(trained.metrics)
    assert champion.reference_window == trained.window
    assert champion.model_uri == f"models:/churn_flow_model/{v1}"
    assert client.get_model_version(spec.registered_model_name, v1).tags["promoted_by"] == "test"
    rows = history(spec, warehouse_url)
    assert [(r["action"], r["from_version"], r["to_version"]) for r in rows] == [("promote", None, v1)]
    assert rows[0]["gate_reasons"] == list(first.reasons)
    assert rows[0]["metrics"]["roc_auc"] == pytest.approx(trained.metrics["roc_auc"])
    assert rows[0]["actor"] == "test" and rows[0]["reason"] == "first model" and rows[0]["dataset"] == "churn_flow"

    # Same data, same seed: the challenger ties the champion on the same holdout and is rejected.
    v2 = register(spec, trained)
    champion_eval = access.evaluate_champion_on(spec, trained.holdout)
    assert champion_eval is not None and champion_eval.version == v1
    assert champion_eval.evaluation.metrics == pytest.approx(trained.metrics)
    tie = decide(spec.promotion, trained.evaluation, champion_eval.evaluation, trained.baseline_evaluation)
    assert not tie.promote
    rejected = aliases.reject(spec, v2, tie, url=warehouse_url)
    assert (rejected.action, rejected.from_version, rejected.to_version) == ("reject", v1, v2)
    assert "tie" in client.get_model_version(spec.registered_model_name, v2).tags["promotion_rejected"]
    assert access.get_champion(spec).version == v1
    assert alias(client, spec, "champion") == v1

    v3 = register(spec, trained)
    aliases.promote(spec, v3, FORCED, expected_champion=v1, actor="test", reason="better", url=warehouse_url)
    assert alias(client, spec, "champion") == v3
    assert alias(client, spec, "previous_champion") == v1
    actions = [(r["action"], r["from_version"], r["to_version"]) for r in history(spec, warehouse_url)]
    assert actions == [("promote", v1, v3), ("reject", v1, v2), ("promote", None, v1)]

    with pytest.raises(ValueError, match="call reject"):
        aliases.promote(spec, v2, tie, expected_champion=v3, actor="test", reason="no", url=warehouse_url)
    with pytest.raises(ValueError, match="call promote"):
        aliases.reject(spec, v2, FORCED, url=warehouse_url)


def test_rollback_to_previous_and_to_a_version(
    kit: Any, trained: training.TrainingResult, client: MlflowClient, warehouse_url: str
) -> None:
    spec = fresh_spec(kit, "churn_rollback")
    v1, v2, v3 = (register(spec, trained) for _ in range(3))
    with pytest.raises(access.RollbackError, match="no promotion history"):
        aliases.rollback(spec, actor="ops", reason="oops", url=warehouse_url)
    aliases.promote(spec, v1, FORCED, expected_champion=None, actor="test", reason="r", url=warehouse_url)
    with pytest.raises(access.RollbackError, match="had no previous champion"):
        aliases.rollback(spec, actor="ops", reason="oops", url=warehouse_url)
    aliases.promote(spec, v2, FORCED, expected_champion=v1, actor="test", reason="r", url=warehouse_url)

    back = aliases.rollback(spec, "previous", actor="ops", reason="v2 misbehaves", url=warehouse_url)
    assert (back.action, back.from_version, back.to_version) == ("rollback", v2, v1)
    assert alias(client, spec, "champion") == v1
    assert alias(client, spec, "previous_champion") == v2
    assert client.get_model_version(spec.registered_model_name, v1).tags["rolled_back_by"] == "ops"

    explicit = aliases.rollback(spec, v3, actor="ops", reason="pin v3", url=warehouse_url)
    assert (explicit.from_version, explicit.to_version) == (v1, v3)
    assert access.get_champion(spec).version == v3

    before = history(spec, warehouse_url)
    with pytest.raises(access.RollbackError, match=r"no such version \(existing: 1, 2, 3\)"):
        aliases.rollback(spec, "99", actor="ops", reason="typo", url=warehouse_url)
    with pytest.raises(access.RollbackError, match="already the champion"):
        aliases.rollback(spec, v3, actor="ops", reason="again", url=warehouse_url)
    with pytest.raises(access.RollbackError, match="'previous' or a version number"):
        aliases.rollback(spec, "latest", actor="ops", reason="?", url=warehouse_url)
    assert history(spec, warehouse_url) == before
    assert alias(client, spec, "champion") == v3
    assert [r["action"] for r in before] == ["rollback", "rollback", "promote", "promote"]
    assert before[0]["reason"] == "pin v3" and before[0]["actor"] == "ops"


def test_racing_promotions_leave_one_champion_and_full_history(
    kit: Any,
    trained: training.TrainingResult,
    client: MlflowClient,
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = fresh_spec(kit, "churn_race")
    v1, v2, v3 = (register(spec, trained) for _ in range(3))
    aliases.promote(spec, v1, FORCED, expected_champion=None, actor="test", reason="first", url=warehouse_url)

    # Hold the alias move open a moment so the second promotion surely arrives while the first holds the lock.
    real_apply = aliases._AliasMove.apply

    def slow_apply(self: aliases._AliasMove, target: str) -> None:
        time.sleep(0.5)
        real_apply(self, target)

    monkeypatch.setattr(aliases._AliasMove, "apply", slow_apply)
    barrier = threading.Barrier(2)

    def contend(version: str) -> access.PromotionOutcome:
        barrier.wait(timeout=10)
        return aliases.promote(
            spec, version, FORCED, expected_champion=v1, actor=f"thread-{version}", reason="race", url=warehouse_url
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {version: pool.submit(contend, version) for version in (v2, v3)}
        outcomes = {version: future.result(timeout=60) for version, future in futures.items()}
    actions = sorted(o.action for o in outcomes.values())
    assert actions == ["promote", "reject"], outcomes
    winner = next(v for v, o in outcomes.items() if o.action == "promote")
    loser = next(v for v, o in outcomes.items() if o.action == "reject")
    assert "stale: champion moved" in outcomes[loser].reason
    assert outcomes[loser].from_version == winner

    assert alias(client, spec, "champion") == winner
    assert alias(client, spec, "previous_champion") == v1
    assert "stale" in client.get_model_version(spec.registered_model_name, loser).tags["promotion_rejected"]
    rows = history(spec, warehouse_url)
    assert [(r["action"], r["from_version"], r["to_version"]) for r in rows] == [
        ("reject", winner, loser),
        ("promote", v1, winner),
        ("promote", None, v1),
    ]
    assert rows[0]["reason"] == "stale: champion moved"


def test_failure_after_the_alias_moved_puts_it_back(
    kit: Any,
    trained: training.TrainingResult,
    client: MlflowClient,
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = fresh_spec(kit, "churn_undo")
    v1, v2 = register(spec, trained), register(spec, trained)
    with pytest.raises(access.VersionNotFound, match=r"cannot promote churn_undo_model version 9: no such version"):
        aliases.promote(spec, "9", FORCED, expected_champion=None, actor="t", reason="r", url=warehouse_url)
    aliases.promote(spec, v1, FORCED, expected_champion=None, actor="test", reason="first", url=warehouse_url)
    before = history(spec, warehouse_url)

    def broken_tag(*args: object) -> None:
        raise RuntimeError("tagging failed after the aliases moved")

    monkeypatch.setattr(aliases, "_tag", broken_tag)
    with pytest.raises(RuntimeError, match="tagging failed"):
        aliases.promote(spec, v2, FORCED, expected_champion=v1, actor="t", reason="r", url=warehouse_url)
    assert alias(client, spec, "champion") == v1
    assert alias(client, spec, "previous_champion") is None
    assert history(spec, warehouse_url) == before


def test_a_champion_that_cannot_score_the_holdout_counts_as_broken(
    kit: Any, trained: training.TrainingResult, warehouse_url: str
) -> None:
    spec = fresh_spec(kit, "churn_broken")
    v1 = register(spec, trained)
    aliases.promote(spec, v1, FORCED, expected_champion=None, actor="test", reason="first", url=warehouse_url)
    # A later spec version dropped a feature the champion still needs.
    newer = spec.model_copy(update={"version": 2, "features": tuple(f for f in spec.features if f.name != "autopay")})
    champion = access.evaluate_champion_on(newer, trained.holdout)
    assert champion is not None and champion.version == v1
    assert all(np.isnan(v) for v in champion.evaluation.metrics.values())
    decision = decide(newer.promotion, trained.evaluation, champion.evaluation, trained.baseline_evaluation)
    assert decision.promote
    assert "judged against the naive baseline instead" in " ".join(decision.reasons)


def test_unreachable_mlflow_fails_fast_and_moves_nothing(
    kit: Any,
    trained: training.TrainingResult,
    client: MlflowClient,
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = fresh_spec(kit, "churn_outage")
    v1, v2 = register(spec, trained), register(spec, trained)
    aliases.promote(spec, v1, FORCED, expected_champion=None, actor="test", reason="first", url=warehouse_url)
    before = history(spec, warehouse_url)
    dead = f"http://127.0.0.1:{kit.free_port()}"
    unreachable = f"MLflow tracking server {dead} is unreachable"
    try:
        with monkeypatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_URI", dead)
            settings.cache_clear()
            started = time.monotonic()  # the module's own retry settings
            with pytest.raises(access.RegistryUnavailable, match=unreachable):
                access.get_champion(spec)
            assert time.monotonic() - started < 10, "a dead tracking server must fail in seconds, not minutes"

            patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the rest only needs to fail, quickly
            attempts = {
                "promote": lambda: aliases.promote(
                    spec, v2, FORCED, expected_champion=v1, actor="t", reason="r", url=warehouse_url
                ),
                "rollback": lambda: aliases.rollback(spec, v2, actor="t", reason="r", url=warehouse_url),
                "reject": lambda: aliases.reject(spec, v2, GateDecision(False, ("no.",), None), url=warehouse_url),
                "log": lambda: run_logging.log_training_result(
                    spec, trained, trigger={"reason": "r"}, airflow_context={}
                ),
                "evaluate": lambda: access.evaluate_champion_on(spec, trained.holdout),
            }
            for name, attempt in attempts.items():
                with pytest.raises(access.RegistryUnavailable, match=unreachable):
                    attempt()
                    pytest.fail(f"{name} did not raise")
    finally:
        settings.cache_clear()

    assert access.get_champion(spec).version == v1
    assert alias(client, spec, "champion") == v1
    assert "promotion_rejected" not in client.get_model_version(spec.registered_model_name, v2).tags
    assert history(spec, warehouse_url) == before


def test_the_history_records_the_confidence_the_margin_and_the_window(
    kit: Any, trained: training.TrainingResult, client: MlflowClient, warehouse_url: str
) -> None:
    from nightly_ml.modeling import evaluation

    spec = fresh_spec(kit, "churn_confidence")
    interval = (WINDOW_END - timedelta(days=1), WINDOW_END)
    record = run_logging.log_training_result(
        spec,
        trained,
        trigger={"reason": "drift", "interval_start": interval[0].isoformat(), "interval_end": interval[1].isoformat()},
        airflow_context=AIRFLOW,
    )
    assert access.trigger_interval(spec, record.model_version) == interval
    challenger = evaluation.paired_evaluation(spec, access.load_model(spec, record.model_version), trained.holdout)
    baseline = evaluation.baseline_evaluation(spec, trained.train, trained.holdout)
    decision = decide(spec.promotion, challenger, None, baseline, seed=spec.training.seed)
    assert decision.promote and decision.confidence is not None, decision.reasons
    holdout = (trained.holdout_start, trained.holdout_start + timedelta(days=spec.training.holdout_days))
    context = aliases.DecisionContext(holdout=holdout, interval=interval)
    aliases.promote(
        spec,
        record.model_version,
        decision,
        expected_champion=None,
        actor="t",
        reason="r",
        url=warehouse_url,
        context=context,
    )
    [row] = history(spec, warehouse_url)
    assert row["primary_metric"] == "roc_auc" and row["margin"] == pytest.approx(spec.promotion.min_improvement)
    assert row["confidence"] == pytest.approx(decision.confidence.share) and row[
        "required_confidence"
    ] == pytest.approx(0.9)
    assert row["baseline_confidence"] == pytest.approx(decision.confidence.share)
    assert row["bootstrap"]["against"] == "naive baseline" and row["bootstrap"]["resamples"] == 1000
    assert (row["holdout_start"], row["holdout_end"]) == holdout
    assert (row["interval_start"], row["interval_end"]) == interval
    tags = client.get_model_version(spec.registered_model_name, record.model_version).tags
    assert tags["promotion_confidence"].startswith(f"{decision.confidence.share:.4f} vs naive baseline")

    # A challenger identical to the champion wins no resample: rejected, tagged, recorded with its numbers.
    champion = access.evaluate_champion_on(spec, trained.holdout)
    assert champion is not None and champion.evaluation.holdout is not None
    tie = decide(spec.promotion, challenger, champion.evaluation, baseline, seed=spec.training.seed)
    assert not tie.promote and tie.confidence is not None and tie.confidence.share == 0
    v2 = register(spec, trained)
    aliases.reject(spec, v2, tie, url=warehouse_url, context=context)
    latest = history(spec, warehouse_url)[0]
    assert (latest["action"], latest["confidence"], latest["interval_start"]) == ("reject", 0.0, interval[0])
    assert (
        "cannot be told from noise"
        in client.get_model_version(spec.registered_model_name, v2).tags["promotion_rejected"]
    )
    assert access.trigger_interval(spec, v2) is None  # its run recorded no interval
