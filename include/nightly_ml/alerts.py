"""Ops alert emails: what happened, where to look, what to do.

Mails go through the Airflow SMTP connection named by ``ALERT_SMTP_CONN_ID`` (default
``smtp_alerts``, e.g. from ``AIRFLOW_CONN_SMTP_ALERTS``). Where no such connection exists
(the embedded single-machine set-up) each mail is written to ``data/outbox/`` as an
``.eml`` file instead, and the log says so: an alert is never silently dropped.
"""

from __future__ import annotations

import html
import logging
import re
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Protocol

from nightly_ml import layout, storage
from nightly_ml.config import settings
from nightly_ml.intervals import local
from nightly_ml.spec import DatasetSpec


class _Confidence(Protocol):
    """What a mail says of a bootstrap (``modeling.promotion.Confidence``; core does not import modeling)."""

    @property
    def against(self) -> str: ...
    @property
    def share(self) -> float: ...
    @property
    def required(self) -> float: ...
    @property
    def resamples(self) -> int: ...
    @property
    def passed(self) -> bool: ...
    @property
    def p_value(self) -> float: ...


class _GateDecision(Protocol):
    """The parts of ``modeling.promotion.GateDecision`` a promotion mail reads."""

    @property
    def reasons(self) -> tuple[str, ...]: ...
    @property
    def primary_delta(self) -> float | None: ...
    @property
    def margin(self) -> float | None: ...
    @property
    def confidence(self) -> _Confidence | None: ...
    @property
    def baseline_confidence(self) -> _Confidence | None: ...


log = logging.getLogger(__name__)
DEFAULT_SENDER = "nightly-ml@localhost"
_URL = re.compile(r"https?://[^\s<>&\"']+")


@dataclass(frozen=True)
class Alert:
    subject: str
    what_happened: str
    where_to_look: list[str]
    what_to_do: str
    severity: str = "warning"

    def body(self) -> str:
        looks = "\n".join(f"  - {item}" for item in self.where_to_look) or "  - the Airflow UI"
        return f"What happened\n{self.what_happened}\n\nWhere to look\n{looks}\n\nWhat to do\n{self.what_to_do}\n"

    def html(self) -> str:
        """The same three sections as HTML, with every http(s) URL a link."""

        def linked(text: str) -> str:
            escaped = html.escape(text)
            return _URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped).replace("\n", "<br>")

        looks = "".join(f"<li>{linked(item)}</li>" for item in self.where_to_look) or "<li>the Airflow UI</li>"
        return (
            f"<html><body><h3>What happened</h3><p>{linked(self.what_happened)}</p>"
            f"<h3>Where to look</h3><ul>{looks}</ul><h3>What to do</h3><p>{linked(self.what_to_do)}</p>"
            '<p style="color:#666">nightly-ml · the runbook: docs/RUNBOOK.md</p></body></html>'
        )


def _interval(start: datetime, end: datetime) -> str:
    return f"[{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC"


def _quarantine_hint(spec: DatasetSpec, start: datetime) -> str:
    # Text for a person to paste into psql, never executed here.
    query = "SELECT * FROM ops.quarantine WHERE dataset = '{}' AND interval_start = '{}'"
    return "quarantined rows: " + query.format(spec.name, start.isoformat())


def batch_rejected(
    spec: DatasetSpec,
    start: datetime,
    end: datetime,
    reason: str,
    *,
    raw_folder: Path | None,
    data_docs_url: str | None,
) -> Alert:
    looks = [f"the failed validate task's log in the Airflow UI: {layout.airflow_dag_url(f'ingest__{spec.name}')}"]
    if data_docs_url:
        looks.append(f"the validation report (Data Docs): {data_docs_url}")
    if raw_folder:
        looks.append(f"the raw input, kept untouched: {raw_folder}")
    looks.append(_quarantine_hint(spec, start))
    return Alert(
        subject=f"[nightly-ml] {spec.name}: batch for {local(spec, start):%Y-%m-%d} rejected",
        what_happened=f"The {spec.name} batch for {_interval(start, end)} was rejected; nothing was merged.\n"
        f"Reason: {reason}",
        where_to_look=looks,
        what_to_do="Fix the input at the source (or the spec, if the change is intended), then clear the "
        "ingest run for this interval in the Airflow UI; the re-run replaces the interval exactly.",
        severity="error",
    )


