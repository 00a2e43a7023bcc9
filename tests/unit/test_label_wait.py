"""A drift-triggered retrain waits until the labelled rows since the drift began fill its holdout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nightly_ml.monitoring import label_wait
from nightly_ml.spec import load_spec

BEGAN = datetime(2026, 3, 8, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def spec() -> Any:
    churn = load_spec("churn")
    training = churn.training.model_copy(update={"holdout_days": 2})
    drift = churn.drift.model_copy(update={"min_labelled_rows": 200, "performance_lookback_days": 7})
    return churn.model_copy(update={"training": training, "drift": drift})


def test_no_labels_since_the_drift_began_waits(spec: Any) -> None:
    wait = label_wait.judge(spec, BEGAN, BEGAN, 0, None)
    assert not wait.ready and not wait.gave_up
    assert label_wait.WAITS_FOR_LABELS in wait.reason and "2026-03-08" in wait.reason
    assert "at most until 2026-03-15" in wait.reason


def test_labels_of_fewer_days_than_the_holdout_wait(spec: Any) -> None:
    # The newest labelled row is on the drift's first day: a 2-day holdout would start the day before it.
    wait = label_wait.judge(spec, BEGAN + DAY, BEGAN, 600, BEGAN + timedelta(hours=23))
    assert not wait.ready


def test_a_holdout_of_post_drift_labels_with_enough_rows_is_ready(spec: Any) -> None:
    wait = label_wait.judge(spec, BEGAN + 2 * DAY, BEGAN, 1200, BEGAN + DAY + timedelta(hours=23))
    assert wait.ready and not wait.gave_up
    assert "fill the holdout (1,200 rows)" in wait.reason


def test_too_few_rows_wait_even_when_the_days_are_covered(spec: Any) -> None:
    wait = label_wait.judge(spec, BEGAN + 2 * DAY, BEGAN, 199, BEGAN + DAY + timedelta(hours=23))
    assert not wait.ready


def test_the_wait_ends_after_the_performance_lookback(spec: Any) -> None:
    assert not label_wait.judge(spec, BEGAN + 6 * DAY, BEGAN, 0, None).ready
    late = label_wait.judge(spec, BEGAN + 7 * DAY, BEGAN, 0, None)
    assert late.ready and late.gave_up
    assert "retraining without waiting longer" in late.reason


def test_the_newest_label_is_read_in_utc(spec: Any) -> None:
    from zoneinfo import ZoneInfo

    # 2026-03-09 23:30 UTC, seen from UTC+2 (already the 10th there): the labelled days are the 8th and 9th.
    newest = datetime(2026, 3, 10, 1, 30, tzinfo=ZoneInfo("Europe/Helsinki"))
    assert label_wait.judge(spec, BEGAN + 2 * DAY, BEGAN, 1200, newest).ready
    assert not label_wait.judge(spec, BEGAN + 2 * DAY, BEGAN, 1200, newest - DAY).ready
