"""Fault 3: the MLflow server goes down when training starts. The retrain run fails (fast: MLflow's HTTP
retries lowered through the environment), the champion alias has not moved once the server is back, no
decision was recorded, and ops get exactly one mail."""

from __future__ import annotations

import email
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fault_support import START, FaultWorld, dag_of, query, start_mlflow, stop_mlflow

from nightly_ml.devtools.scratch import environment_set, free_port
from nightly_ml.modeling.promotion import GateDecision
from nightly_ml.spec import load_spec

pytestmark = pytest.mark.faults

FORCED = GateDecision(promote=True, reasons=("forced by the test.",), primary_delta=0.01)


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    from nightly_ml.config import settings

    found = Inbox()
    port = free_port()
    controller = Controller(found, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_ALERTS", f"smtp://127.0.0.1:{port}?from_email=nightly%40example.com")
    monkeypatch.setenv("ALERT_EMAILS", "oncall@example.com")
    settings.cache_clear()
    try:
        yield found
    finally:
        controller.stop()
        settings.cache_clear()


def load_days(spec: Any, days: int) -> None:
    """The interval's ``days`` preceding days, labelled, through the merge step (no DAG needed for the setup)."""
    from nightly_ml import db
    from nightly_ml.tasks import ingest

    db.ensure_dataset_tables(spec)
    for offset in range(days, 0, -1):
        start = START - timedelta(days=offset)
        end = start + timedelta(days=1)
        files = ingest.extract(spec.name, start, end)
        staged = ingest.stage(spec.name, start, end, files, "setup")
        checked = ingest.validate(spec.name, start, end, staged, "setup", None)
        ingest.merge(spec.name, start, end, staged, checked, "setup")
        ingest.finish(spec.name, start, staged)


def test_mlflow_down_during_training_fails_cleanly_with_one_mail(
    fault_world: FaultWorld,
    airflow_db: Path,
    inbox: Inbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow import MlflowClient

    from nightly_ml.modeling import frames, training
    from nightly_ml.registry import access, aliases, run_logging

    spec = load_spec("faults_mlflow")
    name = spec.registered_model_name
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_mlflow(tmp_path, port)
    try:
        with environment_set("MLFLOW_TRACKING_URI", url):
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            load_days(spec, 3)
            frame = frames.load_training_frame(spec, START)
            trained = training.run_training(spec, frame, START)
            record = run_logging.log_training_result(spec, trained, trigger={"reason": "setup"}, airflow_context={})
            aliases.promote(spec, record.model_version, FORCED, expected_champion=None, actor="test", reason="setup")
            history_before = query(
                fault_world.warehouse_url, "SELECT * FROM ops.promotion_history WHERE model_name = %s", (name,)
            )
            inbox.messages.clear()

            real_training = training.run_training

            def server_goes_down(*args: Any, **kwargs: Any) -> Any:
                stop_mlflow(server)  # training has started: the registry disappears under it
                return real_training(*args, **kwargs)

            monkeypatch.setattr(training, "run_training", server_goes_down)
            dag = dag_of("retrain.py", f"retrain__{spec.name}")
            run = dag.test(run_conf={"window_end": START.isoformat(), "reason": "fault test"})
            states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
            assert str(run.state) == "failed", states
            assert states["train"] == "failed" and states["promote"] == "upstream_failed", states

            server = start_mlflow(tmp_path, port)
            assert access.get_champion(spec).version == record.model_version
            client = MlflowClient(tracking_uri=url, registry_uri=url)
            assert client.get_registered_model(name).aliases == {"champion": record.model_version}
            assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == [record.model_version]
            history_after = query(
                fault_world.warehouse_url, "SELECT * FROM ops.promotion_history WHERE model_name = %s", (name,)
            )
            assert history_after == history_before
    finally:
        stop_mlflow(server)

    [mail] = inbox.messages
    assert f"retrain__{spec.name}" in mail["Subject"] and "train" in mail["Subject"], mail["Subject"]