def input_late(spec: DatasetSpec, start: datetime, end: datetime, deadline: datetime, expected: str) -> Alert:
    return Alert(
        subject=f"[nightly-ml] {spec.name}: input for {local(spec, start):%Y-%m-%d} missing past its deadline",
        what_happened=f"The {spec.name} input for {_interval(start, end)} had not arrived by its deadline "
        f"{deadline:%Y-%m-%d %H:%M %Z} (interval end + source.wait_hours); the ingest run failed and nothing "
        "was loaded.",
        where_to_look=[
            f"where the input was expected: {expected}",
            f"the ingest runs in the Airflow UI: {layout.airflow_dag_url(f'ingest__{spec.name}')}",
        ],
        what_to_do="Ask the producer for the file (or fix the source), then clear the ingest run for this "
        "interval; raise source.wait_hours in the spec if the input is routinely this late.",
        severity="error",
    )


def rows_quarantined(
    spec: DatasetSpec, start: datetime, end: datetime, counts: dict[str, int], share: float, data_docs_url: str | None
) -> Alert:
    rules = "\n".join(f"  {rule}: {count}" for rule, count in counts.items())
    looks = [_quarantine_hint(spec, start)]
    if data_docs_url:
        looks.append(f"the validation report (Data Docs): {data_docs_url}")
    return Alert(
        subject=f"[nightly-ml] {spec.name}: {share:.1%} of rows quarantined for {local(spec, start):%Y-%m-%d}",
        what_happened=f"The {spec.name} batch for {_interval(start, end)} was merged without {share:.1%} of its "
        f"rows, which broke these rules:\n{rules}",
        where_to_look=looks,
        what_to_do="Check whether the source changed. If the quarantined rows are valid, widen the spec's rules "
        "and re-run the interval; otherwise fix them at the source.",
    )


def _monitoring_link(spec: DatasetSpec, report: str | None) -> str:
    """Where a monitoring decision is shown: its drift report, else the monitor DAG's runs."""
    if report:
        return f"the drift report: {report}"
    return f"the monitor runs in the Airflow UI: {layout.airflow_dag_url(f'monitor__{spec.name}')}"


def retraining_triggered(
    spec: DatasetSpec, start: datetime, end: datetime, reasons: list[str], report: str | None
) -> Alert:
    return Alert(
        subject=f"[nightly-ml] {spec.name}: retraining triggered on {local(spec, start):%Y-%m-%d}",
        what_happened=f"Monitoring of {_interval(start, end)} triggered retraining:\n"
        + "\n".join(f"  - {r}" for r in reasons),
        where_to_look=[
            _monitoring_link(spec, report),
            f"the retrain run and its MLflow run: {layout.airflow_dag_url(f'retrain__{spec.name}')}",
        ],
        what_to_do="Nothing, if the retrained model is promoted or rejected as expected; check the promotion "
        "mail. If drift comes from a broken source rather than the world, fix the source.",
        severity="info",
    )


def drift_awaiting_labels(
    spec: DatasetSpec, start: datetime, end: datetime, reasons: list[str], report: str | None
) -> Alert:
    return Alert(
        subject=f"[nightly-ml] {spec.name}: drift on {local(spec, start):%Y-%m-%d}, retraining waits for labels",
        what_happened=f"Monitoring of {_interval(start, end)} found drift; retraining waits until the labelled rows "
        "since it began can judge a retrained model:\n" + "\n".join(f"  - {r}" for r in reasons),
        where_to_look=[
            _monitoring_link(spec, report),
        ],
        what_to_do="Nothing, if the drift comes from the world: monitoring triggers the retrain on the first night "
        "the labels are in, and the promotion mail follows. If it comes from a broken source, fix the source. To "
        f"retrain now anyway, trigger {layout.airflow_dag_url(f'retrain__{spec.name}')} by hand.",
        severity="info",
    )


