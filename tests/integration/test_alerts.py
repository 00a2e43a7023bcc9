"""Alert mails through a real SMTP server (aiosmtpd on a free local port), and the outbox fallback."""

from __future__ import annotations

import email
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message

import pytest
from aiosmtpd.controller import Controller

from nightly_ml import alerts
from nightly_ml.config import settings
from nightly_ml.devtools.scratch import free_port
from nightly_ml.spec import load_spec

pytestmark = pytest.mark.integration

START = datetime(2026, 5, 1, tzinfo=UTC)


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_ALERTS", f"smtp://127.0.0.1:{port}?from_email=nightly%40example.com")
    monkeypatch.setenv("ALERT_EMAILS", "oncall@example.com")
    settings.cache_clear()
    try:
        yield inbox
    finally:
        controller.stop()
        settings.cache_clear()


def test_a_rejected_batch_mail_says_what_where_and_what_to_do(smtp_server: Inbox, tmp_path) -> None:
    spec = load_spec("churn")
    alert = alerts.batch_rejected(
        spec,
        START,
        START + timedelta(days=1),
        "schema broken: missing column(s) ['plan']",
        raw_folder=tmp_path,
        data_docs_url="file:///reports/index.html",
    )
    where = alerts.send(alert, spec)
    assert where.startswith("smtp://127.0.0.1:")
    [message] = smtp_server.messages
    assert message["Subject"] == "[nightly-ml] churn: batch for 2026-05-01 rejected"
    assert message["From"] == "nightly@example.com"
    assert set(message["To"].split(", ")) == {"oncall@example.com", *spec.alert_emails}
    assert message["X-Nightly-ML-Severity"] == "error"
    body = plain_text(message)
    assert "<h3>What happened</h3>" in html_text(message)  # an HTML part beside the plain text
    for part in (
        "What happened",
        "missing column(s) ['plan']",
        "Where to look",
        str(tmp_path),
        "file:///reports/index.html",
        "ops.quarantine",
        "What to do",
        "re-run",
    ):
        assert part in body


def _part(message: email.message.Message, subtype: str) -> str:
    for part in message.walk():
        if part.get_content_type() == f"text/{subtype}":
            return part.get_payload(decode=True).decode()
    raise AssertionError(f"no text/{subtype} part")


def plain_text(message: email.message.Message) -> str:
    return _part(message, "plain")


def html_text(message: email.message.Message) -> str:
    return _part(message, "html")


def test_the_failure_callback_mails_the_task_and_its_error(smtp_server: Inbox) -> None:
    class TaskInstance:
        dag_id, task_id, run_id = "ingest__churn", "merge", "scheduled__2026-05-01"

    alerts.on_task_failure({"ti": TaskInstance(), "exception": RuntimeError("connection refused")})
    [message] = smtp_server.messages
    assert message["Subject"] == "[nightly-ml] task ingest__churn.merge failed"
    assert "connection refused" in plain_text(message)
    # a link a person can open, not a path on a worker
    assert "http://localhost:8080/dags/ingest__churn/runs/scheduled__2026-05-01/tasks/merge" in plain_text(message)
    assert '<a href="http://localhost:8080/dags/ingest__churn/runs/' in html_text(message)


def test_without_an_smtp_connection_the_alert_lands_in_the_outbox(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_ALERTS", raising=False)
    monkeypatch.setenv("NIGHTLY_ML_DATA_DIR", str(tmp_path))
    settings.cache_clear()
    try:
        spec = load_spec("demand")
        where = alerts.send(
            alerts.model_moved(spec, "promote", "3", "4", ["promote: every check passed."], "http://mlflow:5000"), spec
        )
    finally:
        settings.cache_clear()
    saved = email.message_from_bytes((tmp_path / "outbox" / where.rsplit("/", 1)[-1]).read_bytes())
    assert saved["Subject"] == "[nightly-ml] demand: model version 4 promoted"
    assert "rollback__demand" in plain_text(saved)


def test_a_rejected_batch_is_not_mailed_twice(smtp_server: Inbox) -> None:
    from nightly_ml.etl.staging import BatchRejected

    class TaskInstance:
        dag_id, task_id, run_id = "ingest__churn", "validate", "scheduled__2026-05-01"

    try:
        try:
            raise BatchRejected("empty batch")
        except BatchRejected as rejected:
            raise RuntimeError("empty batch") from rejected
    except RuntimeError as failure:
        alerts.on_task_failure({"ti": TaskInstance(), "exception": failure})
    assert smtp_server.messages == []
