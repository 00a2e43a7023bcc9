"""Drift statistics and the retraining rule, on in-memory samples (no database)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics

from nightly_ml.monitoring import calibration, drift, statistics
from nightly_ml.monitoring.drift import FeatureDrift
from nightly_ml.monitoring.statistics import SampleStats
from nightly_ml.spec import DatasetSpec, DriftRules, load_spec

RULES = DriftRules()  # false-alarm rate 1%, PSI floor 0.2


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return load_spec("churn")


# --------------------------------------------------------------------------- bins and PSI


def test_reference_bin_edges_are_finite_sorted_and_unique() -> None:
    assert statistics.reference_bin_edges([3.0, 1.0, 1.0, None, float("nan"), 2.0, 3.0]) == (1.0, 2.0, 3.0)
    assert statistics.reference_bin_edges(None) == ()
    assert statistics.reference_bin_edges([None, None]) == ()


def test_bins_are_open_ended_like_width_bucket() -> None:
    edges = (1.0, 2.0, 3.0)
    # below the first edge -> 0, [e_i, e_i+1) -> i, at or above the last edge -> len(edges)
    assert statistics.bin_index([-100.0, 0.99, 1.0, 1.5, 2.0, 2.999, 3.0, 1e9], edges).tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
    ]
    assert statistics.histogram_counts([0.0, 1.0, np.nan, 5.0], edges).tolist() == [1, 1, 0, 1]
    assert statistics.histogram_counts([1.0, 2.0], ()).tolist() == [2]
    assert statistics.bin_labels(edges) == ("< 1", "[1, 2)", "[2, 3)", "≥ 3")
    assert statistics.quantile_levels(4) == [0.25, 0.5, 0.75]


def _numeric_counts(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    edges = statistics.reference_bin_edges(np.quantile(reference, statistics.quantile_levels(bins)))
    return statistics.histogram_counts(reference, edges), statistics.histogram_counts(current, edges)


def test_psi_of_identical_distributions_is_about_zero() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=40_000)
    assert statistics.psi(*_numeric_counts(reference, reference)) == pytest.approx(0.0, abs=1e-12)
    assert statistics.psi(*_numeric_counts(reference, rng.normal(size=2000))) < 0.02


def test_psi_of_shifted_distribution_is_large() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(size=40_000)
    assert statistics.psi(*_numeric_counts(reference, rng.normal(1.0, 1.0, size=2000))) > 0.5
    assert statistics.psi(*_numeric_counts(reference, rng.normal(0.0, 2.0, size=2000))) > 0.2


def test_psi_smooths_empty_bins_and_rejects_misaligned_bins() -> None:
    value = statistics.psi([100, 0, 100], [0, 100, 100])
    assert math.isfinite(value) and value > 1
    assert math.isnan(statistics.psi([0, 0], [1, 2]))
    with pytest.raises(ValueError, match="not aligned"):
        statistics.psi([1, 2], [1, 2, 3])


# --------------------------------------------------------------------------- KS


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "shift"),
    [
        pytest.param(40_000, 2000, 0.0, id="large-stationary"),
        pytest.param(40_000, 2000, 0.08, id="large-small-shift"),
        pytest.param(5000, 300, 0.3, id="medium-shift"),
        pytest.param(20_000, 20_000, 0.02, id="balanced"),
    ],
)
def test_ks_pvalue_matches_scipy_on_raw_samples(n_ref: int, n_cur: int, shift: float) -> None:
    rng = np.random.default_rng(n_ref + n_cur)
    reference, current = rng.normal(size=n_ref), rng.normal(shift, 1.0, size=n_cur)
    asymptotic = stats.ks_2samp(reference, current, method="asymp")
    ours = statistics.ks_pvalue(asymptotic.statistic, n_ref, n_cur)
    assert ours == pytest.approx(asymptotic.pvalue, rel=1e-9, abs=1e-300)
    # scipy's default ('exact' for smaller samples) agrees closely
    assert ours == pytest.approx(stats.ks_2samp(reference, current).pvalue, rel=0.05, abs=1e-300)


def test_ks_pvalue_edge_cases() -> None:
    assert math.isnan(statistics.ks_pvalue(0.3, 0, 100))
    assert math.isnan(statistics.ks_pvalue(float("nan"), 10, 10))
    assert statistics.ks_pvalue(0.0, 1000, 1000) == pytest.approx(1.0)
    assert statistics.ks_pvalue(0.5, 40_000, 2000) < 1e-100


# --------------------------------------------------------------------------- chi-square


def test_chi_square_of_identical_counts() -> None:
    counts = {"basic": 450, "standard": 350, "premium": 200}
    result = statistics.chi_square(counts, counts)
    assert result.statistic == pytest.approx(0.0)
    assert result.pvalue == pytest.approx(1.0)
    assert result.cramers_v == pytest.approx(0.0)
    assert result.unseen_categories == {}


def test_chi_square_of_different_counts_matches_scipy() -> None:
    reference = {"basic": 18_000, "standard": 14_000, "premium": 8000}
    current = {"basic": 1500, "standard": 340, "premium": 160}
    result = statistics.chi_square(reference, current)
    table = np.array([[18_000, 14_000, 8000], [1500, 340, 160]])
    expected = stats.chi2_contingency(table[:, [0, 2, 1]], correction=False)  # order does not matter
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.pvalue < 1e-100
    assert result.dof == 2
    # V on shares: independent of the 20:1 size ratio, equal to V on counts for equal sizes
    p, q = table[0] / table[0].sum(), table[1] / table[1].sum()
    equal_sizes = np.vstack([p, q]) * 10_000
    v_equal = math.sqrt(stats.chi2_contingency(equal_sizes, correction=False).statistic / equal_sizes.sum())
    assert result.cramers_v == pytest.approx(v_equal)


def test_chi_square_reports_unseen_categories_with_their_share() -> None:
    result = statistics.chi_square({"north": 500, "south": 500}, {"north": 80, "south": 100, "central": 20})
    assert result.unseen_categories == {"central": pytest.approx(0.1)}
    assert result.unseen_share == pytest.approx(0.1)
    single = statistics.chi_square({"a": 10}, {"a": 5})
    assert (single.statistic, single.pvalue) == (0.0, 1.0)


def test_categorical_feature_drift_flags_new_category() -> None:
    result = drift.categorical_feature_drift(
        "region", {"north": 5000, "south": 5000}, {"north": 450, "south": 450, "central": 100}, RULES
    )
    assert result.drifted
    assert result.unseen_categories == ("central",)
    assert result.histogram.labels == ("north", "south", "central")
    assert "unseen" in result.reason


# --------------------------------------------------------------------------- decision rule


def _null(threshold: float) -> calibration.NullThreshold:
    """A calibrated null whose threshold is ``threshold`` (draws spread below it)."""
    draws = np.linspace(threshold / 100, threshold, 100)
    return calibration.NullThreshold(threshold, 0.999, 100, 28, 100, "intervals", math.log(threshold) - 3, 1.0, draws)


@pytest.mark.parametrize(
    ("psi", "ks_statistic", "threshold", "expected"),
    [
        pytest.param(0.01, 0.02, 0.05, False, id="stable"),
        pytest.param(0.25, 0.05, 0.05, True, id="beyond-null-and-psi-floor"),
        pytest.param(0.2, 0.0, 0.05, True, id="psi-at-floor"),
        pytest.param(0.06, 0.12, 0.05, True, id="beyond-null-and-ks-floor"),
        pytest.param(0.06, 0.06, 0.05, False, id="beyond-null-but-small-effect"),
        pytest.param(0.6, 0.3, 0.9, False, id="large-but-within-sampling-noise"),
        pytest.param(float("nan"), float("nan"), 0.05, False, id="not-computable"),
    ],
)
def test_numeric_decision(psi: float, ks_statistic: float, threshold: float, expected: bool) -> None:
    drifted, reason = drift.numeric_decision(psi, ks_statistic, _null(threshold), RULES)
    assert drifted is expected
    assert reason.startswith("stable") is not expected


@pytest.mark.parametrize(
    ("psi", "cramers_v", "unseen", "threshold", "expected"),
    [
        pytest.param(0.01, 0.02, 0.0, 0.05, False, id="stable"),
        pytest.param(0.3, 0.02, 0.0, 0.05, True, id="beyond-null-and-psi-floor"),
        pytest.param(0.08, 0.15, 0.0, 0.05, True, id="beyond-null-and-v-floor"),
        pytest.param(0.08, 0.05, 0.0, 0.05, False, id="beyond-null-but-small-effect"),
        pytest.param(0.5, 0.3, 0.0, 0.9, False, id="large-but-within-sampling-noise"),
        pytest.param(0.01, 0.02, 0.05, 0.05, True, id="unseen-at-5-percent"),
        pytest.param(0.01, 0.02, 0.049, 0.05, False, id="unseen-below-5-percent"),
    ],
)
def test_categorical_decision(psi: float, cramers_v: float, unseen: float, threshold: float, expected: bool) -> None:
    drifted, _ = drift.categorical_decision(psi, cramers_v, unseen, _null(threshold), RULES)
    assert drifted is expected


def test_small_batches_are_not_tested() -> None:
    edges = (1.0, 2.0)
    result = drift.numeric_feature_drift("x", edges, [50, 50, 50], [5, 0, 0], 0.9, DriftRules(min_rows_per_test=20))
    assert not result.drifted and not result.tested and "not tested" in result.reason
    assert math.isnan(result.threshold)


def _drift(name: str, drifted: bool, *, ref_mean: float = 0.0, cur_mean: float = 0.0, sd: float = 1.0) -> FeatureDrift:
    return FeatureDrift(
        feature=name,
        kind="numeric",
        psi=0.3 if drifted else 0.01,
        drifted=drifted,
        reason="PSI 0.3 ≥ 0.2" if drifted else "stable",
        histogram=statistics.Histogram(("all",), (10,), (10,)),
        reference=SampleStats(1000, 1000, ref_mean, sd),
        current=SampleStats(100, 100, cur_mean, sd),
    )


def _prediction(psi_value: float) -> drift.PredictionDrift:
    return drift.PredictionDrift(
        psi_value, 0.2, psi_value >= 0.2, f"prediction PSI {psi_value}", statistics.Histogram((), (), ())
    )


def _performance(decayed: bool) -> drift.PerformanceCheck:
    return drift.PerformanceCheck("roc_auc", 0.7, 0.8, 500, decayed, "performance decay: ..." if decayed else "ok")


@pytest.mark.parametrize(
    ("features", "prediction", "performance", "retrain", "reason_part"),
    [
        pytest.param([_drift("a", False)], None, None, False, None, id="nothing"),
        pytest.param(
            [_drift("a", True), _drift("b", False)], None, None, True, "1 feature(s) drifted", id="one-feature"
        ),
        pytest.param([_drift("a", False)], _prediction(0.35), None, True, "prediction drift", id="prediction"),
        pytest.param([_drift("a", False)], _prediction(0.05), _performance(False), False, None, id="all-fine"),
        pytest.param([_drift("a", False)], None, _performance(True), True, "performance decay", id="decay"),
        pytest.param([_drift("a", False, cur_mean=0.6)], None, None, True, "soft expectation failed", id="mean-shift"),
        pytest.param([_drift("a", False, cur_mean=0.49)], None, None, False, None, id="mean-within-tolerance"),
    ],
)
def test_decide(
    spec: DatasetSpec,
    features: list[FeatureDrift],
    prediction: drift.PredictionDrift | None,
    performance: drift.PerformanceCheck | None,
    retrain: bool,
    reason_part: str | None,
) -> None:
    verdict = drift.decide(spec, features, prediction=prediction, performance=performance)
    assert verdict.should_retrain is retrain
    assert bool(verdict.reasons) is retrain
    if reason_part:
        assert any(reason_part in r for r in verdict.reasons), verdict.reasons


def test_decide_needs_min_drifted_features(spec: DatasetSpec) -> None:
    strict = spec.model_copy(update={"drift": spec.drift.model_copy(update={"min_drifted_features": 2})})
    assert not drift.decide(strict, [_drift("a", True), _drift("b", False)]).should_retrain
    verdict = drift.decide(strict, [_drift("a", True), _drift("b", True)])
    assert verdict.should_retrain and verdict.drifted_features == ("a", "b")


def test_no_champion_verdict() -> None:
    verdict = drift.no_champion_verdict()
    assert verdict.should_retrain
    assert verdict.reasons == ("no champion yet: bootstrap training",)


# --------------------------------------------------------------------------- performance


def test_performance_check_directions_and_minimum_rows() -> None:
    rules = DriftRules(performance_tolerance=0.05, min_labelled_rows=200)
    decayed = drift.performance_check("roc_auc", {"roc_auc": 0.70}, {"roc_auc": 0.80}, 500, rules)
    assert decayed.decayed and "performance decay" in decayed.reason
    assert not drift.performance_check("roc_auc", {"roc_auc": 0.77}, {"roc_auc": 0.80}, 500, rules).decayed
    assert not drift.performance_check("roc_auc", {"roc_auc": 0.50}, {"roc_auc": 0.80}, 199, rules).decayed
    assert not drift.performance_check("roc_auc", {"roc_auc": 0.50}, None, 5000, rules).decayed
    assert drift.performance_check(
        "rmse", {"rmse": 12.0}, {"rmse": 10.0}, 500, DriftRules(performance_tolerance=1)
    ).decayed
    assert not drift.performance_check("rmse", {"rmse": 9.0}, {"rmse": 10.0}, 500, rules).decayed


def test_live_metrics_classification_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    prob = rng.random(1000)
    labels = (rng.random(1000) < prob).astype(float)
    result = drift.live_metrics("classification", labels, prob)
    assert result["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels, prob))
    assert result["pr_auc"] == pytest.approx(metrics.average_precision_score(labels, prob))
    assert result["log_loss"] == pytest.approx(metrics.log_loss(labels, prob))
    assert result["brier"] == pytest.approx(metrics.brier_score_loss(labels, prob))
    assert result["accuracy"] == pytest.approx(metrics.accuracy_score(labels, prob >= 0.5))
    assert result["f1"] == pytest.approx(metrics.f1_score(labels, prob >= 0.5))


def test_live_metrics_not_computable_are_nan() -> None:
    one_class = drift.live_metrics("classification", [1.0, 1.0, 1.0], [0.9, 0.8, 0.3])
    assert math.isnan(one_class["roc_auc"]) and math.isnan(one_class["pr_auc"])
    assert one_class["accuracy"] == pytest.approx(2 / 3)
    assert all(math.isnan(v) for v in drift.live_metrics("classification", [], []).values())
    regression = drift.live_metrics("regression", [1.0, 2.0, 4.0], [1.0, 2.0, 3.0])
    assert regression["rmse"] == pytest.approx(math.sqrt(1 / 3))
    assert regression["mae"] == pytest.approx(1 / 3)
    assert math.isnan(drift.live_metrics("regression", [1.0], [2.0])["r2"])


# --------------------------------------------------------------------------- false alarms and detection


@dataclass(frozen=True)
class _Feature:
    kind: str  # integer | float | category
    draw: Callable[[np.random.Generator, int], np.ndarray]


# Churn-like features: skewed, discrete with heavy ties, categorical and boolean.
FEATURES: dict[str, _Feature] = {
    "tenure_months": _Feature("integer", lambda r, n: np.minimum(np.round(r.gamma(1.2, 25.0, n)), 240)),
    "monthly_charges": _Feature("float", lambda r, n: np.round(60 * np.exp(r.normal(0, 0.3, n)), 2)),
    "support_calls": _Feature("integer", lambda r, n: r.poisson(1.1, n).astype(float)),
    "usage_hours": _Feature("float", lambda r, n: np.round(100 * r.gamma(2.5, 0.4, n), 2)),
    "plan": _Feature("category", lambda r, n: r.choice(["basic", "standard", "premium"], n, p=[0.45, 0.35, 0.2])),
    "region": _Feature(
        "category", lambda r, n: r.choice(["north", "south", "east", "west"], n, p=[0.3, 0.25, 0.25, 0.2])
    ),
    "autopay": _Feature("category", lambda r, n: np.where(r.random(n) < 0.6, "true", "false")),
}


@dataclass(frozen=True)
class _Reference:
    values: np.ndarray
    edges: tuple[float, ...]
    counts: np.ndarray | Counter[str]
    stats: SampleStats


def _reference(rng: np.random.Generator, rows: int, bins: int) -> dict[str, _Reference]:
    out = {}
    for name, feature in FEATURES.items():
        values = feature.draw(rng, rows)
        if feature.kind == "category":
            out[name] = _Reference(values, (), Counter(values.tolist()), SampleStats(rows, rows))
            continue
        # the same quantile definitions as the SQL: percentile_disc (integer), percentile_cont (float)
        method = "inverted_cdf" if feature.kind == "integer" else "linear"
        edges = statistics.reference_bin_edges(np.quantile(values, statistics.quantile_levels(bins), method=method))
        stats_ = SampleStats(rows, rows, float(values.mean()), float(values.std(ddof=1)))
        out[name] = _Reference(values, edges, statistics.histogram_counts(values, edges), stats_)
    return out


def _evaluate(
    spec: DatasetSpec, reference: dict[str, _Reference], current: dict[str, np.ndarray]
) -> drift.DriftVerdict:
    results = []
    for name, ref in reference.items():
        values = current[name]
        if FEATURES[name].kind == "category":
            results.append(drift.categorical_feature_drift(name, ref.counts, Counter(values.tolist()), spec.drift))
            continue
        cur_stats = SampleStats(len(values), len(values), float(values.mean()), float(values.std(ddof=1)))
        results.append(
            drift.numeric_feature_drift(
                name,
                ref.edges,
                ref.counts,
                statistics.histogram_counts(values, ref.edges),
                stats.ks_2samp(ref.values, values).statistic,
                spec.drift,
                reference=ref.stats,
                current=cur_stats,
            )
        )
    return drift.decide(spec, results)


def test_stationary_samples_rarely_raise_false_alarms(spec: DatasetSpec) -> None:
    """200 stationary nights of 2000 rows against a 40k reference: fewer than 5% ask to retrain."""
    rng = np.random.default_rng(20240101)
    reference = _reference(rng, 40_000, spec.drift.bins)
    nights = 200
    flagged_nights, flagged_features, max_psi = 0, 0, 0.0
    for _ in range(nights):
        verdict = _evaluate(spec, reference, {name: f.draw(rng, 2000) for name, f in FEATURES.items()})
        flagged_nights += verdict.should_retrain
        flagged_features += len(verdict.drifted_features)
        max_psi = max(max_psi, *(f.psi for f in verdict.features))
    print(
        f"false alarms: {flagged_nights}/{nights} nights, {flagged_features}/{nights * len(FEATURES)} "
        f"feature tests, max PSI {max_psi:.4f}"
    )
    assert flagged_nights / nights < 0.05


@pytest.mark.parametrize("feature", ["tenure_months", "monthly_charges", "support_calls", "usage_hours"])
def test_sudden_one_sd_mean_shift_is_always_flagged(spec: DatasetSpec, feature: str) -> None:
    rng = np.random.default_rng(7)
    reference = _reference(rng, 40_000, spec.drift.bins)
    sd = reference[feature].stats.sd
    for _ in range(25):
        current = {name: f.draw(rng, 2000) for name, f in FEATURES.items()}
        current[feature] = current[feature] + sd
        verdict = _evaluate(spec, reference, current)
        assert feature in verdict.drifted_features, [f.reason for f in verdict.features if f.feature == feature]
        assert verdict.should_retrain
        assert any(s.feature == feature for s in verdict.soft_failures)


def test_plan_mix_shift_is_flagged(spec: DatasetSpec) -> None:
    rng = np.random.default_rng(11)
    reference = _reference(rng, 40_000, spec.drift.bins)
    current = {name: f.draw(rng, 2000) for name, f in FEATURES.items()}
    current["plan"] = rng.choice(["basic", "standard", "premium"], 2000, p=[0.6, 0.25, 0.15])
    verdict = _evaluate(spec, reference, current)
    assert verdict.drifted_features == ("plan",)
