"""Task steps of ``ingest__<dataset>`` (wait → extract → stage → validate → merge → archive).

Arguments and results are small typed payloads that travel through XCom. Every step is
idempotent for its interval: re-running it replaces what an earlier run left.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Generator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import psycopg2.errors

from nightly_ml import alerts, db, layout
from nightly_ml.etl import quarantine, sources, staging, validation, warehouse
from nightly_ml.etl.staging import BatchRejected, StageResult
from nightly_ml.intervals import parse_utc, partition_name
from nightly_ml.spec import DatasetSpec, load_spec

log = logging.getLogger(__name__)


class Batch(TypedDict):
    """What the wait step hands on: the dataset and its interval (UTC)."""

    dataset: str
    interval_start: datetime
    interval_end: datetime


def interval_of(batch: Batch) -> tuple[datetime, datetime]:
    """The batch's interval as plain UTC datetimes (XCom may hand back pendulum objects or strings)."""
    return parse_utc(batch["interval_start"]), parse_utc(batch["interval_end"])


def deadline(dataset: str, end: datetime) -> datetime:
    """When the interval's input must be there: the interval's end plus the source's ``wait_hours``."""
    return end + timedelta(hours=load_spec(dataset).source.wait_hours)


def wait_for_input(dataset: str, start: datetime, end: datetime, now: datetime | None = None) -> bool:
    """True once the interval's input has arrived; past the deadline without it, mail ops once and fail."""
    from nightly_ml.errors import InputPastDeadline

    spec = load_spec(dataset)
    if sources.input_ready(spec, start, end):
        return True
    due = deadline(dataset, end)
    current = now or datetime.now(UTC)
    expected = sources.expected_input(spec, start)
    if current < due:
        log.info("%s: input for %s not there yet (%s); waiting until %s", dataset, start, expected, due)
        return False
    alerts.send(alerts.input_late(spec, start, end, due.astimezone(spec.zone), expected), spec)
    raise InputPastDeadline(
        f"{dataset}: no input for the interval [{start}, {end}) by its deadline {due} "
        f"(expected: {expected}); drop the files and clear this run, or raise source.wait_hours in the spec"
    )


def _reject(
    spec: DatasetSpec,
    start: datetime,
    end: datetime,
    run_id: str,
    reason: str,
    *,
    stage: StageResult | None,
    data_docs_url: str | None = None,
) -> BatchRejected:
    """Record a rejected batch (audit row + alert) and return the exception to raise."""
    with db.transaction() as conn:
        quarantined = quarantine.quarantined_rows(conn, spec, start)
        warehouse.record_audit(
            conn,
            spec=spec,
            start=start,
            end=end,
            run_id=run_id,
            status="rejected",
            rows_in=stage.rows_in if stage else 0,
            rows_merged=0,
            rows_quarantined=quarantined,
            reason=reason,
            files=stage.files if stage else [],
            data_docs_url=data_docs_url,
        )
    folder = sources.landing_folder(spec, start)
    alerts.send(
        alerts.batch_rejected(
            spec, start, end, reason, raw_folder=folder if folder.exists() else None, data_docs_url=data_docs_url
        ),
        spec,
    )
    return BatchRejected(f"{spec.name} {start:%Y-%m-%d}: {reason}")


# The catalog's unique names: creating a staging table that another run of the interval is creating too.
_CATALOG_NAMES = ("pg_type_typname_nsp_index", "pg_class_relname_nsp_index")


