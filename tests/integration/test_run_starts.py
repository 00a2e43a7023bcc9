"""Where a run of nights began, read from each night's current monitoring verdict: a performance decay
(monitoring_decay_start.sql: the night a retrain after it trains from) and a drift (monitoring_drift_start.sql:
the night whose labels a drift-triggered retrain waits for)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nightly_ml import db
from nightly_ml.tasks import monitor as monitor_task

pytestmark = pytest.mark.integration

START = datetime(2025, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HEALTHY, DECAYED, UNJUDGED = "healthy", "decayed", "unjudged"
CALM, FEATURES, PREDICTIONS = "calm", "features", "predictions"


def night(n: int) -> datetime:
    return START + (n - 1) * DAY


def insert_verdict(spec: Any, n: int, run_id: str, *, current: bool = True, **columns: Any) -> None:
    """A monitoring run of night ``n`` with ``columns`` set (the rest: defaults); ``current`` makes it the
    night's current verdict, as a later run of a night does."""
    with db.transaction() as conn, conn.cursor() as cur:
        if current:
            cur.execute(
                "UPDATE ops.monitoring_runs SET is_current = false WHERE dataset = %s AND interval_start = %s",
                (spec.name, night(n)),
            )
        values = {
            "dataset": spec.name,
            "interval_start": night(n),
            "interval_end": night(n) + DAY,
            "run_id": run_id,
            "reference_start": START - 10 * DAY,
            "reference_end": START,
            "rows": 100,
            "reference_rows": 1000,
            "is_current": current,
            **columns,
        }
        cur.execute(
            f"INSERT INTO ops.monitoring_runs ({', '.join(values)}) "  # noqa: S608 - names are this test's own
            f"VALUES ({', '.join(f'%({name})s' for name in values)})",
            values,
        )


@pytest.fixture
def spec(kit: Any, warehouse_url: str, request: pytest.FixtureRequest) -> Any:
    made = kit.make_spec("demand", f"run_{request.node.name[-20:].lower()}")
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM ops.monitoring_runs WHERE dataset = %s", (made.name,))
    return made


# Performance decay ---------------------------------------------------------------------------------------


def decay_began(spec: Any, n: int) -> datetime | None:
    return monitor_task._decay_began(spec, night(n), night(n) + DAY)


def record_decay(spec: Any, n: int, verdict: str, *, run_id: str = "night", current: bool = True) -> None:
    """A monitoring verdict of night ``n``: judged healthy, decayed, or not judged (too few labelled rows)."""
    insert_verdict(
        spec,
        n,
        f"{run_id}_{n}",
        current=current,
        champion_version="1" if n < 5 else "2",  # a new champion on night 5: the decay's run goes on across it
        labelled_rows=0 if verdict == UNJUDGED else spec.drift.min_labelled_rows,
        performance_decay=verdict == DECAYED,
        should_retrain=verdict == DECAYED,
        reasons=json.dumps([verdict]),
    )


def test_the_run_of_decayed_nights_begins_after_the_last_healthy_night(spec: Any) -> None:
    verdicts = [HEALTHY, HEALTHY, DECAYED, UNJUDGED, DECAYED, DECAYED, HEALTHY]
    for n, verdict in enumerate(verdicts, start=1):
        record_decay(spec, n, verdict)
    # Night 4 could not be judged: it neither ends the run nor starts it. Night 7 comes later: not known on 6.
    assert decay_began(spec, 6) == night(3)
    assert decay_began(spec, 3) == night(3)
    assert decay_began(spec, 7) is None  # judged healthy: no decay goes on


def test_a_healthy_night_ends_the_decay_and_only_current_verdicts_count(spec: Any) -> None:
    for n, verdict in enumerate([DECAYED, DECAYED, HEALTHY, DECAYED, DECAYED], start=1):
        record_decay(spec, n, verdict)
    # An earlier pass of night 3 that saw decay is history; the current verdict (healthy) ends the run.
    record_decay(spec, 3, DECAYED, run_id="earlier", current=False)
    assert decay_began(spec, 5) == night(4)


def test_the_decay_looks_back_no_further_than_the_training_window(spec: Any) -> None:
    days = spec.training.window_days
    for n in range(1, days + 6):
        record_decay(spec, n, DECAYED)
    # The window of a retrain after night days + 5 begins with night 6: nothing before it counts.
    assert decay_began(spec, days + 5) == night(6)


# Drift -----------------------------------------------------------------------------------------------------


def drift_began(spec: Any, n: int, version: str = "1") -> tuple[datetime | None, bool]:
    return monitor_task._drift_began(spec, night(n), night(n) + DAY, version)


def record_drift(
    spec: Any, n: int, verdict: str, *, version: str = "1", action: str | None = None, run_id: str = "night"
) -> None:
    """A monitoring verdict of night ``n``: calm, drifted features, or drifted predictions only."""
    insert_verdict(
        spec,
        n,
        f"{run_id}_{verdict}_{n}",
        champion_version=version,
        drifted_features=["usage_hours"] if verdict == FEATURES else [],
        prediction_drift=verdict == PREDICTIONS,
        should_retrain=verdict != CALM,
        reasons=json.dumps([verdict]),
        action=action,
    )


def test_the_run_of_drifted_nights_begins_after_the_last_calm_night(spec: Any) -> None:
    for n, verdict in enumerate([CALM, FEATURES, CALM, FEATURES, PREDICTIONS, FEATURES], start=1):
        record_drift(spec, n, verdict)
    assert drift_began(spec, 6) == (night(4), False)  # prediction drift alone keeps the run going
    assert drift_began(spec, 2) == (night(2), False)
    assert drift_began(spec, 3) == (None, False)  # a calm night: no drift to wait for


def test_a_new_champion_starts_a_new_drift(spec: Any) -> None:
    record_drift(spec, 1, FEATURES, version="1")
    record_drift(spec, 2, FEATURES, version="1")
    record_drift(spec, 3, FEATURES, version="2")
    record_drift(spec, 4, FEATURES, version="2")
    # Version 2's reference is another window: its drift is its own, from the night it first judged.
    assert drift_began(spec, 4, version="2") == (night(3), False)


def test_an_earlier_wait_of_the_drift_is_reported_and_only_current_verdicts_count(spec: Any) -> None:
    record_drift(spec, 1, CALM)
    record_drift(spec, 2, FEATURES, action="awaiting_labels")
    record_drift(spec, 3, FEATURES, action="awaiting_labels")
    assert drift_began(spec, 2) == (night(2), False)  # the night itself is not an earlier wait
    assert drift_began(spec, 3) == (night(2), True)
    # A later pass of night 2 judged it calm: the run now starts on night 3, with no wait before it.
    record_drift(spec, 2, CALM, run_id="catch_up")
    assert drift_began(spec, 3) == (night(3), False)


def test_a_re_run_of_a_drift_night_that_waited_is_not_a_first_wait(spec: Any) -> None:
    record_drift(spec, 1, FEATURES, action="awaiting_labels")
    # A catch-up re-judges night 1: its new verdict is current, the first pass (which mailed) is history.
    record_drift(spec, 1, FEATURES, run_id="catch_up")
    assert drift_began(spec, 1) == (night(1), True)
