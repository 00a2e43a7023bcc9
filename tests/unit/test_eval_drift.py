"""The drift evaluation (``make eval-drift``) at ``--quick`` scale: its core functions and its table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nightly_ml.etl import simulator
from nightly_ml.monitoring import statistics
from nightly_ml.spec import load_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts import eval_drift

QUICK, _ = eval_drift.parse_args(["--quick", "--datasets", "churn", "--model", "first"])


@pytest.fixture(scope="module")
def results() -> list[eval_drift.SeedResult]:
    """Three quick churn seeds: stationary and sudden covariate drift."""
    config = eval_drift.EvalConfig(**{**QUICK.__dict__, "scenarios": ("stationary", "sudden_covariate")})
    return [eval_drift.evaluate_seed("churn", seed, config) for seed in range(config.seeds)]


def summaries(results: list[eval_drift.SeedResult]) -> dict[str, eval_drift.ScenarioSummary]:
    spec = load_spec("churn")
    out = {}
    for scenario in ("stationary", "sudden_covariate"):
        summary = eval_drift.ScenarioSummary(
            "churn",
            scenario,
            QUICK.seeds,
            QUICK.drift_night,
            QUICK.nights,
            eval_drift.within_nights(spec, scenario, QUICK),
        )
        for result in results:
            summary.add(result.outcomes[scenario], result.champion)
        out[scenario] = summary
    return out


def test_quick_defaults() -> None:
    assert (QUICK.seeds, QUICK.nights, QUICK.drift_night) == (3, 12, 6)
    config, jobs = eval_drift.parse_args([])
    assert (config.seeds, config.nights, config.drift_night) == (20, 21, 10)
    assert config.datasets == ("churn", "demand") and jobs >= 1


def test_stationary_nights_raise_no_false_alarms(results: list[eval_drift.SeedResult]) -> None:
    stationary = summaries(results)["stationary"]
    assert stationary.clean_nights == QUICK.seeds * QUICK.nights
    assert stationary.false_alarm_rate <= 1 / stationary.clean_nights  # (near) zero: one flagged night at most


def test_sudden_covariate_shift_is_flagged_on_the_drift_night(results: list[eval_drift.SeedResult]) -> None:
    drifted = [r.outcomes["sudden_covariate"][QUICK.drift_night] for r in results]
    assert any(night.should_retrain and "features" in night.triggers for night in drifted)
    summary = summaries(results)["sudden_covariate"]
    assert summary.within == 1
    assert summary.detected_within >= 1 and 0 in summary.nights_to_detect


def test_nights_before_the_change_are_shared_by_every_scenario(results: list[eval_drift.SeedResult]) -> None:
    for result in results:
        before = QUICK.drift_night
        assert result.outcomes["stationary"][:before] == result.outcomes["sudden_covariate"][:before]


def test_table_renders_every_row_with_a_verdict(results: list[eval_drift.SeedResult]) -> None:
    table = eval_drift.render_table(summaries(results).values(), QUICK)
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("dataset"))
    assert "detected in window" in header and "false alarms" in header and "result" in header
    rows = [line for line in lines if line.startswith("churn ")]
    assert [row.split()[1] for row in rows] == ["stationary", "sudden_covariate"]
    assert all(row.rstrip().endswith(("PASS", "FAIL")) for row in rows)
    assert "targets: detection >= 95%" in table


def test_within_windows_follow_the_scenario() -> None:
    churn, demand = load_spec("churn"), load_spec("demand")
    config = eval_drift.EvalConfig()
    assert eval_drift.within_nights(churn, "stationary", config) is None
    assert eval_drift.within_nights(churn, "sudden_covariate", config) == 1
    assert eval_drift.within_nights(churn, "new_category", config) == 1
    assert eval_drift.within_nights(churn, "gradual_covariate", config) == config.ramp_days
    assert eval_drift.within_nights(churn, "concept", config) == churn.source.label_delay_days + 2
    assert eval_drift.within_nights(demand, "concept", config) == 2


def test_summary_counts_detection_delay_and_false_alarms() -> None:
    summary = eval_drift.ScenarioSummary("churn", "concept", 2, 3, 6, within=2)
    flags = [False, True, False, False, False, True]  # a false alarm on night 1, detection on night 5
    summary.add([eval_drift.Outcome(i, f, ("features",) if f else ()) for i, f in enumerate(flags)], "logreg")
    summary.add([eval_drift.Outcome(i, i == 3, ("performance",)) for i in range(6)], "logreg")
    assert summary.nights_to_detect == [2, 0]
    assert summary.detected_within == 1 and summary.detection_rate == pytest.approx(0.5)
    assert summary.false_alarm_nights == 1 and summary.clean_nights == 6
    assert not summary.passed


def test_in_memory_statistics_match_the_monitor_definitions() -> None:
    """Edges from reference quantiles, numpy bin counts and scipy's KS, as the SQL computes them."""
    spec = load_spec("churn")
    start = eval_drift.night_zero(eval_drift.EvalConfig(), 0)
    reference_frame = simulator.generate_batch(spec, start, start + eval_drift.DAY, rows=3000)
    current = simulator.generate_batch(spec, start + eval_drift.DAY, start + 2 * eval_drift.DAY, rows=500)
    reference = eval_drift.build_reference(spec, reference_frame)
    assert set(reference) == {f.name for f in spec.monitored_features}

    tenure = reference["tenure_months"]
    values = reference_frame["tenure_months"].to_numpy(dtype=float)
    levels = statistics.quantile_levels(spec.drift.bins)
    assert tenure.edges == statistics.reference_bin_edges(np.quantile(values, levels, method="inverted_cdf").tolist())
    assert tenure.counts.sum() == len(values)
    assert set(tenure.edges) <= set(values)  # percentile_disc picks observed values

    plan = reference["plan"]
    assert plan.counts == reference_frame["plan"].value_counts().to_dict()
    assert set(reference["autopay"].counts) == {"true", "false"}

    results = {f.feature: f for f in eval_drift.feature_drifts(spec, reference, current)}
    usage_ref = reference_frame["usage_hours"].to_numpy(dtype=float)
    usage_cur = current["usage_hours"].to_numpy(dtype=float)
    assert results["usage_hours"].ks_statistic == pytest.approx(stats.ks_2samp(usage_ref, usage_cur).statistic)
    assert results["usage_hours"].current.mean == pytest.approx(usage_cur.mean())
    assert not any(f.drifted for f in results.values())