@contextmanager
def _staging_owned(dataset: str, start: datetime, run_id: str) -> Generator[None]:
    """Turn "the interval's staging tables vanished or are being re-created" into :class:`ConcurrentRun`: another
    run of the same interval (a backfill and a manual run, a zombie task and its retry) is loading it."""
    from nightly_ml.errors import ConcurrentRun

    try:
        yield
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.UniqueViolation) as error:
        if isinstance(error, psycopg2.errors.UniqueViolation) and error.diag.constraint_name not in _CATALOG_NAMES:
            raise
        first = (error.pgerror or str(error)).strip().splitlines()[0]
        # This run will not merge the interval, so its quarantine rows are not the interval's: the other run's
        # merge keeps only its own, but this run's validation may have committed after that merge.
        with db.transaction() as conn, conn.cursor() as cur:
            cur.execute(db.load_sql("quarantine_clear.sql"), {"dataset": dataset, "start": start, "run_id": run_id})
        raise ConcurrentRun(
            f"{dataset} {start:%Y-%m-%d}: another run of this interval replaced or dropped its staging tables while "
            f"run {run_id} was using them ({first}); that run loads the interval: see its outcome in ops.load_audit, "
            "and clear this run only if that one failed"
        ) from None


def extract(dataset: str, start: datetime, end: datetime) -> list[dict[str, str]]:
    spec = load_spec(dataset)
    db.ensure_dataset_tables(spec)
    files = sources.extract(spec, start, end)
    log.info(
        "%s: %d raw file(s) for %s: %s",
        dataset,
        len(files),
        partition_name(spec, start),
        [f.path.name for f in files],
    )
    return [f.as_dict() for f in files]


def stage(dataset: str, start: datetime, end: datetime, files: list[dict[str, str]], run_id: str) -> dict[str, Any]:
    spec = load_spec(dataset)
    raw_files = [sources.RawFile.from_dict(f) for f in files]
    delimiter = getattr(spec.source, "delimiter", ",")
    try:
        with _staging_owned(dataset, start, run_id), db.transaction() as conn:
            result = staging.stage_files(conn, spec, start, raw_files, delimiter)
            quarantine.quarantine_bad_lines(conn, spec, start, end, run_id, result.bad_lines)
    except BatchRejected as rejected:
        raise _reject(spec, start, end, run_id, str(rejected), stage=None) from None
    log.info(
        "%s: staged %d rows (%d unreadable lines quarantined), %d labels into staging.%s",
        dataset,
        result.rows_staged,
        len(result.bad_lines),
        result.labels_staged,
        result.rows_table,
    )
    return result.as_dict()


