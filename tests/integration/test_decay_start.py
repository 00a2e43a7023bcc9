"""Where a performance decay began (monitoring_decay_start.sql): the night retraining after it trains from."""

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


def night(n: int) -> datetime:
    return START + (n - 1) * DAY


def began(spec: Any, n: int) -> datetime | None:
    return monitor_task._decay_began(spec, night(n), night(n) + DAY)


def record(spec: Any, n: int, verdict: str, *, run_id: str = "night", current: bool = True) -> None:
    """A monitoring verdict of night ``n``: judged healthy, decayed, or not judged (too few labelled rows)."""
    labelled = 0 if verdict == UNJUDGED else spec.drift.min_labelled_rows
    with db.transaction() as conn, conn.cursor() as cur:
        if current:
            cur.execute(
                "UPDATE ops.monitoring_runs SET is_current = false WHERE dataset = %s AND interval_start = %s",
                (spec.name, night(n)),
            )
        cur.execute(
            "INSERT INTO ops.monitoring_runs (dataset, interval_start, interval_end, run_id, champion_version, "
            "reference_start, reference_end, rows, reference_rows, labelled_rows, performance_decay, "
            "should_retrain, reasons, is_current) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, 100, 1000, %s, %s, %s, %s, %s)",
            (
                spec.name,
                night(n),
                night(n) + DAY,
                f"{run_id}_{n}",
                "1" if n < 5 else "2",  # a new champion on night 5: the run of decayed nights goes on across it
                START - 10 * DAY,
                START,
                labelled,
                verdict == DECAYED,
                verdict == DECAYED,
                json.dumps([verdict]),
                current,
            ),
        )


@pytest.fixture
def spec(kit: Any, warehouse_url: str, request: pytest.FixtureRequest) -> Any:
    made = kit.make_spec("demand", f"decay_{request.node.name[-20:].lower()}")
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM ops.monitoring_runs WHERE dataset = %s", (made.name,))
    return made


def test_the_run_of_decayed_nights_begins_after_the_last_healthy_night(spec: Any) -> None:
    verdicts = [HEALTHY, HEALTHY, DECAYED, UNJUDGED, DECAYED, DECAYED, HEALTHY]
    for n, verdict in enumerate(verdicts, start=1):
        record(spec, n, verdict)
    # Night 4 could not be judged: it neither ends the run nor starts it. Night 7 comes later: not known on 6.
    assert began(spec, 6) == night(3)
    assert began(spec, 3) == night(3)
    assert began(spec, 7) is None  # judged healthy: no decay goes on


def test_a_healthy_night_ends_the_run_and_only_current_verdicts_count(spec: Any) -> None:
    for n, verdict in enumerate([DECAYED, DECAYED, HEALTHY, DECAYED, DECAYED], start=1):
        record(spec, n, verdict)
    # An earlier pass of night 3 that saw decay is history; the current verdict (healthy) ends the run.
    record(spec, 3, DECAYED, run_id="earlier", current=False)
    assert began(spec, 5) == night(4)


def test_the_run_looks_back_no_further_than_the_training_window(spec: Any) -> None:
    days = spec.training.window_days
    for n in range(1, days + 6):
        record(spec, n, DECAYED)
    # The window of a retrain after night days + 5 begins with night 6: nothing before it counts.
    assert began(spec, days + 5) == night(6)
