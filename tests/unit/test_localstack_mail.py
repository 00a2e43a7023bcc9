"""`make up` listens on 127.0.0.1 only (unless told otherwise) and catches the alert mails.

The plan: which address and port each server gets, the SMTP settings pointed at the catcher. The catcher
itself (nightly_ml.devtools.mailcatcher), for real on free local ports: a mail sent with the stack's
alert connection shows on its web page.
"""

from __future__ import annotations

import json
import smtplib
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from nightly_ml.devtools import localstack, mailcatcher
from nightly_ml.devtools.scratch import free_port


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from nightly_ml.config import settings

    monkeypatch.setenv("NIGHTLY_ML_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ALERT_SMTP_CONN_ID", raising=False)
    settings.cache_clear()
    yield tmp_path.resolve()
    settings.cache_clear()


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_every_server_of_the_plan_listens_on_127_0_0_1_by_default(data_dir: Path) -> None:
    stack = localstack.plan(8081, 5001, {}, smtp_port=1026, mail_port=8026)
    assert stack.host == "127.0.0.1"
    assert stack.env["AIRFLOW__API__HOST"] == "127.0.0.1"
    api = stack.airflow_commands["api-server"]
    assert (option(api, "--host"), option(api, "--port")) == ("127.0.0.1", "8081")
    assert stack.mlflow_command is not None and option(stack.mlflow_command, "--host") == "127.0.0.1"
    assert stack.mail_command is not None
    assert [option(stack.mail_command, o) for o in ("--host", "--smtp-port", "--web-port")] == [
        "127.0.0.1",
        "1026",
        "8026",
    ]
    assert option(stack.mail_command, "--folder") == str(data_dir / "mail")
    # Airflow 3.3 cannot bind its log servers to an address: they are not started at all
    assert "--skip-serve-logs" in stack.airflow_commands["scheduler"]
    assert "--skip-serve-logs" in stack.airflow_commands["triggerer"]
    assert stack.env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert stack.ports == {"Airflow": 8081, "MLflow": 5001, "mail SMTP": 1026, "mail web page": 8026}
    assert stack.urls["Alert mails (mail catcher)"] == "http://localhost:8026/"


