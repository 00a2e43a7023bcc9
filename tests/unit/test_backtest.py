"""The backtest's pure helpers and its files, from a hand-built summary (no database)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from nightly_ml.monitoring import backtest
from nightly_ml.monitoring.backtest import (
    BacktestSummary,
    DriftSummary,
    Event,
    IntervalResult,
    MonthResult,
    PolicyCounts,
)
from nightly_ml.monitoring.backtest_policies import FixedRetrain, retrain_due
from nightly_ml.spec import DatasetSpec, load_spec

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def spec() -> DatasetSpec:
    return load_spec("demand").model_copy(update={"timezone": "America/New_York"})


def test_retrain_due_counts_local_days(spec: DatasetSpec) -> None:
    monday = datetime(2024, 3, 4, tzinfo=NEW_YORK)
    assert retrain_due(spec, None, monday, 7)
    assert not retrain_due(spec, monday, monday + timedelta(days=6), 7)
    # across the spring DST change a local week is 167 hours: still one week
    next_monday = datetime(2024, 3, 11, tzinfo=NEW_YORK)
    assert next_monday.astimezone(UTC) - monday.astimezone(UTC) == timedelta(days=7, hours=-1)
    assert retrain_due(spec, monday.astimezone(UTC), next_monday.astimezone(UTC), 7)
    with pytest.raises(ValueError, match="at least 1"):
        retrain_due(spec, None, monday, 0)


def test_month_is_the_spec_zones_month(spec: DatasetSpec) -> None:
    assert backtest.month_of(spec, datetime(2024, 3, 1, 3, tzinfo=UTC)) == "2024-02"
    assert backtest.month_of(spec, datetime(2024, 3, 1, 6, tzinfo=UTC)) == "2024-03"


def test_finite_or_none() -> None:
    assert backtest.finite_or_none(math.nan) is None
    assert backtest.finite_or_none(float("inf")) is None
    assert backtest.finite_or_none(None) is None
    assert backtest.finite_or_none(np.float64(1.5)) == pytest.approx(1.5)


def test_primary_metric(spec: DatasetSpec) -> None:
    labels, scores = np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0])
    assert backtest.primary_metric(spec, labels, scores) == pytest.approx(math.sqrt(5 / 3))
    assert backtest.primary_metric(spec, np.array([]), np.array([])) is None
    churn = load_spec("churn")
    assert churn.promotion.primary_metric == "roc_auc"
    assert backtest.primary_metric(churn, np.array([1.0, 1.0]), np.array([0.2, 0.9])) is None  # one class
    assert backtest.primary_metric(churn, np.array([0.0, 1.0]), np.array([0.2, 0.9])) == pytest.approx(1.0)


def test_drift_summary_and_quarantine_rule(spec: DatasetSpec) -> None:
    drift = backtest.drift_summary(
        [(True, False, True), (False, True, False), (False, False, False), (True, True, True)]
    )
    assert drift == DriftSummary(
        monitored=4, drifted=3, feature_drift=2, prediction_drift=2, retrain_recommended=2, rate=0.75
    )
    assert backtest.drift_summary([]).rate is None
    share = spec.validation.alert_bad_row_fraction
    assert backtest.quarantine_alerted(spec, "merged", 1000, math.ceil(1000 * share))
    assert not backtest.quarantine_alerted(spec, "merged", 1000, 0)
    assert not backtest.quarantine_alerted(spec, "rejected", 1000, 500)  # a rejection mails as a rejection


def hand_built(spec: DatasetSpec) -> BacktestSummary:
    start = datetime(2024, 1, 1, 5, tzinfo=UTC)
    days = [start + timedelta(days=n) for n in range(3)]
    intervals = (
        IntervalResult(
            days[0], days[1], "2024-01", "merged", 10, 0, None, None, 0, {}, "no champion yet (bootstrap)", None,
        ),
        IntervalResult(
            days[1], days[2], "2024-01", "merged", 10, 10, "3", "fixed-1", 10,
            {"pipeline": 2.0, "baseline": 4.0, "fixed_cadence": None}, None, True,
        ),
        IntervalResult(
            days[2], days[2] + timedelta(days=1), "2024-01", "merged", 10, 10, "4", "fixed-1", 10,
            {"pipeline": 1.0, "baseline": 5.0, "fixed_cadence": 1.5}, None, False,
        ),
    )  # fmt: skip
    return BacktestSummary(
        dataset=spec.name,
        task=spec.task,
        metric="rmse",
        greater_is_better=False,
        timezone=spec.timezone,
        start=days[0],
        end=days[2] + timedelta(days=1),
        fixed_cadence_days=7,
        intervals=intervals,
        months=(MonthResult("2024-01", 3, 2, 20, {"pipeline": 1.6, "baseline": 4.5, "fixed_cadence": None}),),
        overall={"pipeline": 1.6, "baseline": 4.5, "fixed_cadence": None},
        compared_intervals=2,
        compared_rows=20,
        bootstrap_intervals=1,
        counts=(
            PolicyCounts("pipeline", 2, 1, 1, 1, 3),
            PolicyCounts("baseline", 0, 0, 0, 0, 0),
            PolicyCounts("fixed_cadence", 1, 1, 0, 0, 1),
        ),
        data_alerts={"rejected_loads": 0, "quarantine_alerts": 1},
        drift=DriftSummary(2, 1, 1, 0, 1, 0.5),
        events=(
            Event(days[0], "pipeline", "promote", "3", "none → 3: <b>bootstrap</b>"),
            Event(days[1], "pipeline", "champion", "3", "first scored interval of version 3"),
            Event(days[1], "pipeline", "trigger", None, "drift"),
            Event(days[1], "fixed_cadence", "retrain", "fixed-1", "200 training rows"),
        ),
        fixed_retrains=(FixedRetrain(days[1], "fixed-1", 200, "ridge", True, "200 training rows"),),
    )


def test_json_round_trip_is_exact_and_nan_free(spec: DatasetSpec) -> None:
    summary = hand_built(spec)
    text = json.dumps(backtest.summary_to_dict(summary), allow_nan=False)
    assert backtest.summary_from_dict(json.loads(text)) == summary
    with_nan = backtest.summary_to_dict(
        BacktestSummary(**{**summary.__dict__, "overall": {"pipeline": math.nan, "baseline": 1.0}})
    )
    assert with_nan["overall"] == {"pipeline": None, "baseline": 1.0}


def test_summary_text_is_short_and_compares_with_the_pipeline(spec: DatasetSpec) -> None:
    text = backtest.render_summary_text(hand_built(spec))
    lines = text.splitlines()
    assert 6 <= len(lines) <= 12
    assert "naive seasonal 4.5 (2.81x)" in text
    assert "fixed 7-day —" in text
    assert "Drift flagged on 1 of 2 monitored intervals (50.0%" in text


def test_write_report_is_self_contained_and_escaped(spec: DatasetSpec, tmp_path: Path) -> None:
    summary = hand_built(spec)
    html_path, json_path = backtest.write_report(spec, summary, tmp_path)
    # named by the range's first and last local day (5:00 UTC is local midnight in New York in January)
    assert html_path == tmp_path / "reports" / spec.name / "backtest_2024-01-01_2024-01-03.html"
    page = html_path.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2
    assert 'id="monthly"' in page and 'id="counts"' in page
    assert "<b>bootstrap</b>" not in page and "&lt;b&gt;bootstrap&lt;/b&gt;" in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere
    assert backtest.summary_from_dict(json.loads(json_path.read_text(encoding="utf-8"))) == summary
    again, _ = backtest.write_report(spec, summary, tmp_path)
    assert again.read_text(encoding="utf-8") == page  # re-rendering gives the same bytes


def test_a_trigger_on_a_decays_later_night_is_counted_as_no_mail() -> None:
    from types import SimpleNamespace

    from nightly_ml.monitoring.drift import DECAY_GOES_ON

    day = datetime(2024, 1, 1, tzinfo=UTC)
    events = [
        backtest.Event(day, "pipeline", "trigger", None, '["performance decay: live rmse 9 ..."]'),
        backtest.Event(day + timedelta(days=1), "pipeline", "trigger", None, f'["...", "{DECAY_GOES_ON} 2024-01-01"]'),
        backtest.Event(day + timedelta(days=1), "pipeline", "reject", "4", "failed on naive baseline"),
        backtest.Event(day + timedelta(days=2), "pipeline", "promote", "5", "every check passed"),
    ]
    pipeline = next(c for c in backtest._counts(events, SimpleNamespace(retrains=[]), {}) if c.policy == "pipeline")
    assert (pipeline.triggers, pipeline.retrains, pipeline.alerts) == (2, 2, 3)


def test_a_drift_that_waits_for_labels_is_counted_as_one_mail() -> None:
    from types import SimpleNamespace

    from nightly_ml.monitoring.label_wait import WAITS_FOR_LABELS

    day = datetime(2024, 1, 1, tzinfo=UTC)

    def wait(offset: int, began: str) -> backtest.Event:
        detail = f"drift: usage_hours; {WAITS_FOR_LABELS} on {began}: 0 so far"
        return backtest.Event(day + timedelta(days=offset), "pipeline", "wait", None, detail)

    # Two nights of one drift (mailed on the first), then a later drift of its own: two mails; the retrain
    # its labels allowed is one more trigger.
    events = [
        wait(0, "2024-01-01"),
        wait(1, "2024-01-01"),
        backtest.Event(day + timedelta(days=2), "pipeline", "trigger", None, "drift: usage_hours"),
        wait(9, "2024-01-10"),
    ]
    pipeline = next(c for c in backtest._counts(events, SimpleNamespace(retrains=[]), {}) if c.policy == "pipeline")
    assert (pipeline.triggers, pipeline.alerts) == (1, 3)