def validate(
    dataset: str,
    start: datetime,
    end: datetime,
    stage_summary: dict[str, Any],
    run_id: str,
    reference_profile: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    spec = load_spec(dataset)
    stage_result = StageResult.from_dict(stage_summary)
    # A slow validate task: was Great Expectations (~6 s to import) in the worker already (tasks/preload.py)?
    log.info(
        "%s: Great Expectations %s",
        dataset,
        "preloaded by the worker" if "great_expectations" in sys.modules else "imported by this task",
    )
    conn = db.connect()
    try:
        with _staging_owned(dataset, start, run_id):
            report = validation.validate(conn, spec, stage_result, start, end, run_id, reference_profile)
        conn.commit()
    except BatchRejected as rejected:
        conn.commit()  # keep the quarantine rows written so far, for inspection
        docs = validation.data_docs_index(spec, start)
        raise _reject(
            spec,
            start,
            end,
            run_id,
            str(rejected),
            stage=stage_result,
            data_docs_url=layout.public_url(docs) if docs.exists() else None,
        ) from None
    finally:
        conn.close()
    failed = [f"{o.rule}:{o.column} ({o.unexpected_count})" for o in report.failed_rules if o.hard]
    log.info(
        "%s: %d of %d rows quarantined (%.2f%%); failed rules: %s; soft failures: %s",
        dataset,
        report.bad_rows,
        report.rows_in,
        100 * report.bad_share,
        failed or "none",
        report.soft_failures or "none",
    )
    return {
        "rows_in": report.rows_in,
        "bad_rows": report.bad_rows,
        "bad_share": report.bad_share,
        "failed_rules": failed,
        "soft_failures": report.soft_failures,
        "data_docs_url": report.data_docs_url,
    }


def data_docs_url(dataset: str, start: datetime) -> str | None:
    """The Data Docs page of the interval's latest validation, if one was built."""
    docs = layout.data_docs_index(load_spec(dataset), start)
    return layout.public_url(docs) if docs.exists() else None


def merge(
    dataset: str,
    start: datetime,
    end: datetime,
    stage_summary: dict[str, Any],
    validation_summary: dict[str, Any],
    run_id: str,
) -> dict[str, Any]:
    spec = load_spec(dataset)
    stage_result = StageResult.from_dict(stage_summary)
    context = {"dataset": dataset, "start": start, "run_id": run_id}
    with _staging_owned(dataset, start, run_id), db.transaction() as conn:
        with conn.cursor() as cur:
            cur.execute(db.load_sql("ingest_interval_lock.sql"), {"lock_key": f"nightly_ml.interval:{dataset}:{start}"})
            cur.execute(db.load_sql("quarantine_keep_run.sql"), context)
        result = warehouse.merge_interval(conn, spec, stage_result, start, end, run_id)
        counts = quarantine.quarantine_summary(conn, spec, start)
        warehouse.record_audit(
            conn,
            spec=spec,
            start=start,
            end=end,
            run_id=run_id,
            status="merged",
            rows_in=validation_summary["rows_in"],
            rows_merged=result.interval_rows,
            rows_quarantined=quarantine.quarantined_rows(conn, spec, start),
            labels_in=result.labels_in,
            labels_applied=result.labels_applied,
            checksum=result.checksum,
            files=stage_result.files,
            data_docs_url=validation_summary.get("data_docs_url"),
            soft_failures=validation_summary.get("soft_failures"),
        )
    share = validation_summary["bad_share"]
    if counts and share >= spec.validation.alert_bad_row_fraction:
        alerts.send(
            alerts.rows_quarantined(spec, start, end, counts, share, validation_summary.get("data_docs_url")), spec
        )
    log.info(
        "%s: merged %d rows for %s (deleted %d stale), %d/%d late labels applied, checksum %s",
        dataset,
        result.rows_merged,
        partition_name(spec, start),
        result.rows_deleted,
        result.labels_applied,
        result.labels_in,
        result.checksum,
    )
    return {**result.as_dict(), "quarantined": counts}


def finish(dataset: str, start: datetime, stage_summary: dict[str, Any]) -> str | None:
    """Archive the raw input (now safely merged) and drop the staging tables."""
    spec = load_spec(dataset)
    archived = sources.archive(spec, start)
    with db.transaction() as conn:
        warehouse.drop_staging(conn, stage_summary["rows_table"])
    return str(archived) if archived else None


def reference_profile(dataset: str) -> dict[str, tuple[float, float]] | None:
    """(Reference mean, allowed shift) of each numeric feature over the champion's training window (None: no
    champion), for the soft mean-shift expectations.

    The allowed shift is calibrated on the spread of the window's per-interval means, for a batch of a
    typical reference interval's size, at ``drift.false_alarm_rate`` split over the numeric features,
    and floored at ``validation.mean_shift_tolerance_sd`` row sds. The expectations are advisory —
    the monitor checks the same shift — so an unreachable registry skips them with a warning instead
    of failing ingest.
    """
    from nightly_ml.monitoring import calibration
    from nightly_ml.registry import access

    spec = load_spec(dataset)
    try:
        champion = access.get_champion(spec)
    except access.RegistryUnavailable as error:
        log.warning("%s: soft distribution checks skipped tonight, the registry is unreachable: %s", dataset, error)
        return None
    if champion is None or champion.reference_window is None:
        return None
    with db.transaction() as conn:
        moments = validation.reference_profile_from_warehouse(conn, spec, *champion.reference_window)
    level = calibration.null_level(spec.drift.false_alarm_rate, max(len(spec.numeric_features), 1))
    floor = spec.validation.mean_shift_tolerance_sd
    profile = {name: calibration.allowed_mean_shift(intervals, level, floor) for name, intervals in moments.items()}
    return {name: bounds for name, bounds in profile.items() if bounds is not None}