def test_the_address_is_configurable(data_dir: Path) -> None:
    stack = localstack.plan(8080, 5000, {}, host="0.0.0.0")
    assert option(stack.airflow_commands["api-server"], "--host") == "0.0.0.0"
    assert stack.env["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert stack.mlflow_command is not None and option(stack.mlflow_command, "--host") == "0.0.0.0"
    assert stack.mail_command is not None and option(stack.mail_command, "--host") == "0.0.0.0"
    # clients on this machine still connect over loopback
    assert stack.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    assert stack.env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    given = localstack.plan(8080, 5000, {"NIGHTLY_ML_BASE_URL": "http://airflow.example:8080"})
    assert "NIGHTLY_ML_BASE_URL" not in given.env, "a given browser address is kept"
    named = localstack.plan(8080, 5000, {}, host="192.0.2.7")
    assert named.urls["Airflow UI"] == "http://192.0.2.7:8080"
    assert named.env["AIRFLOW__SMTP__SMTP_HOST"] == "192.0.2.7"


def test_alert_mails_and_airflow_mails_go_to_the_catcher(data_dir: Path) -> None:
    stack = localstack.plan(8080, 5000, {}, smtp_port=1026)
    assert stack.env["AIRFLOW_CONN_SMTP_ALERTS"] == "smtp://127.0.0.1:1026"
    assert stack.env["AIRFLOW_CONN_SMTP_DEFAULT"].startswith("smtp://127.0.0.1:1026?")
    assert (stack.env["AIRFLOW__SMTP__SMTP_HOST"], stack.env["AIRFLOW__SMTP__SMTP_PORT"]) == ("127.0.0.1", "1026")
    assert stack.env["AIRFLOW__SMTP__SMTP_STARTTLS"] == stack.env["AIRFLOW__SMTP__SMTP_SSL"] == "False"
    assert localstack.mailcatcher.__name__ in " ".join(stack.mail_command or [])


def test_a_given_alert_connection_is_used_and_no_catcher_started(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nightly_ml.config import settings

    monkeypatch.setenv("ALERT_SMTP_CONN_ID", "ops_mail")
    settings.cache_clear()
    stack = localstack.plan(8080, 5000, {"AIRFLOW_CONN_OPS_MAIL": "smtp://mail.internal:25"})
    assert stack.mail_command is None
    assert not any(key.startswith(("AIRFLOW_CONN_", "AIRFLOW__SMTP__")) for key in stack.env)
    assert "Alert mails (mail catcher)" not in stack.urls and "mail SMTP" not in stack.ports


def get(url: str) -> tuple[int, str, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode(), dict(response.headers)


def test_a_mail_sent_with_the_stack_settings_shows_on_the_web_page(data_dir: Path) -> None:
    from airflow.models.connection import Connection

    from nightly_ml import alerts

    smtp_port, web_port = free_port(), free_port()
    stack = localstack.plan(8080, 5000, {}, smtp_port=smtp_port, mail_port=web_port)
    connection = Connection(conn_id="smtp_alerts", uri=stack.env["AIRFLOW_CONN_SMTP_ALERTS"])
    alert = alerts.Alert(
        subject="[nightly-ml] demand: drift on 2026-01-11 <b>",
        what_happened="Two features drifted.",
        where_to_look=["the drift report"],
        what_to_do="Nothing: a retrain was triggered.",
        severity="warning",
    )
    message = alerts._message(alert, ["ml-ops@example.com"], alerts.DEFAULT_SENDER)
    with mailcatcher.MailCatcher("127.0.0.1", smtp_port, web_port, data_dir / "mail"):
        base = f"http://127.0.0.1:{web_port}"
        assert "No mail caught yet" in get(f"{base}/")[1]
        assert get(f"{base}/health")[:2] == (200, "ok")
        alerts._deliver_smtp(connection, message)

        listed = json.loads(get(f"{base}/messages.json")[1])
        assert [(m["subject"], m["to"]) for m in listed] == [(alert.subject, "ml-ops@example.com")]
        status, page, headers = get(f"{base}/")
        assert status == 200 and "drift on 2026-01-11 &lt;b&gt;" in page and "<b>" not in page.split("<h1>")[1]
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        status, shown, _ = get(f"{base}/messages/{listed[0]['id']}")
        assert "Two features drifted." in shown and "the drift report" in shown
        status, part, headers = get(f"{base}/messages/{listed[0]['id']}/html")
        assert "Two features drifted." in part and headers["Content-Security-Policy"].startswith("sandbox")
        raw = get(f"{base}/messages/{listed[0]['id']}.eml")[1]
        assert "Subject: [nightly-ml] demand: drift on 2026-01-11 <b>" in raw
    # kept on disk: the next start shows them again
    assert [p.suffix for p in (data_dir / "mail").iterdir()] == [".eml"]


def test_the_web_page_is_read_only_and_knows_its_messages(tmp_path: Path) -> None:
    web_port = free_port()
    with mailcatcher.MailCatcher("127.0.0.1", free_port(), web_port, tmp_path / "mail") as catcher:
        plain = EmailMessage()
        plain["Subject"] = "plain only"
        plain.set_content("hello")
        message_id = catcher.store.add(bytes(plain))
        base = f"http://127.0.0.1:{web_port}"
        assert "hello" in get(f"{base}/messages/{message_id}")[1]
        for path in ("/messages/../../etc/passwd", "/messages/nope", f"/messages/{message_id}/html"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                get(f"{base}{path}")
            assert refused.value.code == 404, path
        request = urllib.request.Request(f"{base}/", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 501


def test_the_catcher_smtp_server_speaks_smtp_on_its_address(tmp_path: Path) -> None:
    smtp_port = free_port()
    with mailcatcher.MailCatcher("127.0.0.1", smtp_port, free_port(), tmp_path / "mail") as catcher:
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            client.sendmail("a@localhost", ["b@localhost"], b"Subject: raw\r\n\r\nbody\r\n")
        assert [catcher.store.summary(i)["subject"] for i in catcher.store.ids()] == ["raw"]
        sockets = {catcher.web.server_address[:2], catcher.smtp.server.sockets[0].getsockname()[:2]}
        assert {address for address, _ in sockets} == {"127.0.0.1"}
