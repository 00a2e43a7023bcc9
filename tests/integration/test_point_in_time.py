"""Catch-up and backfill are point in time, and monitoring history is kept (issue 9, items 2 and 3).

Nine daily intervals arrive one per night. Nights 1..4 have no champion; v1, trained on 1..4, is
promoted after night 4 and scores and monitors nights 5..6; v2, trained on the window up to night 6, is
promoted after it and serves nights 7..9. Then one score run and one monitor run get every interval at
once (what the scheduler does with queued Asset events after ``make run``, or a backfill): each
interval must come out exactly as on its night — same version, same verdict — with the night's result
kept as history, the catch-up's result current, and no interval scored by a model trained on it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg2 import sql

from nightly_ml import db, layout
from nightly_ml.modeling import frames, training
from nightly_ml.modeling.promotion import decide
from nightly_ml.registry import access, aliases, run_logging
from nightly_ml.spec import DatasetSpec
from nightly_ml.tasks import monitor as monitor_task, score as score_task

pytestmark = pytest.mark.integration

START = datetime(2024, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
NIGHTS = 9
FIRST_MODEL_AFTER = 4  # k: v1 is trained on intervals 1..k
SECOND_MODEL_AFTER = 6  # m: v2 is promoted after interval m
ROWS = 400
CATCH_UP_RUN = "asset_triggered__catch_up"


def interval(night: int) -> tuple[datetime, datetime]:
    """Night ``n`` (1-based) handles the interval [START + (n-1) days, START + n days)."""
    return START + (night - 1) * DAY, START + night * DAY


def night_run(night: int) -> str:
    return f"asset_triggered__night_{night}"


def record_load(spec: DatasetSpec, night: int, url: str) -> None:
    """What ingest's merge records for an interval: the audit row monitoring checks ('merged')."""
    start, end = interval(night)
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            db.load_sql("audit_upsert.sql"),
            {
                "dataset": spec.name,
                "start": start,
                "end": end,
                "run_id": f"ingest__night_{night}",
                "status": "merged",
                "rows_in": ROWS,
                "rows_merged": ROWS,
                "rows_quarantined": 0,
                "labels_in": 0,
                "labels_applied": 0,
                "checksum": None,
                "reason": None,
                "files": "[]",
                "data_docs_url": None,
                "soft_failures": "[]",
            },
        )


def train_and_promote(spec: DatasetSpec, after_night: int, url: str) -> str:
    """Train on the window ending with night ``after_night`` and make it champion, as the retrain that
    night's monitoring triggered would (the move is recorded against that interval)."""
    start, window_end = interval(after_night)
    frame = frames.load_training_frame(spec, window_end, url=url)
    result = training.run_training(spec, frame, window_end)
    record = run_logging.log_training_result(spec, result, trigger={"reason": "test"}, airflow_context={})
    # The gate is not under test here: judged against the baseline only, so the move always happens.
    decision = decide(spec.promotion, result.evaluation, None, result.baseline_evaluation)
    assert decision.promote, decision.reasons
    champion = access.get_champion(spec)
    aliases.promote(
        spec,
        record.model_version,
        decision,
        expected_champion=champion.version if champion else None,
        actor="test",
        reason=f"retrain after night {after_night}",
        url=url,
        context=aliases.DecisionContext(interval=(start, window_end)),
    )
    return record.model_version


def stored_runs(spec: DatasetSpec, url: str) -> dict[datetime, list[dict[str, Any]]]:
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT interval_start, run_id, champion_version, reference_start, reference_end, should_retrain, "
            "drifted_features, reasons, prediction_psi, is_current, action, report_path, run_report_path "
            "FROM ops.monitoring_runs WHERE dataset = %s ORDER BY interval_start, created_at",
            (spec.name,),
        )
        columns = [c.name for c in cur.description]
        found: dict[datetime, list[dict[str, Any]]] = {}
        for row in cur.fetchall():
            found.setdefault(row[0], []).append(dict(zip(columns, row, strict=True)))
        return found


def metric_rows(spec: DatasetSpec, url: str, start: datetime, run_id: str) -> list[tuple]:
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT feature, psi, drifted, reason FROM ops.drift_metrics "
            "WHERE dataset = %s AND interval_start = %s AND run_id = %s ORDER BY feature",
            (spec.name, start, run_id),
        )
        return cur.fetchall()


def predicted_versions(spec: DatasetSpec, url: str) -> dict[datetime, set[str]]:
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT DISTINCT _interval_start, model_version FROM {}").format(db.predictions_table(spec))
        )
        found: dict[datetime, set[str]] = {}
        for start, version in cur.fetchall():
            found.setdefault(start, set()).add(version)
        return found


