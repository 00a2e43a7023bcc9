"""Where a drift began (monitoring_drift_start.sql): the night whose labels a drift-triggered retrain waits for."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nightly_ml import db
from nightly_ml.tasks import monitor as monitor_task

pytestmark = pytest.mark.integration

START = datetime(2025, 7, 1, tzinfo=UTC)
DAY = timedelta(days=1)
CALM, FEATURES, PREDICTIONS = "calm", "features", "predictions"


def night(n: int) -> datetime:
    return START + (n - 1) * DAY


def began(spec: Any, n: int, version: str = "1") -> tuple[datetime | None, bool]:
    return monitor_task._drift_began(spec, night(n), night(n) + DAY, version)


def record(
    spec: Any,
    n: int,
    verdict: str,
    *,
    version: str = "1",
    action: str | None = None,
    current: bool = True,
    run_id: str = "night",
) -> None:
    """A monitoring verdict of night ``n``: calm, drifted features, or drifted predictions only."""
    with db.transaction() as conn, conn.cursor() as cur:
        if current:
            cur.execute(
                "UPDATE ops.monitoring_runs SET is_current = false WHERE dataset = %s AND interval_start = %s",
                (spec.name, night(n)),
            )
        cur.execute(
            "INSERT INTO ops.monitoring_runs (dataset, interval_start, interval_end, run_id, champion_version, "
            "reference_start, reference_end, rows, reference_rows, drifted_features, prediction_drift, "
            "should_retrain, reasons, action, is_current) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, 100, 1000, %s, %s, %s, %s, %s, %s)",
            (
                spec.name,
                night(n),
                night(n) + DAY,
                f"{run_id}_{verdict}_{n}",
                version,
                START - 10 * DAY,
                START,
                ["usage_hours"] if verdict == FEATURES else [],
                verdict == PREDICTIONS,
                verdict != CALM,
                json.dumps([verdict]),
                action,
                current,
            ),
        )


@pytest.fixture
def spec(kit: Any, warehouse_url: str, request: pytest.FixtureRequest) -> Any:
    made = kit.make_spec("churn", f"drift_{request.node.name[-20:].lower()}")
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM ops.monitoring_runs WHERE dataset = %s", (made.name,))
    return made


def test_the_run_of_drifted_nights_begins_after_the_last_calm_night(spec: Any) -> None:
    for n, verdict in enumerate([CALM, FEATURES, CALM, FEATURES, PREDICTIONS, FEATURES], start=1):
        record(spec, n, verdict)
    assert began(spec, 6) == (night(4), False)  # prediction drift alone keeps the run going
    assert began(spec, 2) == (night(2), False)
    assert began(spec, 3) == (None, False)  # a calm night: no drift to wait for


def test_a_new_champion_starts_a_new_run(spec: Any) -> None:
    record(spec, 1, FEATURES, version="1")
    record(spec, 2, FEATURES, version="1")
    record(spec, 3, FEATURES, version="2")
    record(spec, 4, FEATURES, version="2")
    # Version 2's reference is another window: its drift is its own, from the night it first judged.
    assert began(spec, 4, version="2") == (night(3), False)


def test_an_earlier_wait_of_the_run_is_reported_and_only_current_verdicts_count(spec: Any) -> None:
    record(spec, 1, CALM)
    record(spec, 2, FEATURES, action="awaiting_labels")
    record(spec, 3, FEATURES, action="awaiting_labels")
    assert began(spec, 2) == (night(2), False)  # the night itself is not an earlier wait
    assert began(spec, 3) == (night(2), True)
    # A later pass of night 2 judged it calm: the run now starts on night 3, with no wait before it.
    record(spec, 2, CALM, run_id="catch_up")
    assert began(spec, 3) == (night(3), False)


def test_a_re_run_of_a_night_that_waited_is_not_a_first_wait(spec: Any) -> None:
    record(spec, 1, FEATURES, action="awaiting_labels")
    # A catch-up re-judges night 1: its new verdict is current, the first pass (which mailed) is history.
    record(spec, 1, FEATURES, run_id="catch_up")
    assert began(spec, 1) == (night(1), True)