def _confidence_line(decision: _GateDecision | None) -> str:
    """One sentence with the gate's confidence, for a person deciding whether to trust the move."""
    found = decision.confidence if decision else None
    if decision is None or found is None:
        return ""
    line = (
        f"\nConfidence: the challenger beat the {found.against} by the required margin"
        f"{'' if decision.margin is None else f' ({decision.margin:.4g})'} in {found.share:.1%} of "
        f"{found.resamples} paired bootstrap resamples of the holdout (one-sided p ≈ {found.p_value:.3f}; "
        f"required {found.required:.0%})."
    )
    if decision.baseline_confidence is not None and decision.baseline_confidence is not found:
        line += f" Against the naive baseline: {decision.baseline_confidence.share:.1%}."
    return line


def model_moved(
    spec: DatasetSpec,
    action: str,
    from_version: str | None,
    to_version: str,
    reasons: list[str],
    tracking_uri: str,
    decision: _GateDecision | None = None,
) -> Alert:
    verb = {"promote": "promoted", "rollback": "rolled back"}.get(action, action)
    found = decision.confidence if decision else None
    close_call = found is not None and found.share < min(0.99, found.required + 0.05)
    watch = (
        f" The confidence ({found.share:.0%}) is close to the required {found.required:.0%}: watch the live "
        "metric of the next nights, and roll back if it is worse than before."
        if close_call and found is not None
        else ""
    )
    return Alert(
        subject=f"[nightly-ml] {spec.name}: model version {to_version} {verb}",
        what_happened=f"The champion of {spec.registered_model_name} moved from version {from_version or 'none'} "
        f"to version {to_version} ({verb}).{_confidence_line(decision)}\n" + "\n".join(f"  - {r}" for r in reasons),
        where_to_look=[
            f"MLflow registry at {tracking_uri}: model {spec.registered_model_name}",
            "SELECT * FROM ops.promotion_history ORDER BY decided_at DESC",
        ],
        what_to_do=f"Nothing if expected.{watch} To undo, trigger rollback__{spec.name} (target 'previous').",
        severity="info",
    )


def _rejection_advice(decision: _GateDecision | None) -> str:
    """What to do, by why the gate said no: noise, the naive baseline, or a real regression."""
    summary = decision.reasons[0] if decision and decision.reasons else ""
    found = decision.confidence if decision else None
    if "naive baseline" in summary:
        return (
            "The model does not beat a naive predictor (class prior / training mean) with confidence: look at "
            "the features and labels of the training window — a broken feature, a label that no longer means "
            "the same, or a world the candidate models cannot learn. The champion keeps serving."
        )
    if found is not None and not found.passed and decision is not None and (decision.primary_delta or 0) > 0:
        return (
            f"The challenger looks better on average, but only in {found.share:.0%} of bootstrap resamples "
            f"(required {found.required:.0%}): on this holdout the improvement cannot be told from noise. Nothing "
            f"to do if the champion still performs; a longer holdout (training.holdout_days) tells smaller "
            f"differences apart; a lower promotion.confidence promotes sooner, at the price of more promotions "
            "that were noise."
        )
    return (
        "If drift persists and no challenger passes, look at the data: the world may have changed "
        "beyond what the candidate models can learn from the training window."
    )