def test_prediction_drift_needs_earlier_nights() -> None:
    spec = load_spec("churn")
    rng = np.random.default_rng(0)
    assert eval_drift.prediction_drift(spec, [], rng.random(100)) is None
    # Fewer earlier nights than the calibration needs: not tested (said so), never an i.i.d. guess.
    too_few = eval_drift.prediction_drift(spec, [rng.random(2000)], rng.random(2000) ** 4)
    assert too_few is not None and not too_few.drifted and "not tested" in too_few.reason
    earlier = [rng.random(2000) for _ in range(6)]
    same = eval_drift.prediction_drift(spec, earlier, rng.random(2000))
    shifted = eval_drift.prediction_drift(spec, earlier, rng.random(2000) ** 4)
    assert same is not None and not same.drifted
    assert shifted is not None and shifted.drifted


def test_run_spec_sets_the_scenario_and_removes_the_label_delay() -> None:
    spec = load_spec("churn")
    start = eval_drift.night_zero(eval_drift.EvalConfig(), 3)
    run = eval_drift.run_spec(spec, "concept", 3, start, 7)
    assert run.source.scenario == "concept" and run.source.drift_start == start.date()
    assert run.source.label_delay_days == 0 and run.source.seed != spec.source.seed
    batch = simulator.generate_batch(run, start, start + eval_drift.DAY, rows=50)
    assert pd.notna(batch[spec.label.name]).all()


def test_concept_drift_is_caught_by_the_performance_check_once_labels_arrive() -> None:
    """Same inputs, a new relation to the label: no feature test can see it; live performance does,
    once labels arrive (demand's labels come with the rows)."""
    quick, _ = eval_drift.parse_args(["--quick", "--datasets", "demand", "--model", "first"])
    config = eval_drift.EvalConfig(**{**quick.__dict__, "scenarios": ("concept",)})
    spec = load_spec("demand")
    for seed in range(2):
        nights = eval_drift.evaluate_seed("demand", seed, config).outcomes["concept"]
        first = next(n for n in nights if n.should_retrain)
        # within a night of the labels' arrival (a single night of drifted labels can sit at the tolerance)
        assert first.index - config.drift_night <= spec.source.label_delay_days + 1
        assert "performance" in first.triggers
        assert not any(n.should_retrain for n in nights[: config.drift_night])