def test_catch_up_over_every_interval_gives_each_its_nights_result(
    kit: Any, mlflow_server: str, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = kit.make_spec("churn", "churn_point_in_time")
    db.ensure_dataset_tables(spec, warehouse_url)
    for module in (score_task, monitor_task):
        monkeypatch.setattr(module, "load_spec", lambda name: spec)

    # ---- the nights, one by one
    nightly_scores: dict[int, dict[str, Any]] = {}
    nightly_monitors: dict[int, dict[str, Any]] = {}
    versions: dict[str, str] = {}
    for night in range(1, NIGHTS + 1):
        start, end = interval(night)
        kit.load_warehouse(spec, kit.labelled_batch(spec, start, end, ROWS), start, end, warehouse_url)
        record_load(spec, night, warehouse_url)
        nightly_scores[night] = score_task.score(spec.name, start, end)
        nightly_monitors[night] = monitor_task.monitor(spec.name, start, end, night_run(night))
        if night == FIRST_MODEL_AFTER:
            versions["v1"] = train_and_promote(spec, night, warehouse_url)
        elif night == SECOND_MODEL_AFTER:
            versions["v2"] = train_and_promote(spec, night, warehouse_url)

    v1, v2 = versions["v1"], versions["v2"]
    expected = {n: None if n <= FIRST_MODEL_AFTER else v1 if n <= SECOND_MODEL_AFTER else v2 for n in nightly_scores}
    assert {n: s["model_version"] for n, s in nightly_scores.items()} == expected
    for night in range(1, FIRST_MODEL_AFTER + 1):
        assert "no champion on that night" in nightly_scores[night]["skipped_reason"]
        assert nightly_monitors[night]["action"] == "retrain"  # the bootstrap: no champion yet, no pass stored
    # Today's champion v2 was trained on nights up to 6: judging those with it would be in-sample.
    v2_info = access.version_info(spec, v2)
    assert v2_info is not None and v2_info.trained_on(*interval(SECOND_MODEL_AFTER))
    assert v2_info.trained_on(*interval(FIRST_MODEL_AFTER + 1))
    first_nights = stored_runs(spec, warehouse_url)
    assert sorted(first_nights) == [interval(n)[0] for n in range(FIRST_MODEL_AFTER + 1, NIGHTS + 1)]

    # ---- the catch-up: one score run and one monitor run over every interval at once
    everything = [interval(n) for n in range(NIGHTS, 0, -1)]  # in any order: each is handled in its own
    caught_up = score_task.score_intervals(spec.name, everything)
    assert [s["interval_start"] for s in caught_up] == [interval(n)[0].isoformat() for n in range(1, NIGHTS + 1)]
    for night, result in enumerate(caught_up, start=1):
        assert result["model_version"] == expected[night], night
        if expected[night] is None:
            assert "no champion on that night" in result["skipped_reason"]
        else:
            # already scored by the version of its night: left alone, nothing re-scored
            assert result["reused"] and result["rows"] == ROWS, night
    monitor_task.monitor_intervals(spec.name, everything, CATCH_UP_RUN)

    # each interval still holds its night's predictions, and no version scored an interval it was trained on
    scored = predicted_versions(spec, warehouse_url)
    assert {n: scored.get(interval(n)[0]) for n in expected} == {
        n: None if v is None else {v} for n, v in expected.items()
    }
    for start, found in scored.items():
        (version,) = found
        info = access.version_info(spec, version)
        assert info is not None and not info.trained_on(start, start + DAY), (start, version)

    after = stored_runs(spec, warehouse_url)
    for night in range(FIRST_MODEL_AFTER + 1, NIGHTS + 1):
        start = interval(night)[0]
        rows = after[start]
        # history kept: the night's pass and the catch-up's, the newest current
        assert [r["run_id"] for r in rows] == [night_run(night), CATCH_UP_RUN], night
        assert [r["is_current"] for r in rows] == [False, True], night
        first, current = rows
        assert first == {**first_nights[start][0], "is_current": False}, night  # the night's row is unchanged
        for column in (
            "champion_version",
            "reference_start",
            "reference_end",
            "should_retrain",
            "drifted_features",
            "reasons",
            "prediction_psi",
        ):
            assert current[column] == first[column], (night, column)
        assert current["champion_version"] == expected[night]
        assert metric_rows(spec, warehouse_url, start, CATCH_UP_RUN) == metric_rows(
            spec, warehouse_url, start, night_run(night)
        )
        assert first["action"] == nightly_monitors[night]["action"]
        assert current["action"] == ("already_triggered" if first["action"] == "retrain" else first["action"])
        # each run's report is kept under its own name; the interval's report is the latest
        assert Path(first["run_report_path"]).is_file() and Path(current["run_report_path"]).is_file()
        assert first["run_report_path"] != current["run_report_path"]
        assert current["run_report_path"] == str(
            layout.drift_run_report_path(Path(current["report_path"]), CATCH_UP_RUN)
        )
        assert CATCH_UP_RUN in Path(current["report_path"]).read_text(encoding="utf-8")

    # one current row per interval: readers (history, demo, backtest) see exactly one pass per interval
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT interval_start, count(*) FROM ops.monitoring_current WHERE dataset = %s GROUP BY 1",
            (spec.name,),
        )
        assert {row[1] for row in cur.fetchall()} == {1}

    # every decision is kept per interval and per run, the bootstrap nights (no champion, no pass) included
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT interval_start, run_id, action, should_retrain, champion_version, reasons "
            "FROM ops.monitor_decisions WHERE dataset = %s ORDER BY interval_start, decided_at",
            (spec.name,),
        )
        decisions: dict[datetime, list[tuple]] = {}
        for start, *rest in cur.fetchall():
            decisions.setdefault(start, []).append(tuple(rest))
    assert sorted(decisions) == [interval(n)[0] for n in range(1, NIGHTS + 1)]
    for night in range(1, NIGHTS + 1):
        (run, action, _, version, _), (catch_up, *_) = decisions[interval(night)[0]]
        assert (run, catch_up) == (night_run(night), CATCH_UP_RUN), night
        assert action == nightly_monitors[night]["action"], night
        assert version == (None if night <= FIRST_MODEL_AFTER else expected[night]), night
    for night in range(1, FIRST_MODEL_AFTER + 1):
        _, action, should_retrain, version, reasons = decisions[interval(night)[0]][0]
        assert (action, should_retrain, version) == ("retrain", True, None) and reasons, night