def challenger_rejected(
    spec: DatasetSpec, version: str, reasons: list[str], decision: _GateDecision | None = None
) -> Alert:
    return Alert(
        subject=f"[nightly-ml] {spec.name}: challenger version {version} not promoted",
        what_happened="The retrained model did not pass the promotion gate; the champion stays."
        + _confidence_line(decision)
        + "\n"
        + "\n".join(f"  - {r}" for r in reasons),
        where_to_look=[
            f"model version {version} of {spec.registered_model_name} (tag promotion_rejected)",
            "SELECT * FROM ops.promotion_history ORDER BY decided_at DESC",
        ],
        what_to_do=_rejection_advice(decision),
        severity="warning",
    )


def task_failed(context: Any) -> Alert:
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(ti, "run_id", "?")
    error = context.get("exception")
    return Alert(
        subject=f"[nightly-ml] task {dag_id}.{task_id} failed",
        what_happened=f"Task {task_id} of DAG {dag_id} (run {run_id}) failed after its retries.\nError: {error}",
        where_to_look=[f"the task and its log in the Airflow UI: {layout.airflow_task_url(dag_id, run_id, task_id)}"],
        what_to_do="Read the error; fix its cause; clear the task to re-run it (every task is idempotent).",
        severity="error",
    )


def _message(alert: Alert, recipients: list[str], sender: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = alert.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="nightly-ml")
    message["X-Nightly-ML-Severity"] = alert.severity
    message.set_content(alert.body())
    message.add_alternative(alert.html(), subtype="html")
    return message


def _smtp_connection() -> Any | None:
    """The Airflow SMTP connection, or None where none is configured."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(settings().smtp_conn_id)
    except AirflowNotFoundException:
        return None


def _deliver_smtp(connection: Any, message: EmailMessage) -> None:
    extra = connection.extra_dejson or {}
    port = connection.port or 25
    timeout = int(extra.get("timeout", 30))
    if extra.get("ssl") or port == 465:
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            connection.host, port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        client = smtplib.SMTP(connection.host, port, timeout=timeout)
    with client:
        if extra.get("starttls"):
            client.starttls(context=ssl.create_default_context())
        if connection.login:
            client.login(connection.login, connection.password or "")
        client.send_message(message)


def _write_outbox(message: EmailMessage) -> storage.StoragePath:
    slug = re.sub(r"[^a-z0-9]+", "-", message["Subject"].lower()).strip("-")[:80]
    body = bytes(message)
    path = storage.outbox_root() / f"{datetime.now():%Y%m%dT%H%M%S%f}-{slug}.eml"
    return storage.write_whole(path, lambda handle: handle.write(body))


def recipients_for(spec: DatasetSpec | None) -> list[str]:
    found = list(settings().alert_emails) + list(spec.alert_emails if spec else ())
    return list(dict.fromkeys(found)) or ["ml-ops@localhost"]


def send(alert: Alert, spec: DatasetSpec | None = None) -> str:
    """Send an alert; returns where it went ('smtp://host:port' or the outbox file)."""
    connection = _smtp_connection()
    sender = DEFAULT_SENDER
    if connection is not None:
        sender = (connection.extra_dejson or {}).get("from_email", sender)
    message = _message(alert, recipients_for(spec), sender)
    if connection is None:
        path = _write_outbox(message)
        log.warning("No SMTP connection %r: alert %r written to %s", settings().smtp_conn_id, alert.subject, path)
        return str(path)
    _deliver_smtp(connection, message)
    log.info("Alert %r sent to %s", alert.subject, message["To"])
    return f"smtp://{connection.host}:{connection.port}"


def on_task_failure(context: Any) -> None:
    """Airflow ``on_failure_callback``: runs once a task has failed for good (after its retries).

    A rejected batch already sent its own, more useful mail: no second one for the same failure.
    """
    from nightly_ml.errors import AlreadyAlerted

    error = context.get("exception")
    if isinstance(error, AlreadyAlerted) or isinstance(getattr(error, "__cause__", None), AlreadyAlerted):
        log.info("this failure already mailed its own alert; no task-failure alert")
        return
    send(task_failed(context))
